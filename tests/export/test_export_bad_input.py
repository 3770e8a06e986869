"""Bad input to `discopop export`: refused in one line, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_input import DIR, TINY, Case, case, check_case_ids, check_refused

CASES = [
    # ---- export ------------------------------------------------------------------------------------------------
    case("export-without-gguf", ["export", "{tmp}/model"], {"model": TINY}, 2, "choose an export format: --gguf"),
    case(
        "export-unknown-quant",
        ["export", "{tmp}/model", "--gguf", "--quant", "q9_x"],
        {"model": TINY},
        2,
        "unknown --quant 'q9_x'; choose one of",
    ),
    case("export-missing-model", ["export", "{tmp}/model", "--gguf"], {}, 2, "model directory {tmp}/model does not"),
    case(
        "export-not-a-model",
        ["export", "{tmp}/model", "--gguf"],
        {"model": DIR},
        2,
        "is not a Hugging Face model directory (no config.json)",
    ),
    case(
        "export-broken-config",
        ["export", "{tmp}/model", "--gguf"],
        {"model/config.json": "{broken"},
        2,
        "config.json is not valid JSON",
    ),
    case(
        "export-tokenizer-config-not-an-object",
        ["export", "{tmp}/model", "--gguf", "--quant", "f16", "-o", "{tmp}/out/m.gguf"],
        {"model": TINY, "model/tokenizer_config.json": "[1, 2]"},
        2,
        "tokenizer_config.json holds a list, not a JSON object; restore the model's copy of it",
    ),
    case(
        "export-pickle-weights",
        ["export", "{tmp}/model", "--gguf", "--quant", "f16", "-o", "{tmp}/out/m.gguf"],
        {"model": TINY, "model/model.safetensors": None, "model/pytorch_model.bin": b"\x80\x02."},
        2,
        "has no .safetensors weights",
    ),
    case(
        "export-output-under-a-file",
        ["export", "{tmp}/model", "--gguf", "--quant", "f16", "-o", "{tmp}/afile/m.gguf"],
        {"model": TINY, "afile": "x"},
        2,
        "afile is a file",
    ),
    case(
        "export-output-not-gguf",
        ["export", "{tmp}/model", "--gguf", "--quant", "f16", "-o", "{tmp}/out/m.bin"],
        {"model": TINY},
        2,
        "neither an existing directory nor a .gguf file",
    ),
    case(
        "export-existing-output",
        ["export", "{tmp}/model", "--gguf", "--quant", "f16", "-o", "{tmp}/out/m.gguf"],
        {"model": TINY, "out/m.gguf": b"old"},
        2,
        "already exists",
    ),
    case(
        "export-system-without-template",
        ["export", "{tmp}/model", "--gguf", "--quant", "f16", "--system", "Be brief.", "-o", "{tmp}/out/m.gguf"],
        {"model": TINY, "model/chat_template.jinja": None},
        2,
        "has no chat template, so --system has no turn to go in",
    ),
]


def test_there_are_enough_cases() -> None:
    check_case_ids(CASES, ("export",))


@pytest.mark.parametrize("bad", CASES)
def test_bad_input(bad: Case, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_refused(bad, tmp_path, tiny_model_dir, monkeypatch)


def test_pre_tokenizer_families_and_an_unknown_split_rule() -> None:
    from discopop_cli.core.errors import UserError
    from discopop_cli.export import vocab

    def tokenizer_json(*rules: str) -> dict:
        splits = [{"type": "Split", "pattern": {"Regex": rule}, "behavior": "Isolated"} for rule in rules]
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}
        return {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [*splits, byte_level]}}

    assert vocab.detect_pre_tokenizer(tokenizer_json(vocab._QWEN35_SPLIT), "m") == "qwen35"
    assert vocab.detect_pre_tokenizer(tokenizer_json(*vocab._DEEPSEEK3_SPLITS), "m") == "deepseek-v3"
    assert vocab.detect_pre_tokenizer(tokenizer_json(vocab._LLAMA3_SPLIT), "m") == "llama-bpe"
    with pytest.raises(UserError) as refused:
        vocab.detect_pre_tokenizer(tokenizer_json(r"\p{L}+|\d"), "m")
    message = str(refused.value)
    assert "\n" not in message and r"(\p{L}+|\d)" in message and "not one the exporter maps" in message
