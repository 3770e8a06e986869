"""Training options out of their valid range: refused by recipe key, before anything loads, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_input import (
    ALIGN,
    SFT,
    Case,
    align_files,
    case,
    check_case_ids,
    check_refused,
    forbid_loading,
    sft_files,
)

from discopop_cli.core.errors import UserError
from discopop_cli.recipes.types import RANGES, check_ranges

FIX = "; fix it in the recipe (or override it with --set"

CASES = [
    case(
        "align-negative-learning-rate",
        ALIGN,
        align_files(learning_rate=-1e-5),
        2,
        f"recipe.yaml: learning_rate must be above 0, got -1e-05; the paper's recipe uses 5e-7{FIX} learning_rate=...)",
    ),
    case("align-max-length-zero", ALIGN, align_files(max_length=0), 2, f"max_length must be at least 1, got 0{FIX}"),
    case(
        "align-batch-size-zero",
        ALIGN,
        align_files(per_device_train_batch_size=0),
        2,
        "per_device_train_batch_size must be at least 1, got 0",
    ),
    case(
        "align-gradient-accumulation-zero-by-set",
        [*ALIGN, "--set", "gradient_accumulation_steps=0"],
        align_files(),
        2,
        "gradient_accumulation_steps must be at least 1, got 0",
    ),
    case(
        "align-negative-epochs", ALIGN, align_files(num_train_epochs=-1), 2, "num_train_epochs must be above 0, got -1"
    ),
    case(
        "align-max-steps-zero",
        ALIGN,
        align_files(max_steps=0),
        2,
        "max_steps must be at least 1 (or -1), got 0; -1 trains for num_train_epochs",
    ),
    case("align-ld-alpha-above-one", ALIGN, align_files(ld_alpha=1.5), 2, "ld_alpha must be in [0, 1], got 1.5"),
    case(
        "align-negative-warmup-steps", ALIGN, align_files(warmup_steps=-3), 2, "warmup_steps must be at least 0, got -3"
    ),
    case(
        "align-label-smoothing-one-half",
        ALIGN,
        align_files(label_smoothing=0.5),
        2,
        "label_smoothing must be in [0, 0.5), got 0.5",
    ),
    case(
        "align-negative-loss-weight",
        ALIGN,
        align_files(loss_type=["discopop", "sigmoid"], loss_weights=[1.0, -1.0]),
        2,
        "loss_weights must be at least 0, got [1.0, -1.0] (item -1.0)",
    ),
    case("align-adam-beta2-one", ALIGN, align_files(adam_beta2=1.0), 2, "adam_beta2 must be in [0, 1), got 1.0"),
    case(
        "align-negative-max-grad-norm",
        ALIGN,
        align_files(max_grad_norm=-1.0),
        2,
        "max_grad_norm must be at least 0, got -1.0",
    ),
    case("align-zero-logging-steps", ALIGN, align_files(logging_steps=0), 2, "logging_steps must be above 0, got 0"),
    case("sft-max-length-zero", SFT, sft_files(max_length=0), 2, "max_length must be at least 1, got 0"),
    case("sft-negative-max-steps", SFT, sft_files(max_steps=-5), 2, "max_steps must be at least 1 (or -1), got -5"),
    case(
        "sft-eval-batch-size-zero",
        SFT,
        sft_files(per_device_eval_batch_size=0),
        2,
        "per_device_eval_batch_size must be at least 1, got 0",
    ),
    case("sft-lora-rank-zero", SFT, sft_files(use_peft=True, lora_r=0), 2, "lora_r must be at least 1, got 0"),
    case("sft-lora-dropout-one", SFT, sft_files(use_peft=True, lora_dropout=1.0), 2, "lora_dropout must be in [0, 1)"),
    case(
        "sft-negative-weight-decay", SFT, sft_files(weight_decay=-0.1), 2, "weight_decay must be at least 0, got -0.1"
    ),
    case("sft-negative-seed", SFT, sft_files(seed=-1), 2, "seed must be at least 0, got -1"),
]


def test_there_are_enough_cases() -> None:
    check_case_ids(CASES, ("align", "sft"))


@pytest.mark.parametrize("bad", CASES)
def test_out_of_range(bad: Case, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_loading(monkeypatch)
    check_refused(bad, tmp_path, tiny_model_dir, monkeypatch)


def test_every_ranged_key_is_a_real_option() -> None:
    """A key misspelt in RANGES would never be checked: each one is a field of TRL's or transformers' configs."""
    import dataclasses

    from trl import DPOConfig, ModelConfig, SFTConfig

    fields = {f.name for cls in (DPOConfig, SFTConfig, ModelConfig) for f in dataclasses.fields(cls)}
    assert sorted(set(RANGES) - fields) == []


@pytest.mark.parametrize(
    ("key", "good", "bad"),
    [
        ("learning_rate", 5e-7, 0.0),
        ("max_steps", -1, -2),
        ("ld_alpha", 1.0, -0.1),
        ("adam_beta1", 0.0, 1.0),
        ("per_device_train_batch_size", 1, 0),
    ],
)
def test_range_edges(key: str, good: float, bad: float) -> None:
    check_ranges("r.yaml", {key: good})
    with pytest.raises(UserError, match=f"r.yaml: {key} must be"):
        check_ranges("r.yaml", {key: bad})
