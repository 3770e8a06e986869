"""Bad input to `discopop merge`: refused in one line before anything is planned or written."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_input import MERGE_OUT, TINY, Case, case, check_case_ids, check_refused, lora_adapter

CASES = [
    # ---- merge -------------------------------------------------------------------------------------------------
    case("merge-missing-adapter", ["merge", "{tmp}/adapter", *MERGE_OUT], {}, 2, "adapter {tmp}/adapter not found"),
    case(
        "merge-no-adapter-config",
        ["merge", "{tmp}/adapter", *MERGE_OUT],
        {"adapter/notes.txt": "hi"},
        2,
        "has no adapter_config.json",
    ),
    case(
        "merge-full-model-as-adapter",
        ["merge", "{tmp}/model", *MERGE_OUT],
        {"model": TINY},
        2,
        "a full model, not a LoRA adapter",
    ),
    case(
        "merge-broken-adapter-config",
        ["merge", "{tmp}/adapter", *MERGE_OUT],
        {"adapter/adapter_config.json": "{not json", "adapter/adapter_model.safetensors": b""},
        2,
        "adapter_config.json is not valid JSON",
    ),
    case(
        "merge-pickle-adapter",
        ["merge", "{tmp}/adapter", *MERGE_OUT],
        {"adapter/adapter_config.json": '{"peft_type": "LORA"}', "adapter/adapter_model.bin": b"\x80\x02."},
        2,
        "discopop merge reads safetensors only",
    ),
    case(
        "merge-missing-base",
        ["merge", "{tmp}/adapter", *MERGE_OUT],
        {},
        2,
        "base model {tmp}/gone not found",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "gone")),
    ),
    case(
        "merge-mismatched-base",
        ["merge", "{tmp}/adapter", *MERGE_OUT],
        {"base": TINY},
        2,
        "the adapter was trained on a different base",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "base"), in_features=32),
    ),
    case(
        "merge-pickle-base",
        ["merge", "{tmp}/adapter", *MERGE_OUT],
        {"base/config.json": "{}", "base/pytorch_model.bin": b"\x80\x02."},
        2,
        "has no safetensors weights (it has pytorch_model.bin)",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "base")),
    ),
    case(
        "merge-bad-dtype",
        ["merge", "{tmp}/adapter", *MERGE_OUT, "--dtype", "int8"],
        {},
        2,
        "--dtype int8 is not one of",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "base")),
    ),
    case(
        "merge-bad-shard-size",
        ["merge", "{tmp}/adapter", *MERGE_OUT, "--max-shard-size", "lots"],
        {},
        2,
        "--max-shard-size",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "base")),
    ),
    case(
        "merge-output-under-a-file",
        ["merge", "{tmp}/adapter", "-o", "{tmp}/afile/merged"],
        {"base": TINY, "afile": "x"},
        2,
        "afile is a file",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "base")),
    ),
    case(
        "merge-existing-output",
        ["merge", "{tmp}/adapter", *MERGE_OUT],
        {"base": TINY, "out/keep.txt": "mine"},
        2,
        "already exists",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "base")),
    ),
    case(
        "merge-damaged-tokenizer-config",
        ["merge", "{tmp}/adapter", *MERGE_OUT],
        {"base": TINY, "adapter/tokenizer_config.json": '{"chat_template": '},
        2,
        "adapter/tokenizer_config.json is not valid JSON",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "base")),
    ),
    case(
        "merge-output-over-its-adapter",
        ["merge", "{tmp}/adapter", "-o", "{tmp}/adapter", "--force"],
        {"base": TINY},
        2,
        "--output {tmp}/adapter is the adapter itself",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "base")),
    ),
]


def test_there_are_enough_cases() -> None:
    check_case_ids(CASES, ("merge",))


@pytest.mark.parametrize("bad", CASES)
def test_bad_input(bad: Case, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_refused(bad, tmp_path, tiny_model_dir, monkeypatch)
