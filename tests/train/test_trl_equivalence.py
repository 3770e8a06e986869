"""The injected `discopop` loss against TRL's own `loss_type="discopop"` (DPOTrainer._compute_loss in TRL 1.16).

Two trainers on the same tiny model: TRL's DPOTrainer computing its built-in discopop, and DiscoPOPTrainer with the
registry's behind `loss_type`. Each runs its own `_compute_loss` on the same batch:

- in float64, on per-token log-probabilities handed in as the policy's output (TRL's fused LM head computes
  log-probabilities in float32 whatever the model's dtype, so a model forward cannot give float64 ones), with the
  reference log-probabilities in the batch: the loss and its gradient agree to 1e-6;
- through the float64 model's real forward (log-probabilities in float32, as in training): the loss and every
  parameter's gradient agree to 1e-6.

A loss perturbed by a hair (tau 1% off, or scaled by 1 + 1e-4) fails the same comparison.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from discopop_cli import losses
from discopop_cli.train.injection import LossPlan, PlannedLoss, plan_losses

BETA, TAU, TOLERANCE = 0.5, 0.05, 1e-6
PAIRS, LENGTH = 6, 12


def _perturbed_plans() -> list[LossPlan]:
    plans = []
    for params, scale in (({"discopop_tau": TAU * 1.01}, 1.0), ({"discopop_tau": TAU}, 1.0 + 1e-4)):

        def perturbed(pc, pr, rc, rr, *, beta, discopop_tau, scale=scale):  # noqa: ANN001, ANN202
            return scale * losses.discopop(pc, pr, rc, rr, beta=beta, discopop_tau=discopop_tau)

        plans.append(LossPlan([], [], [PlannedLoss("perturbed", 1.0, perturbed, params)]))
    return plans


@pytest.fixture(scope="module")
def trainers(tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(TRL's DPOTrainer with loss_type discopop, DiscoPOPTrainer with the registry's), on identical float64 models."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from discopop_cli.train.discopop_trainer import DiscoPOPTrainer

    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    policy = copy.deepcopy(reference)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a policy a few steps away from its reference, so the margins are not all 0
        for parameter in policy.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    data = load_dataset("json", data_files=str(tiny_dataset_path), split="train").select(range(8))
    config = DPOConfig(
        output_dir=str(tmp_path_factory.mktemp("equivalence")),
        loss_type=["discopop"],
        beta=BETA,
        discopop_tau=TAU,
        per_device_train_batch_size=8,
        max_length=96,
        use_cpu=True,
        bf16=False,
        report_to="none",
    )
    kwargs = {"args": config, "train_dataset": data, "processing_class": AutoTokenizer.from_pretrained(tiny_model_dir)}
    trl_trainer = DPOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(reference), **kwargs)
    plan = plan_losses("discopop", None, {"beta": BETA, "discopop_tau": TAU}, None)
    assert [p.name for p in plan.registry] == ["discopop"] and plan.for_trl() == (["sigmoid"], [0.0])
    ours = DiscoPOPTrainer(model=policy, ref_model=reference, loss_plan=plan, **kwargs)
    assert ours.loss_types == ["sigmoid"] and trl_trainer.loss_types == ["discopop"]
    return trl_trainer, ours


@contextlib.contextmanager
def _plan(trainer: Any, plan: LossPlan | None) -> Iterator[None]:
    saved = getattr(trainer, "loss_plan", None)
    if plan is not None:
        trainer.loss_plan = plan
    try:
        yield
    finally:
        if saved is not None:
            trainer.loss_plan = saved


def _float64_batch() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A batch of PAIRS pairs (chosen rows first), its reference log-probs, and per-token policy log-probs."""
    generator = torch.Generator().manual_seed(1)
    completion = torch.zeros(2 * PAIRS, LENGTH, dtype=torch.long)
    for row, start in enumerate(torch.randint(2, 6, (2 * PAIRS,), generator=generator).tolist()):
        completion[row, start:] = 1
    inputs = {
        "input_ids": torch.randint(0, 500, (2 * PAIRS, LENGTH), generator=generator),
        "attention_mask": torch.ones(2 * PAIRS, LENGTH, dtype=torch.long),
        "completion_mask": completion,
        "ref_chosen_logps": -torch.rand(PAIRS, generator=generator, dtype=torch.float64) * 20 - 5,
        "ref_rejected_logps": -torch.rand(PAIRS, generator=generator, dtype=torch.float64) * 20 - 5,
    }
    per_token = -torch.rand(2 * PAIRS, LENGTH - 1, generator=generator, dtype=torch.float64) * 3
    return inputs, per_token


def _on_given_logps(trainer: Any, plan: LossPlan | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The trainer's own `_compute_loss` with the policy's per-token log-probs given in float64."""
    inputs, per_token = _float64_batch()
    leaf = per_token.clone().requires_grad_()
    shift_mask = inputs["completion_mask"][:, 1:]

    def policy(**kwargs: Any) -> SimpleNamespace:  # what TRL reads from its fused-LM-head forward
        zeros = torch.zeros_like(per_token)
        return SimpleNamespace(
            log_probs=leaf * shift_mask, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool(), aux_loss=None
        )

    precomputed = trainer.precompute_ref_logps
    trainer.precompute_ref_logps = True  # the references are the batch's
    try:
        with _plan(trainer, plan):
            loss = trainer._compute_loss(policy, inputs, False)
    finally:
        trainer.precompute_ref_logps = precomputed
    (grad,) = torch.autograd.grad(loss, [leaf])
    return loss.detach(), [grad]


def _through_the_model(trainer: Any, plan: LossPlan | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """compute_loss + backward on the trainer's first batch, through its float64 model and reference."""
    torch.manual_seed(0)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.model.train()
    trainer.model.zero_grad(set_to_none=True)
    with _plan(trainer, plan):
        loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return loss.detach(), [p.grad.detach().clone() for p in trainer.model.parameters() if p.grad is not None]


def assert_same(a: tuple[torch.Tensor, list[torch.Tensor]], b: tuple[torch.Tensor, list[torch.Tensor]]) -> None:
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert abs(float(loss_a) - float(loss_b)) <= TOLERANCE, (float(loss_a), float(loss_b))
    assert len(grads_a) == len(grads_b) > 0
    worst = max(float((ga - gb).abs().max()) for ga, gb in zip(grads_a, grads_b, strict=True))
    assert worst <= TOLERANCE, f"largest gradient difference {worst:.3e}"


def test_float64_loss_and_gradient_equal_trl_builtin(trainers: Any) -> None:
    trl_trainer, ours = trainers
    theirs, mine = _on_given_logps(trl_trainer), _on_given_logps(ours)
    assert theirs[0].dtype == mine[0].dtype == torch.float64
    assert float(mine[0]) > 0 and bool(mine[1][0].any())  # a real loss with a real gradient
    assert_same(mine, theirs)


def test_through_the_model_equal_trl_builtin(trainers: Any) -> None:
    trl_trainer, ours = trainers
    theirs, mine = _through_the_model(trl_trainer), _through_the_model(ours)
    assert float(mine[0]) > 0 and any(bool(g.any()) for g in mine[1])
    assert_same(mine, theirs)


@pytest.mark.parametrize("plan", _perturbed_plans(), ids=["tau-1-percent-off", "scaled-1e-4"])
def test_a_perturbed_loss_fails_the_comparison(trainers: Any, plan: LossPlan) -> None:
    trl_trainer, ours = trainers
    with pytest.raises(AssertionError):
        assert_same(_on_given_logps(ours, plan), _on_given_logps(trl_trainer))
    with pytest.raises(AssertionError):
        assert_same(_through_the_model(ours, plan), _through_the_model(trl_trainer))
