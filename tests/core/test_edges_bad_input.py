"""The edges the hostile round found: YAML bombs, error lines quoting megabytes, chat templates that raise, data rows
that train on nothing, a FIFO as data, adapters that lie about their rank or their base, pickle-only models given to
the judge, and damaged discovery archives. Each is one line, a non-zero exit, nothing written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from bad_input import (
    ALIGN,
    CHATS,
    EMPTY_SAFETENSORS,
    PAIRS,
    SFT,
    TINY,
    Case,
    align_files,
    case,
    check_refused,
    discover_files,
    jsonl,
    lora_adapter,
    recipe,
    scored_archive,
    sft_files,
)

BOMB = "\n".join(
    [
        "model_name_or_path: x",
        'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
        *(f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefg", "bcdefgh", strict=True)),
    ]
)
DEEP = "model_name_or_path: " + "[" * 50_000 + "]" * 50_000 + "\n"


def pairs(**row: Any) -> str:
    """The shipped-form pairs with the first one changed."""
    first = {**PAIRS[0], **row}
    return jsonl([first, *PAIRS[1:]])


def turn(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def template_recipe(data: str, template: str) -> str:
    """A recipe on the real tiny model (a copy) whose chat template fails as it renders the data."""
    return recipe(data, model_name_or_path="{tmp}/model", chat_template=template)


def tiny_llama(tmp: Path) -> None:
    """The tiny model's tensors under a Llama config: every shape a Gemma adapter targets fits."""
    config = json.loads((tmp / "llama" / "config.json").read_text())
    config.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (tmp / "llama" / "config.json").write_text(json.dumps(config))
    lora_adapter(tmp / "adapter", base=str(tmp / "base"))


def rank_mismatch(tmp: Path) -> None:
    import torch
    from safetensors.torch import save_file

    lora_adapter(tmp / "adapter", base=str(tmp / "base"))
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    tensors = {f"{prefix}.lora_A.weight": torch.zeros(2, 64), f"{prefix}.lora_B.weight": torch.zeros(64, 3)}
    save_file(tensors, tmp / "adapter" / "adapter_model.safetensors")


JUDGE = ["eval", "judge", "--judge", "openai:j@http://127.0.0.1:9/v1", "--prompts", "{tmp}/prompts.jsonl"]
JUDGE_FILES = {"b/config.json": "{}", "b/model.safetensors": EMPTY_SAFETENSORS, "prompts.jsonl": '{"prompt": "hi"}\n'}
RESUME_FILES = {"out/discover.json": json.dumps({"recipe": "r", "proposer": "p"}), "out/.discopop-output.json": "{}"}

CASES = [
    # ---- recipes ---------------------------------------------------------------------------------------------------
    case("align-yaml-alias-bomb", ALIGN, {"recipe.yaml": BOMB}, 2, "recipe.yaml: line 3 uses the alias *a"),
    case("sft-yaml-50000-deep", SFT, {"recipe.yaml": DEEP}, 2, "recipe.yaml: line 1 nests deeper than 64 levels"),
    case(
        "align-set-yaml-alias",
        [*ALIGN, "--set", "beta=[&x 1, *x]"],
        align_files(),
        2,
        "--set beta: line 1 uses the alias *x",
    ),
    case(
        "align-error-line-quoting-1-mb",
        ALIGN,
        align_files(learning_rate="x" * 1_000_000),
        2,
        "characters cut ...]",
    ),
    case(
        "align-warmup-ratio-2",
        ALIGN,
        align_files(warmup_ratio=2),
        2,
        "'warmup_ratio' is a fraction of the training steps below 1 (e.g. 0.1), got 2",
    ),
    case(
        "sft-template-raises",
        SFT,
        {"recipe.yaml": template_recipe("chat.jsonl", "{{ raise_exception('roles must alternate') }}")}
        | {"chat.jsonl": jsonl(CHATS), "model": TINY},
        2,
        "the recipe's chat_template failed on the training data: roles must alternate (TemplateError)",
    ),
    case(
        "align-template-divides-by-zero",
        ALIGN,
        {"recipe.yaml": template_recipe("pairs.jsonl", "{{ messages | length / 0 }}")}
        | {"pairs.jsonl": jsonl(PAIRS), "model": TINY},
        2,
        "the recipe's chat_template failed on the training data: division by zero (ZeroDivisionError)",
    ),
    # ---- data rows ---------------------------------------------------------------------------------------------------
    case(
        "align-unknown-role",
        ALIGN,
        {**align_files(), "pairs.jsonl": pairs(chosen=[turn("wizard", "q0"), turn("assistant", "good")])},
        2,
        "row 1, column 'chosen' message 1 has the role 'wizard', which chat templates do not know",
    ),
    case(
        "sft-unknown-role",
        SFT,
        {**sft_files(), "chat.jsonl": jsonl([{"messages": [turn("user", "q"), turn("wizard", "a")]}, *CHATS])},
        2,
        "message 2 has the role 'wizard', which chat templates do not know (use system, user, assistant, tool)",
    ),
    case(
        "align-empty-final-answer",
        ALIGN,
        {**align_files(), "pairs.jsonl": pairs(rejected=[turn("user", "q0"), turn("assistant", " ")])},
        2,
        "row 1, column 'rejected' ends with an empty assistant message (message 2): there is no answer to learn",
    ),
    case(
        "sft-empty-final-answer",
        SFT,
        {**sft_files(), "chat.jsonl": jsonl([*CHATS, {"messages": [turn("user", "q"), turn("assistant", "")]}])},
        2,
        "row 5, column 'messages' ends with an empty assistant message",
    ),
    case(
        "align-chosen-equals-rejected",
        ALIGN,
        {**align_files(), "pairs.jsonl": pairs(rejected=PAIRS[0]["chosen"])},
        2,
        "row 1, column 'rejected' is the same as chosen: the pair prefers nothing (1 of 4 rows are bad)",
    ),
    case(
        "align-dataset-is-a-fifo",
        [*ALIGN, "--dry-run"],
        {**align_files(), "recipe.yaml": recipe("pipe.jsonl")},
        2,
        "dataset {tmp}/pipe.jsonl is not a regular file (a FIFO, socket or device)",
        build=lambda tmp: os.mkfifo(tmp / "pipe.jsonl"),
    ),
    # ---- merge -------------------------------------------------------------------------------------------------------
    case(
        "merge-lora-ranks-disagree",
        ["merge", "{tmp}/adapter", "-o", "{tmp}/out"],
        {"base": TINY},
        2,
        "its lora_A has rank 2 but its lora_B has rank 3 ((64, 3)); the adapter file is damaged",
        build=rank_mismatch,
    ),
    case(
        "merge-gemma-adapter-into-llama",
        ["merge", "{tmp}/adapter", "-o", "{tmp}/out", "--base", "{tmp}/llama"],
        {"base": TINY, "llama": TINY},
        2,
        "was trained on a gemma model (its recorded base {tmp}/base) but {tmp}/llama is a llama model",
        build=tiny_llama,
    ),
    # ---- eval judge --------------------------------------------------------------------------------------------------
    case(
        "judge-pickle-only-model",
        [*JUDGE, "--models", "{tmp}/a,{tmp}/b", "-o", "{tmp}/run"],
        {**JUDGE_FILES, "a/config.json": "{}", "a/pytorch_model.bin": b"\x80\x02}q\x00."},
        2,
        "--models: {tmp}/a has pickled weights only (pytorch_model.bin), and unpickling can run code",
    ),
    # ---- discover ----------------------------------------------------------------------------------------------------
    case(
        "discover-report-archive-is-one-json-array",
        ["discover", "report", "{tmp}/run"],
        {"run/archive.jsonl": "[" + scored_archive().strip() + "]\n"},
        2,
        "{tmp}/run/archive.jsonl line 1 holds a JSON list, not one candidate (one JSON object per line)",
    ),
    case(
        "discover-report-archive-not-utf8",
        ["discover", "report", "{tmp}/run"],
        {"run/archive.jsonl": scored_archive().encode() + b'{"id": "\xff"}\n'},
        2,
        "{tmp}/run/archive.jsonl line 2 is not UTF-8 text; restore the archive or remove that line",
    ),
    case(
        "discover-report-fitness-not-a-number",
        ["discover", "report", "{tmp}/run"],
        {"run/archive.jsonl": scored_archive() + scored_archive("high")},
        2,
        "line 2 has a fitness that is not a finite number ('high')",
    ),
    case(
        "discover-resume-archive-is-one-json-array",
        ["discover", "{tmp}/recipe.yaml", "--proposer", "dir:{tmp}/inbox", "--out", "{tmp}/out", "--resume"],
        {**discover_files(), **RESUME_FILES, "out/archive.jsonl": "[" + scored_archive().strip() + "]\n"},
        2,
        "{tmp}/out/archive.jsonl line 1 holds a JSON list, not one candidate",
    ),
]


@pytest.mark.parametrize("bad", CASES)
def test_refused(bad: Case, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_refused(bad, tmp_path, tiny_model_dir, monkeypatch)
