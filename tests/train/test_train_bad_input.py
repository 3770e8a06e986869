"""Bad input to `discopop align` and `discopop sft`: refused in one line before a model or dataset loads, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_input import (
    ALIGN,
    CHATS,
    DAMAGED_MODEL,
    DIR,
    PAIRS,
    PICKLED_MODEL,
    SFT,
    TINY,
    Case,
    align_files,
    case,
    check_case_ids,
    check_refused,
    jsonl,
    recipe,
    sft_files,
)

CASES = [
    # ---- align -------------------------------------------------------------------------------------------------
    case("align-malformed-yaml", ALIGN, {"recipe.yaml": "model_name_or_path: [unclosed\n"}, 2, "invalid YAML at line"),
    case(
        "align-list-not-mapping",
        ALIGN,
        {"recipe.yaml": "- model_name_or_path: x\n- beta: 0.1\n"},
        2,
        "a recipe is a mapping of keys to values, got list",
    ),
    case(
        "align-wrong-type-learning-rate",
        ALIGN,
        align_files(learning_rate="fast"),
        2,
        "'learning_rate' must be a number, got 'fast'",
    ),
    case(
        "align-wrong-type-epochs-list",
        ALIGN,
        align_files(num_train_epochs=[1]),
        2,
        "'num_train_epochs' must be a number, got [1]",
    ),
    case(
        "align-wrong-type-in-a-list",
        ALIGN,
        align_files(loss_type=["discopop", "cell"], loss_weights=[1, "nope"]),
        2,
        "'loss_weights' must be a list of numbers, got [1, 'nope']",
    ),
    case("align-unknown-key", ALIGN, align_files(learning_rat=1e-5), 2, "did you mean 'learning_rate'"),
    case("align-unknown-loss", ALIGN, align_files(loss_type="discopopp"), 2, "unknown loss `discopopp`: did you mean"),
    case(
        "align-user-loss-missing-module",
        ALIGN,
        align_files(loss_type="no_such_module_xyz:loss"),
        2,
        "cannot import module `no_such_module_xyz`",
    ),
    case(
        "align-missing-dataset",
        ALIGN,
        {**align_files(), "pairs.jsonl": None},
        2,
        "pairs.jsonl not found",
    ),
    case("align-empty-dataset", ALIGN, {**align_files(), "pairs.jsonl": ""}, 2, "pairs.jsonl is empty"),
    case(
        "align-missing-rejected-column",
        ALIGN,
        {**align_files(), "pairs.jsonl": jsonl([{"prompt": "q", "chosen": "a"}])},
        2,
        "align needs columns ['chosen', 'rejected']",
    ),
    case(
        "align-unsupported-data-file",
        ALIGN,
        {**align_files(), "recipe.yaml": recipe("pairs.txt"), "pairs.txt": "hello\n"},
        2,
        "unsupported type",
    ),
    case(
        "align-missing-model",
        ALIGN,
        {**align_files(), "model": None},
        2,
        "model_name_or_path '{tmp}/model' is not a directory",
    ),
    case(
        "align-pickle-weights",
        ALIGN,
        {**align_files(), **PICKLED_MODEL},
        2,
        "use_safetensors: false",
    ),
    case(
        "align-damaged-weights",
        ALIGN,
        {"recipe.yaml": recipe("pairs.jsonl"), "pairs.jsonl": jsonl(PAIRS), **DAMAGED_MODEL},
        2,
        "{tmp}/model/model.safetensors declares a header of 16 bytes, but the file holds 1 after it",
    ),
    case(
        "align-output-under-a-file",
        ALIGN,
        {**align_files(output_dir="{tmp}/afile/out"), "afile": "not a folder"},
        2,
        "afile is a file",
    ),
    case(
        "align-existing-output",
        ALIGN,
        {**align_files(), "out/keep.txt": "mine"},
        2,
        "already exists",
    ),
    case("align-set-without-equals", [*ALIGN, "--set", "learning_rate"], align_files(), 2, "expected KEY=VALUE"),
    case(
        "align-set-unknown-key",
        [*ALIGN, "--set", "learnin_rate=1e-5"],
        align_files(),
        2,
        "unknown key 'learnin_rate'; did you mean 'learning_rate'",
    ),
    case(
        "align-set-token-not-echoed",
        [*ALIGN, "--set", "hub_token=[hf_SECRET"],
        align_files(),
        2,
        "--set hub_token: the value is not valid YAML",
        hidden="hf_SECRET",
    ),
    case("align-missing-recipe", ["align", "{tmp}/nowhere.yaml"], {}, 2, "nowhere.yaml not found"),
    case("align-recipe-is-a-directory", ALIGN, {"recipe.yaml": DIR}, 2, "recipe.yaml is a directory"),
    case("align-recipe-not-utf8", ALIGN, {"recipe.yaml": b"\xff\xfebeta: 1\n"}, 2, "cannot be read as UTF-8 text"),
    case("align-negative-beta", ALIGN, align_files(beta=-0.05), 2, "beta must be positive, got -0.05"),
    case(
        "align-zero-tau-in-loss-kwargs",
        [*ALIGN, "--set", "loss_kwargs.discopop_tau=0"],
        align_files(loss_type="discopop"),
        2,
        "loss_kwargs.discopop_tau must be positive, got 0",
    ),
    case(
        "align-datasets-not-a-list",
        [*ALIGN, "--set", "dataset_mixture.datasets=3"],
        align_files(),
        2,
        "dataset_mixture 'datasets' must be a list of datasets",
    ),
    # ---- sft ---------------------------------------------------------------------------------------------------
    case("sft-malformed-yaml", SFT, {"recipe.yaml": "model_name_or_path: x\n  beta: : 1\n"}, 2, "invalid YAML"),
    case("sft-scalar-not-mapping", SFT, {"recipe.yaml": "just words\n"}, 2, "a recipe is a mapping"),
    case("sft-wrong-type-bool", SFT, sft_files(packing=[True]), 2, "'packing' must be true or false, got [True]"),
    case("sft-wrong-type-int", SFT, sft_files(max_steps="ten"), 2, "'max_steps' must be an integer, got 'ten'"),
    case(
        "sft-token-wrong-type-not-echoed",
        SFT,
        sft_files(hub_token=["hf_SECRET"]),
        2,
        "'hub_token' must be a string, got a list",
        hidden="hf_SECRET",
    ),
    case("sft-unknown-key", SFT, sft_files(packign=True), 2, "unknown key 'packign'; did you mean 'packing'"),
    case("sft-missing-dataset", SFT, {**sft_files(), "chat.jsonl": None}, 2, "chat.jsonl not found"),
    case(
        "sft-empty-dataset",
        SFT,
        {**sft_files(), "recipe.yaml": recipe("chat.json"), "chat.json": "[]"},
        2,
        "chat.json is empty (no rows)",
    ),
    case(
        "sft-rows-not-objects",
        SFT,
        {**sft_files(), "chat.jsonl": "[1, 2]\n"},
        2,
        "holds lists, not JSON objects",
    ),
    case(
        "sft-missing-messages-column",
        SFT,
        {**sft_files(), "chat.jsonl": jsonl([{"question": "q", "answer": "a"}])},
        2,
        "sft needs a 'messages' column",
    ),
    case("sft-missing-model", SFT, {**sft_files(), "model": None}, 2, "is not a directory"),
    case(
        "sft-pickle-weights",
        SFT,
        {**sft_files(), **PICKLED_MODEL},
        2,
        "safetensors",
    ),
    case(
        "sft-config-without-model-type",
        SFT,
        {"recipe.yaml": recipe("chat.jsonl"), "chat.jsonl": jsonl(CHATS), "model": TINY, "model/config.json": "{}"},
        2,
        "could not read the model config of {tmp}/model: Unrecognized model",
    ),
    case(
        "sft-damaged-weights",
        SFT,
        {"recipe.yaml": recipe("chat.jsonl"), "chat.jsonl": jsonl(CHATS), **DAMAGED_MODEL},
        2,
        "{tmp}/model/model.safetensors declares a header of 16 bytes, but the file holds 1 after it",
    ),
    case(
        "sft-output-under-a-file",
        [*SFT, "--output-dir", "{tmp}/afile/out"],
        {**sft_files(), "afile": "x"},
        2,
        "afile is a file",
    ),
    case("sft-existing-output", SFT, {**sft_files(), "out/keep.txt": "mine"}, 2, "already exists"),
    case("sft-set-empty-key", [*SFT, "--set", "=3"], sft_files(), 2, "expected KEY=VALUE"),
    case(
        "sft-mixture-seed-not-an-integer",
        [*SFT, "--set", "dataset_mixture.seed=abc"],
        sft_files(),
        2,
        "dataset_mixture seed must be an integer, got 'abc'",
    ),
    case(
        "sft-chat-template-path-missing",
        SFT,
        sft_files(chat_template_path="{tmp}/nowhere.jinja"),
        2,
        "chat_template_path '{tmp}/nowhere.jinja' is not a file",
    ),
]


def test_there_are_enough_cases() -> None:
    check_case_ids(CASES, ("align", "sft"))


@pytest.mark.parametrize("bad", CASES)
def test_bad_input(bad: Case, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_refused(bad, tmp_path, tiny_model_dir, monkeypatch)
