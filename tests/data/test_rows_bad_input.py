"""Bad rows in local data files: refused in one line naming the file, the row and the column, before anything
loads; `--skip-bad-rows` leaves them out instead, up to `--max-bad-rows`."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from bad_input import (
    ALIGN,
    CHATS,
    EMPTY_SAFETENSORS,
    PAIRS,
    SFT,
    Case,
    align_files,
    case,
    check_case_ids,
    check_refused,
    forbid_loading,
    jsonl,
    recipe,
    runner,
    sft_files,
)

from discopop_cli.cli import app
from discopop_cli.data.checks import BadRowPolicy
from discopop_cli.data.sources import load_datasets
from discopop_cli.recipes.load import load_recipe

DATA = "dataset {tmp}/pairs.jsonl"
CHAT = "dataset {tmp}/chat.jsonl"


def changed(rows: list[dict[str, Any]], index: int, **changes: Any) -> list[dict[str, Any]]:
    """`rows` with row `index` (0-based) changed; a change to `...` removes that key."""
    rows = copy.deepcopy(rows)
    for key, value in changes.items():
        if value is ...:
            rows[index].pop(key)
        else:
            rows[index][key] = value
    return rows


def pairs(*bad: tuple[int, dict[str, Any]]) -> dict[str, Any]:
    rows = PAIRS
    for index, changes in bad:
        rows = changed(rows, index, **changes)
    return {**align_files(), "pairs.jsonl": jsonl(rows)}


def chats(rows: list[dict[str, Any]], name: str = "chat.jsonl") -> dict[str, Any]:
    return {**sft_files(), "recipe.yaml": recipe(name), name: jsonl(rows)}


PROMPTED = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(4)]
TEXTS = [{"text": f"line {i}"} for i in range(4)]
COMPLETIONS = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(4)]
CSV = "prompt,chosen,rejected\nq0,good 0,bad 0\nq1,good 1,\nq2,good 2,bad 2\n"
EVAL_MIXTURE = {"datasets": [{"id": "{tmp}/pairs.jsonl"}], "eval_datasets": [{"id": "{tmp}/eval.jsonl"}]}
SKIP = [*ALIGN, "--skip-bad-rows"]

CASES = [
    # ---- align: preference pairs -------------------------------------------------------------------------------
    case(
        "align-row-chosen-empty-list",
        ALIGN,
        pairs((2, {"chosen": []})),
        2,
        f"{DATA} row 3, column 'chosen' is an empty list (no messages) (1 of 4 rows are bad); fix or remove the row",
    ),
    case(
        "align-row-chosen-a-number",
        ALIGN,
        pairs((1, {"chosen": 5})),
        2,
        f"{DATA} row 2, column 'chosen' is a number (5), not text or a conversation",
    ),
    case(
        "align-row-rejected-missing",
        ALIGN,
        pairs((3, {"rejected": ...})),
        2,
        f"{DATA} row 4, column 'rejected' is missing",
    ),
    case(
        "align-row-chosen-null",
        ALIGN,
        pairs((1, {"chosen": None})),
        2,
        f"{DATA} row 2, column 'chosen' is empty (null)",
    ),
    case(
        "align-row-message-without-role",
        ALIGN,
        pairs((1, {"rejected": [{"content": "hi"}]})),
        2,
        f"{DATA} row 2, column 'rejected' message 1 has no 'role'",
    ),
    case(
        "align-row-message-not-a-mapping",
        ALIGN,
        pairs((2, {"chosen": ["hello"]})),
        2,
        f"{DATA} row 3, column 'chosen' message 1 is a str, not a mapping",
    ),
    case(
        "align-row-text-among-conversations",
        ALIGN,
        pairs((1, {"chosen": "good", "rejected": "bad"})),
        2,
        "row 2, column 'chosen' is text, but the first good row's is a conversation (a list of messages); "
        "use one form throughout",
    ),
    case(
        "align-row-two-bad-counted",
        ALIGN,
        pairs((1, {"chosen": []}), (3, {"rejected": ""})),
        2,
        f"{DATA} row 2, column 'chosen' is an empty list (no messages) (2 of 4 rows are bad)",
    ),
    case(
        "align-row-not-json-on-line-3",
        ALIGN,
        {**align_files(), "pairs.jsonl": jsonl(PAIRS[:2]) + "{oops\n" + jsonl(PAIRS[2:])},
        2,
        f"{DATA} line 3 is not valid JSON",
    ),
    case(
        "align-row-prompt-a-number",
        ALIGN,
        {**align_files(), "pairs.jsonl": jsonl(changed(PROMPTED, 2, prompt=7))},
        2,
        f"{DATA} row 3, column 'prompt' is a number (7)",
    ),
    case(
        "align-row-csv-empty-cell",
        ALIGN,
        {**align_files(), "recipe.yaml": recipe("pairs.csv"), "pairs.csv": CSV},
        2,
        "dataset {tmp}/pairs.csv row 2 (line 3), column 'rejected' is an empty string",
    ),
    case(
        "align-row-json-array-file",
        ALIGN,
        {**align_files(), "recipe.yaml": recipe("pairs.json"), "pairs.json": json.dumps(changed(PAIRS, 1, chosen=[]))},
        2,
        "dataset {tmp}/pairs.json row 2, column 'chosen' is an empty list",
    ),
    case(
        "align-row-bad-in-eval-data",
        ALIGN,
        {
            **align_files(dataset_mixture=EVAL_MIXTURE, eval_strategy="steps"),
            "eval.jsonl": jsonl(changed(PAIRS, 0, rejected=3.5)),
        },
        2,
        "dataset {tmp}/eval.jsonl row 1, column 'rejected' is a number (3.5)",
    ),
    case(
        "align-skip-bad-rows-over-the-default-limit",
        SKIP,
        pairs((1, {"chosen": []}), (2, {"chosen": 1})),
        2,
        "(2 of 4 rows are bad), more than --max-bad-rows 5% allows (0); fix the data, or raise --max-bad-rows",
    ),
    case(
        "align-skip-bad-rows-every-row-bad",
        [*SKIP, "--max-bad-rows", "100%"],
        pairs(*[(i, {"chosen": []}) for i in range(4)]),
        2,
        "(4 of 4 rows are bad), more than --max-bad-rows 100% allows (4)",
    ),
    case(
        "align-max-bad-rows-without-skip",
        [*ALIGN, "--max-bad-rows", "3"],
        align_files(),
        2,
        "--max-bad-rows only applies with --skip-bad-rows",
    ),
    case(
        "align-max-bad-rows-malformed",
        [*SKIP, "--max-bad-rows", "lots"],
        align_files(),
        2,
        "--max-bad-rows must be a row count (e.g. 10) or a percentage (e.g. 5%), got 'lots'",
    ),
    case(
        "align-max-bad-rows-above-100-percent",
        [*SKIP, "--max-bad-rows", "150%"],
        align_files(),
        2,
        "--max-bad-rows 150% is above 100%",
    ),
    # ---- sft: conversations, prompt/completion, plain text ---------------------------------------------------
    case(
        "sft-row-messages-empty-list",
        SFT,
        chats(changed(CHATS, 1, messages=[])),
        2,
        f"{CHAT} row 2, column 'messages' is an empty list (no messages)",
    ),
    case(
        "sft-row-messages-a-string",
        SFT,
        chats(changed(CHATS, 2, messages="hello")),
        2,
        f"{CHAT} row 3, column 'messages' is text, but this column holds a conversation",
    ),
    case(
        "sft-row-message-content-a-number",
        SFT,
        chats(changed(CHATS, 0, messages=[{"role": "user", "content": 3}])),
        2,
        f"{CHAT} row 1, column 'messages' message 1 has no 'content' text (got a number)",
    ),
    case(
        "sft-row-text-empty",
        SFT,
        chats(changed(TEXTS, 1, text=" ")),
        2,
        f"{CHAT} row 2, column 'text' is an empty string",
    ),
    case(
        "sft-row-completion-missing",
        SFT,
        chats(changed(COMPLETIONS, 2, completion=...)),
        2,
        f"{CHAT} row 3, column 'completion' is missing",
    ),
    case(
        "sft-skip-bad-rows-over-a-count",
        [*SFT, "--skip-bad-rows", "--max-bad-rows", "1"],
        chats(changed(changed(CHATS, 0, messages=[]), 3, messages=None)),
        2,
        "(2 of 4 rows are bad), more than --max-bad-rows 1 allows (1)",
    ),
]


def test_there_are_enough_cases() -> None:
    check_case_ids(CASES, ("align", "sft"))


@pytest.mark.parametrize("bad", CASES)
def test_bad_rows(bad: Case, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_loading(monkeypatch)
    check_refused(bad, tmp_path, tiny_model_dir, monkeypatch)


def test_the_loading_hook_would_catch_a_load(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> None:
    """The bad-input cases above would fail, not pass, if a check ran only once something had loaded."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    forbid_loading(monkeypatch)
    for load in (AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained, datasets.load_dataset):
        with pytest.raises(AssertionError, match="was loaded"):
            load(str(tiny_model_dir))


def _write(folder: Path, files: dict[str, Any]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("{tmp}", str(folder)), encoding="utf-8")


def test_skip_bad_rows_reports_and_drops_them(tmp_path: Path) -> None:
    """2 bad rows of 4, one of another type than the rest: --dry-run names them; loading keeps the 2 good ones."""
    files = pairs((1, {"chosen": 5}), (3, {"rejected": []}))
    _write(tmp_path, {k: v for k, v in files.items() if isinstance(v, str)})
    (tmp_path / "model" / "model.safetensors").write_bytes(EMPTY_SAFETENSORS)
    args = ["align", str(tmp_path / "recipe.yaml"), "--dry-run", "--skip-bad-rows", "--max-bad-rows", "50%"]
    result = runner.invoke(app, args, env={"COLUMNS": "300"})  # the table keeps the long tmp path on one line
    flat = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert (
        f"--skip-bad-rows: leaving out 2 of 4 rows of {tmp_path}/pairs.jsonl: row 2, column 'chosen' is a number (5), "
        "not text or a conversation (a list of messages); row 4, column 'rejected' is an empty list (no messages)"
    ) in flat
    assert "pairs.jsonl [train] (2 rows, 2 bad rows left out)" in flat
    assert not (tmp_path / "out").exists()

    loaded = load_recipe(tmp_path / "recipe.yaml", "align", bad_rows=BadRowPolicy(True, "2"), quiet=True)
    train, _ = load_datasets(loaded.data, with_eval=False)
    assert sorted(row["chosen"][1]["content"] for row in train) == ["good 0", "good 2"]
    # the rows left out are not part of the resolved recipe written beside a model
    assert "drop_rows" not in yaml.safe_dump(loaded.data.as_dict())


def test_skip_bad_rows_on_csv_keeps_the_good_rows(tmp_path: Path) -> None:
    _write(tmp_path, {"recipe.yaml": recipe("pairs.csv"), "pairs.csv": CSV, "model/config.json": "{}"})
    (tmp_path / "model" / "model.safetensors").write_bytes(EMPTY_SAFETENSORS)
    loaded = load_recipe(tmp_path / "recipe.yaml", "align", bad_rows=BadRowPolicy(True, "1"), quiet=True)
    train, _ = load_datasets(loaded.data, with_eval=False)
    assert sorted(train["prompt"]) == ["q0", "q2"]


def test_good_rows_pass_and_a_count_limit_is_a_count(tmp_path: Path) -> None:
    _write(tmp_path, {**{k: v for k, v in align_files().items() if isinstance(v, str)}})
    (tmp_path / "model" / "model.safetensors").write_bytes(EMPTY_SAFETENSORS)
    load_recipe(tmp_path / "recipe.yaml", "align", quiet=True)  # the shipped-style pairs have no bad row
    assert BadRowPolicy(True, "3").allowed(1000) == 3
    assert BadRowPolicy(True, "5%").allowed(1000) == 50
