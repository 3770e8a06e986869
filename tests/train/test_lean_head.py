"""The lean LM head (discopop_cli/train/lean_head.py) against TRL 1.16's fused LM head.

- The kernel: `LeanLogProbs` and TRL's `ChunkedLogProbFunction` (its CPU path) on the same hidden states, head and
  targets, with tiles small enough that every quantity crosses tile borders: log-probs, entropy, mean logits and
  top-1 (ties included) agree, and so do the gradients of the hidden states, the head weight and its bias, with
  and without an entropy gradient, soft-capping, a logit scale and a temperature.
- The trainer: `discopop align`'s trainer with the lean head against the same trainer with it turned off
  (DISCOPOP_SPEEDUPS_OFF=lean-head), on the tiny model: the same loss, the same gradient for every parameter,
  the same logged metrics, and the head is called on the completion positions only.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from discopop_cli.train import lean_head

TOLERANCE = 2e-5  # float32 sums over a few hundred terms, added up in another order


@pytest.fixture
def small_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lean_head, "TOKEN_TILE", 16)
    monkeypatch.setattr(lean_head, "VOCAB_TILE", 64)


def _run(function: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
         *, temperature: float, softcap: float | None, scale: float, entropy_grad: bool,
         keep: tuple[bool, ...] = ()) -> dict[str, torch.Tensor]:  # fmt: skip
    hidden = hidden.clone().requires_grad_()
    weight = weight.clone().requires_grad_()
    bias = bias.clone().requires_grad_() if bias is not None else None
    outputs = ("log_probs", "entropy", "mean_logits", "is_top1")
    log_probs, entropy, _, mean_logits, is_top1 = function.apply(
        hidden, weight, bias, targets, temperature, 32768, softcap, scale, outputs, *keep
    )
    weights = torch.linspace(0.5, 1.5, len(targets))  # a loss that weighs each token differently
    loss = (weights * log_probs).sum() + (0.3 * entropy.sum() if entropy_grad else 0.0)
    loss.backward()
    found = {"log_probs": log_probs, "entropy": entropy, "mean_logits": mean_logits, "is_top1": is_top1}
    found |= {"grad_hidden": hidden.grad, "grad_weight": weight.grad}
    if bias is not None:
        found["grad_bias"] = bias.grad
    return found


CASES = {
    "plain": dict(temperature=1.0, softcap=None, scale=1.0, bias=False, entropy_grad=False),
    "scaled-capped-tempered-biased": dict(temperature=0.7, softcap=3.0, scale=0.5, bias=True, entropy_grad=False),
    "entropy-gradient": dict(temperature=1.0, softcap=None, scale=1.0, bias=True, entropy_grad=True),
}


@pytest.mark.parametrize("keep", [False, True], ids=["recomputed", "kept"])
@pytest.mark.parametrize("case", list(CASES))
def test_kernel_equals_trl_fused_head(
    small_tiles: None, case: str, keep: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways the backward gets its logits: recomputed tile by tile, or kept from the forward."""
    from trl.kernels import ChunkedLogProbFunction

    settings = dict(CASES[case])
    generator = torch.Generator().manual_seed(0)
    tokens, width, vocab = 50, 24, 300  # 4 token tiles x 5 vocabulary tiles, the last ones partial
    if keep:
        monkeypatch.setattr(lean_head, "TOKEN_TILE", 64)  # logits are kept for one token tile only
    hidden = torch.randn(tokens, width, generator=generator)
    weight = torch.randn(vocab, width, generator=generator)
    weight[7] = weight[3]  # tied logits: rows 3 and 7 score alike, so top-1 must pick the first
    bias = torch.randn(vocab, generator=generator) if settings.pop("bias") else None
    if bias is not None:
        bias[7] = bias[3]
    targets = torch.randint(0, vocab, (tokens,), generator=generator)
    hidden[:4] = weight[3] * 0.5  # tokens whose argmax is 3 (and 7): targets 3, 7 and 200 test the tie rule
    targets[:4] = torch.tensor([3, 7, 200, 3])
    theirs = _run(ChunkedLogProbFunction, hidden, weight, bias, targets, **settings)
    ours = _run(lean_head.LeanLogProbs, hidden, weight, bias, targets, **settings, keep=(keep,))

    assert torch.equal(ours["is_top1"], theirs["is_top1"])
    assert ours["is_top1"][:4].tolist() == [True, False, False, True]
    for name in theirs:
        if name == "is_top1":
            continue
        scale = max(1.0, float(theirs[name].detach().abs().max()))
        worst = float((ours[name] - theirs[name]).detach().abs().max()) / scale
        assert worst <= TOLERANCE, f"{name}: largest difference {worst:.2e} (relative)"
        assert bool(theirs[name].any())  # a real value: the comparison can fail


def test_kernel_with_no_scored_position(small_tiles: None) -> None:
    """An all-masked micro-batch gives a zero gradient, as TRL's compact path does."""
    hidden = torch.zeros(0, 8, requires_grad=True)
    weight = torch.randn(100, 8, requires_grad=True)
    log_probs, *_ = lean_head.LeanLogProbs.apply(
        hidden, weight, None, torch.zeros(0, dtype=torch.long), 1.0, 32768, None, 1.0, ("log_probs",)
    )
    log_probs.sum().backward()
    assert log_probs.shape == (0,) and float(weight.grad.abs().sum()) == 0.0


@pytest.fixture(scope="module")
def align_trainers(tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`discopop align`'s trainer twice on the same float32 tiny model: the lean head on, and turned off."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig

    from discopop_cli.train.discopop_trainer import DiscoPOPTrainer
    from discopop_cli.train.injection import plan_losses

    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    policy = copy.deepcopy(reference)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    data = load_dataset("json", data_files=str(tiny_dataset_path), split="train").select(range(8))
    config = DPOConfig(
        output_dir=str(tmp_path_factory.mktemp("lean")),
        loss_type="discopop",
        beta=0.5,
        per_device_train_batch_size=8,
        max_length=96,
        use_cpu=True,
        bf16=False,
        report_to="none",
    )
    plan = plan_losses("discopop", None, {"beta": 0.5, "discopop_tau": 0.05}, None)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    built = {}
    with pytest.MonkeyPatch.context() as patch:
        for name, switch in (("lean", ""), ("trl", "lean-head")):
            patch.setenv("DISCOPOP_SPEEDUPS_OFF", switch)
            built[name] = DiscoPOPTrainer(
                model=copy.deepcopy(policy),
                ref_model=copy.deepcopy(reference),
                args=copy.deepcopy(config),
                train_dataset=data,
                processing_class=tokenizer,
                loss_plan=plan,
            )
    return built


def _step(trainer: Any) -> tuple[float, dict[str, torch.Tensor], dict[str, float]]:
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.model.train()
    trainer.model.zero_grad(set_to_none=True)
    trainer._metrics["train"].clear()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if k != "num_tokens"}
    return float(loss), grads, metrics


def test_trainer_equals_trl_fused_head(align_trainers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    scored: list[tuple[int, tuple[str, ...]]] = []
    apply = lean_head.LeanLogProbs.apply

    def spy(hidden: torch.Tensor, *args: Any) -> Any:
        scored.append((len(hidden), args[7]))  # `outputs`
        return apply(hidden, *args)

    monkeypatch.setattr(lean_head.LeanLogProbs, "apply", spy)

    loss, grads, metrics = _step(align_trainers["lean"])
    batch = next(iter(align_trainers["lean"].get_train_dataloader()))
    completion_tokens = int(batch["completion_mask"][:, 1:].sum())
    # The reference (log-probs only) and the policy (with the metrics TRL logs), at the completion positions only.
    assert scored == [(completion_tokens, ("log_probs",)), (completion_tokens, lean_head.TRL_POLICY_OUTPUTS)]
    assert completion_tokens < batch["completion_mask"][:, 1:].numel()

    trl_loss, trl_grads, trl_metrics = _step(align_trainers["trl"])
    assert len(scored) == 2  # the other trainer never touched the lean kernel
    assert abs(loss - trl_loss) <= 1e-6 and loss > 0
    assert grads.keys() == trl_grads.keys() and len(grads) > 0
    worst = max(float((grads[n] - trl_grads[n]).abs().max()) for n in grads)
    assert worst <= 1e-6, f"largest gradient difference {worst:.2e}"
    assert metrics.keys() == trl_metrics.keys() >= {"entropy", "logits/chosen", "mean_token_accuracy", "logps/chosen"}
    for key, value in trl_metrics.items():
        assert metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-5), key
