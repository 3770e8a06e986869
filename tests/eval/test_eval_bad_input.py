"""Bad input to `discopop eval prefs` and `discopop eval tasks`: one line naming problem and fix, the exit code, nothing
written, before any weights or datasets load (see tests/bad_input.py for what each case checks)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from bad_input import (
    CHATS,
    DIR,
    PAIRS,
    PICKLED_MODEL,
    TINY,
    UNLOADABLE_MODEL,
    case,
    check_case_ids,
    check_refused,
    jsonl,
    prepare,
    recipe,
    runner,
    snapshot,
)

from discopop_cli.cli import app

PREFS = ["eval", "prefs"]
DATA = ["--data", "{tmp}/pairs.jsonl"]
PAIRS_FILE = {"pairs.jsonl": jsonl(PAIRS)}
GOOD = {"model": TINY, **PAIRS_FILE}


def other_tokenizer(tmp: Path) -> None:
    """A tiny model whose SentencePiece vocabulary was trained on other text."""
    from discopop_cli.demo.tiny import build_tiny_model

    corpus = [f"zebra {i} quokka {i * 7} narwhal axolotl pangolin" for i in range(200)]
    build_tiny_model(tmp / "other", corpus=corpus, vocab_size=300)


CASES = [
    case("prefs-missing-model", [*PREFS, "{tmp}/nope", *DATA], PAIRS_FILE, 2, "model {tmp}/nope not found"),
    case("prefs-no-config", [*PREFS, "{tmp}/empty", *DATA], {"empty": DIR, **PAIRS_FILE}, 2, "has no config.json"),
    case(
        "prefs-pickled-weights",
        [*PREFS, "{tmp}/model", *DATA],
        {**UNLOADABLE_MODEL, **PICKLED_MODEL, **PAIRS_FILE},
        2,
        "has pickled weights only (pytorch_model.bin)",
    ),
    case(
        "prefs-gguf-file",
        [*PREFS, "{tmp}/m.gguf", *DATA],
        {"m.gguf": b"GGUF", **PAIRS_FILE},
        2,
        "is a GGUF file; eval prefs reads transformers model folders",
    ),
    case(
        "prefs-missing-ref",
        [*PREFS, "{tmp}/model", "--ref", "{tmp}/nope", *DATA],
        GOOD,
        2,
        "reference model {tmp}/nope not found",
    ),
    case("prefs-no-data", [*PREFS, "{tmp}/model"], GOOD, 2, "no pairs to score; pass --data"),
    case(
        "prefs-missing-data",
        [*PREFS, "{tmp}/model", "--data", "{tmp}/nope.jsonl"],
        GOOD,
        2,
        "--data {tmp}/nope.jsonl not found",
    ),
    case(
        "prefs-empty-data", [*PREFS, "{tmp}/model", *DATA], {"model": TINY, "pairs.jsonl": ""}, 2, "is empty (no rows)"
    ),
    case(
        "prefs-not-pairs",
        [*PREFS, "{tmp}/model", "--data", "{tmp}/chat.jsonl"],
        {"model": TINY, "chat.jsonl": jsonl(CHATS)},
        2,
        "needs columns ['chosen', 'rejected']",
    ),
    case(
        "prefs-mismatched-tokenizers",
        [*PREFS, "{tmp}/model", "--ref", "{tmp}/other", *DATA],
        GOOD,
        2,
        "{tmp}/other has another tokenizer than {tmp}/model",
        build=other_tokenizer,
    ),
    case("prefs-twice", [*PREFS, "{tmp}/model", "{tmp}/model/", *DATA], GOOD, 2, "is listed twice"),
    case(
        "prefs-bad-dtype",
        [*PREFS, "{tmp}/model", *DATA, "--dtype", "float8"],
        GOOD,
        2,
        "--dtype 'float8' is not one of",
    ),
    case(
        "prefs-zero-batch",
        [*PREFS, "{tmp}/model", *DATA, "--batch-size", "0"],
        GOOD,
        2,
        "--batch-size must be at least 1",
    ),
    case("prefs-negative-beta", [*PREFS, "{tmp}/model", *DATA, "--beta", "-0.1"], GOOD, 2, "--beta must be positive"),
    case(
        "prefs-recipe-without-held-out",
        [*PREFS, "{tmp}/model", "--recipe", "{tmp}/recipe.yaml"],
        {"recipe.yaml": recipe("pairs.jsonl"), **GOOD},
        2,
        "recipe.yaml has no held-out split",
    ),
    case("tasks-no-task", ["eval", "tasks", "{tmp}/model", "--tasks", " , "], GOOD, 2, "--tasks names no task"),
    case(
        "tasks-missing-gguf",
        ["eval", "tasks", "{tmp}/m.gguf", "--tasks", "x"],
        {},
        2,
        "GGUF file {tmp}/m.gguf not found",
    ),
    case("tasks-missing-model", ["eval", "tasks", "{tmp}/nope", "--tasks", "x"], {}, 2, "model {tmp}/nope not found"),
    case(
        "tasks-zero-limit",
        ["eval", "tasks", "{tmp}/model", "--tasks", "x", "--limit", "0"],
        GOOD,
        2,
        "--limit must be at least 1",
    ),
    case(
        "tasks-include-path-not-folder",
        ["eval", "tasks", "{tmp}/model", "--tasks", "x", "--include-path", "{tmp}/pairs.jsonl"],
        GOOD,
        2,
        "--include-path {tmp}/pairs.jsonl is not a folder",
    ),
]


def test_cases_cover_both_commands() -> None:
    check_case_ids(CASES, ("prefs", "tasks"))


@pytest.mark.parametrize("bad", CASES)
def test_refused(bad, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_refused(bad, tmp_path, tiny_model_dir, monkeypatch)


def test_unknown_task_name_is_refused_with_a_suggestion(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt task: lm-eval's whole task index is read to be sure (slower than the cases above), nothing loads."""
    tasks = Path(__file__).parent / "tasks"
    tmp = tmp_path / "work"
    tmp.mkdir()
    prepare(tmp, {"model": TINY}, tiny_model_dir)
    monkeypatch.chdir(tmp)
    before = snapshot(tmp_path)
    started = time.monotonic()
    result = runner.invoke(
        app, ["eval", "tasks", str(tmp / "model"), "--tasks", "discopop_capitalz", "--include-path", str(tasks)]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert "unknown lm-eval task 'discopop_capitalz'; did you mean 'discopop_capitals'?" in result.output
    assert snapshot(tmp_path) == before
    assert time.monotonic() - started < 240
