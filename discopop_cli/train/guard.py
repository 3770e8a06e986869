"""The non-finite guard: a run whose loss or gradient norm turns nan/inf stops, instead of training on garbage.

The check runs between the backward pass and the optimizer step, so the weights in memory and every checkpoint
saved so far are still the last finite ones. transformers already synchronises on each step's loss (its
`logging_nan_inf_filter`, which would otherwise hide a nan loss from the log), so the guard adds no stall of
its own beyond reading the gradient norm it has just computed.

Under fp16 mixed precision an infinite gradient norm is the grad scaler's overflow signal: the scaler skips that
optimizer step and lowers its scale, so there only the loss is checked.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from discopop_cli.core.errors import RunFailure


def guarded(trainer_cls: type) -> type:
    """A subclass of `trainer_cls` (a transformers Trainer) with the guard."""
    import torch

    class Guarded(trainer_cls):
        _nonfinite_loss: float | None = None

        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            loss = super().training_step(model, inputs, num_items_in_batch)
            if self._nonfinite_loss is None and not bool(torch.isfinite(loss).all()):
                self._nonfinite_loss = float(loss.detach().float().sum())
            return loss

        def _get_grad_norm(self, model: Any, grad_norm: Any = None) -> Any:
            grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
            if self._nonfinite_loss is not None:
                self._stop(f"the training loss is {self._nonfinite_loss}")
            if grad_norm is not None and getattr(self.accelerator, "scaler", None) is None:
                value = float(grad_norm)
                if not math.isfinite(value):
                    self._stop(f"the gradient norm is {value}")
            return grad_norm

        def _stop(self, what: str) -> None:
            from discopop_cli.train.run_directory import last_complete_checkpoint

            step = self.state.global_step + 1
            checkpoint = last_complete_checkpoint(Path(self.args.output_dir))
            where = (
                f"the last checkpoint is {checkpoint}; continue from it with --resume"
                if checkpoint is not None
                else "no checkpoint was saved (save_steps sets how often one is)"
            )
            raise RunFailure(
                f"step {step}: {what}, so training stopped before the optimizer step; {where} after lowering "
                "learning_rate (or beta), or setting max_grad_norm"
            )

    return Guarded
