"""DiscoPOPTrainer: TRL's DPOTrainer with the loss registry behind `loss_type` (see injection.py for how).

Importing this module imports TRL: `discopop align` imports it only once the recipe and data are checked.
"""

from __future__ import annotations

from typing import Any

from trl import DPOTrainer

from discopop_cli.core.errors import RunFailure, first_line
from discopop_cli.train.injection import LossPlan, _ForwardRecorder
from discopop_cli.train.shared import trainer_class
from discopop_cli.train.truncation import cut_example


class DiscoPOPTrainer(trainer_class(DPOTrainer)):
    """TRL's DPOTrainer whose `loss_type` also accepts the project's registry losses and `module:function`."""

    def __init__(
        self,
        *args: Any,
        loss_plan: LossPlan,
        max_prompt_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.loss_plan = loss_plan
        self.max_prompt_length = max_prompt_length
        self.prompts_truncated = 0
        self.answers_truncated = 0
        super().__init__(*args, **kwargs)
        self.loss_types, self.loss_weights = loss_plan.for_trl()

    # -- max_prompt_length: TRL 0.8.6's truncation, which the 2024 recipes were tuned with (truncation.py) ---------
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):  # noqa: ANN001, ANN202
        if self.max_prompt_length is None or args.max_length is None:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        max_length = args.max_length
        args.max_length = None  # keep long prompts: they are cut below instead of dropped
        try:
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        finally:
            args.max_length = max_length
        dataset = dataset.map(
            cut_example,
            fn_kwargs={
                "max_length": max_length,
                "max_prompt_length": self.max_prompt_length,
                "bos": getattr(self._tokenizer, "bos_token_id", None),
            },
            desc=f"Truncating {dataset_name} pairs as TRL 0.8.6 did",
        )
        self.prompts_truncated += sum(dataset["prompt_cut"])
        self.answers_truncated += sum(dataset["answers_cut"])
        return dataset.remove_columns(["prompt_cut", "answers_cut"])

    # -- the loss ------------------------------------------------------------------------------------------
    def _compute_loss(self, model, inputs, return_outputs):  # noqa: ANN001, ANN202
        if not self.loss_plan.registry:
            return super()._compute_loss(model, inputs, return_outputs)
        recorder = _ForwardRecorder(model)
        if not self.precompute_ref_logps:
            reference = self.ref_model if self.ref_model is not None else self.model
            ref_chosen, ref_rejected = self.compute_ref_log_probs(reference, inputs)
            inputs = {**inputs, "ref_chosen_logps": ref_chosen, "ref_rejected_logps": ref_rejected}
        result = self._trl_loss_on_batch_references(recorder, inputs, return_outputs)
        loss, outputs = result if return_outputs else (result, None)
        loss = loss + self._registry_losses(recorder, inputs)
        return (loss, outputs) if return_outputs else loss

    def _trl_loss_on_batch_references(self, recorder, inputs, return_outputs):  # noqa: ANN001, ANN202
        """TRL's own loss terms, reading the reference log-probs from the batch where they now are."""
        precomputed = self.precompute_ref_logps
        self.precompute_ref_logps = True
        try:
            return super()._compute_loss(recorder, inputs, return_outputs)
        finally:
            self.precompute_ref_logps = precomputed

    def _registry_losses(self, recorder: _ForwardRecorder, inputs: dict[str, Any]) -> Any:
        """The weighted sum of the registry losses on the policy's log-probs, each logged as `loss/NAME`."""
        seq_len = inputs["completion_mask"].size(1) - 1
        policy_logps = recorder.outputs.log_probs[:, -seq_len:].sum(dim=1)
        policy_chosen, policy_rejected = policy_logps.chunk(2, dim=0)
        ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        mode = "train" if self.model.training else "eval"
        total = 0.0
        for planned in self.loss_plan.registry:
            try:
                per_pair = planned.fn(
                    policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=self.beta, **planned.params
                )
            except Exception as exc:  # the user's code: one line naming it, the traceback under --debug
                raise RunFailure(
                    f"loss `{planned.name}` raised {type(exc).__name__}: {first_line(exc)} at step "
                    f"{self.state.global_step + 1} (it passed the check on a test batch before training); "
                    "fix the function (--debug shows the traceback)"
                ) from exc
            term = per_pair.mean()
            total = total + planned.weight * term  # promotes to float32: a float16 loss would overflow first
            gathered = self.accelerator.gather_for_metrics(term.detach().reshape(1))
            self._metrics[mode][f"loss/{planned.name}"].append(gathered.float().mean().item())
        return total
