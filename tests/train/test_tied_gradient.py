"""The tied-gradient lever (lean_head.accumulate_tied_gradient, speed.LEVERS): an LM head that is also the input
embedding (Gemma) gets its two gradients added into `.grad` in place.

- The kernel: over two micro-batches (gradient accumulation) the backward builds one [vocabulary x hidden] buffer
  instead of three per micro-batch (the head's, the embedding's and their sum), and `.grad` is the same.
- The trainer: `discopop sft`'s trainer on the tiny (tied) Gemma, a full fine-tune with gradient accumulation,
  logs the same losses and gradient norms with the lever as with DISCOPOP_SPEEDUPS_OFF=tied-gradient; the lever is
  on only where it applies (not under LoRA, not with the lean head off).
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from discopop_cli.train import lean_head

VOCAB, WIDTH = 500, 16


class NewFullSizeBuffers(TorchDispatchMode):
    """Counts the ops whose output is a new [vocabulary x hidden] buffer (not one of their inputs' storage)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        given = [*args, *(kwargs or {}).values()]  # `out=` included
        inputs = {
            a.untyped_storage().data_ptr() for a in given if isinstance(a, torch.Tensor) and a.layout == torch.strided
        }
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if (isinstance(tensor, torch.Tensor) and tensor.layout == torch.strided
                    and tensor.numel() == VOCAB * WIDTH and tensor.untyped_storage().data_ptr() not in inputs):  # fmt: skip
                self.ops.append(str(func))
        return out


def _two_micro_batches(in_place: bool) -> tuple[torch.Tensor, list[str]]:
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(VOCAB, WIDTH)
    head = torch.nn.Linear(WIDTH, VOCAB, bias=False)
    head.weight = embedding.weight  # tied, as Gemma's

    class Model(torch.nn.Module):
        def get_input_embeddings(self) -> torch.nn.Module:
            return embedding

        def get_output_embeddings(self) -> torch.nn.Module:
            return head

    if in_place:
        assert lean_head.accumulate_tied_gradient(Model()) is True
    counted = NewFullSizeBuffers()
    generator = torch.Generator().manual_seed(1)
    for _ in range(2):
        ids = torch.randint(0, VOCAB, (3, 10), generator=generator)
        targets = torch.randint(0, VOCAB, (30,), generator=generator)
        with lean_head.head_gradient_into_grad() if in_place else contextlib.nullcontext():
            hidden = embedding(ids).reshape(-1, WIDTH) * 1.5
            log_probs, *_ = lean_head.LeanLogProbs.apply(
                hidden, head.weight, None, targets, 1.0, 32768, None, 1.0, ("log_probs",), True
            )
        with counted:
            (-log_probs.mean()).backward()
    return embedding.weight.grad.clone(), counted.ops


def test_tied_gradient_is_added_in_place() -> None:
    plain, plain_ops = _two_micro_batches(in_place=False)
    in_place, in_place_ops = _two_micro_batches(in_place=True)
    # Autograd's way: the head's gradient, the embedding's dense one and their sum, in each micro-batch.
    assert len(plain_ops) >= 6, plain_ops
    # In place: the head writes the first micro-batch's `.grad`, and everything after is added into it.
    assert in_place_ops == ["aten.empty.memory_format"]
    assert not in_place.is_sparse and in_place.shape == (VOCAB, WIDTH)
    assert float((in_place - plain).abs().max()) <= 1e-6 and float(plain.abs().sum()) > 0


def test_an_untied_or_frozen_embedding_is_left_alone() -> None:
    embedding, head = torch.nn.Embedding(VOCAB, WIDTH), torch.nn.Linear(WIDTH, VOCAB, bias=False)

    class Model(torch.nn.Module):
        def get_input_embeddings(self) -> torch.nn.Module:
            return embedding

        def get_output_embeddings(self) -> torch.nn.Module:
            return head

    assert lean_head.accumulate_tied_gradient(Model()) is False  # untied: a sparse .grad would reach AdamW
    head.weight = embedding.weight
    embedding.weight.requires_grad_(False)
    assert lean_head.accumulate_tied_gradient(Model()) is False  # frozen (LoRA)
    assert embedding.sparse is False


@pytest.fixture(scope="module")
def sft_trainers(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`discopop sft`'s trainer on the tiny Gemma, a full fine-tune, built with the lever on and turned off."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from discopop_cli.train.shared import trainer_class

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [
        {"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                      {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]}
        for i in range(16)
    ]  # fmt: skip
    built = {}
    with pytest.MonkeyPatch.context() as patch:
        for name, switch in (("on", ""), ("off", "tied-gradient"), ("no-lean-head", "lean-head")):
            patch.setenv("DISCOPOP_SPEEDUPS_OFF", switch)
            config = SFTConfig(
                output_dir=str(tmp_path_factory.mktemp(f"tied-{name}")), use_cpu=True, bf16=False, report_to="none",
                per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=2, learning_rate=1e-3,
                logging_steps=1, save_strategy="no", activation_checkpointing=False, seed=0, max_grad_norm=1e9,
            )  # fmt: skip
            built[name] = trainer_class(SFTTrainer)(
                model=copy.deepcopy(model), args=config, train_dataset=Dataset.from_list(rows),
                processing_class=tokenizer,
            )  # fmt: skip
    return built


def test_sft_losses_and_gradients_with_and_without_the_lever(sft_trainers: dict[str, Any]) -> None:
    on, off = sft_trainers["on"], sft_trainers["off"]
    assert on.tied_gradient_in_place is True and on.model.get_input_embeddings().sparse is True
    assert off.tied_gradient_in_place is False and off.model.get_input_embeddings().sparse is False
    assert sft_trainers["no-lean-head"].tied_gradient_in_place is False  # the head's gradient is TRL's then
    logged = {}
    for name in ("on", "off"):
        sft_trainers[name].train()
        history = sft_trainers[name].state.log_history
        logged[name] = [(entry["loss"], entry["grad_norm"]) for entry in history if "loss" in entry]
    assert len(logged["on"]) == len(logged["off"]) == 2
    for (loss, norm), (loss_off, norm_off) in zip(logged["on"], logged["off"], strict=True):
        assert loss == pytest.approx(loss_off, abs=1e-5) and norm == pytest.approx(norm_off, rel=1e-5)
    assert logged["on"][0][0] != logged["on"][1][0]  # it trained
    weight_on = on.model.get_input_embeddings().weight
    weight_off = off.model.get_input_embeddings().weight
    assert float((weight_on - weight_off).abs().max()) <= 1e-5
