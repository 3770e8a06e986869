"""Bad input to `discopop discover`, `report` and `export`: one line naming the problem and the fix, exit 2, nothing
written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from discover_helpers import discover_recipe
from typer.testing import CliRunner

from discopop_cli.cli import app

runner = CliRunner()


def snapshot(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def setup(tmp_path: Path, tiny_model_dir: Path, tiny_dataset_path: Path) -> Path:
    discover_recipe(tmp_path, tiny_model_dir, tiny_dataset_path)
    (tmp_path / "no-eval").mkdir()
    discover_recipe(tmp_path / "no-eval", tiny_model_dir, tiny_dataset_path, eval_strategy="no")
    (tmp_path / "inbox").mkdir()
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "archive.jsonl").write_text(
        json.dumps({"id": "g001-x", "generation": 1, "origin": "a.py", "status": "rejected", "stage": "static"}) + "\n"
    )
    return tmp_path


RUN = ["discover", "{tmp}/recipe.yaml", "--proposer", "dir:{tmp}/inbox", "--out", "{tmp}/out"]
CASES = {
    "missing-recipe": (
        ["discover", "{tmp}/nope.yaml", "--proposer", "dir:{tmp}/inbox", "--out", "{tmp}/out"],
        "not found",
    ),
    "no-eval": (
        ["discover", "{tmp}/no-eval/recipe.yaml", "--proposer", "dir:{tmp}/inbox", "--out", "{tmp}/out"],
        "eval_strategy is 'no'; set eval_strategy",
    ),
    "unknown-proposer": ([*RUN[:3], "gpt4", *RUN[4:]], "use dir:PATH or openai:MODEL@URL"),
    "dir-missing": ([*RUN[:3], "dir:{tmp}/nowhere", *RUN[4:]], "is not a folder; create it"),
    "openai-no-url": ([*RUN[:3], "openai:gpt-4o", *RUN[4:]], "expected openai:MODEL@URL"),
    "zero-generations": ([*RUN, "--generations", "0"], "--generations 0: give at least 1"),
    "zero-train-timeout": ([*RUN, "--train-timeout", "0"], "--train-timeout 0: give a number of seconds above 0"),
    "resume-nothing": ([*RUN, "--resume"], "holds no discovery run"),
    "resume-and-force": ([*RUN, "--resume", "--force"], "contradict each other"),
    "report-missing": (["discover", "report", "{tmp}/nowhere"], "is not a folder; pass the --out folder"),
    "report-not-png": (["discover", "report", "{tmp}/done", "--plot", "{tmp}/plot.jpg"], "ending in .png"),
    "export-nothing-scored": (["discover", "export", "{tmp}/done", "--name", "mine"], "no scored candidate yet"),
    "export-bad-name": (["discover", "export", "{tmp}/done", "--name", "My Loss"], "use lower-case letters"),
    "export-taken-name": (["discover", "export", "{tmp}/done", "--name", "discopop"], "already registered"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line(setup: Path, case: str) -> None:
    args, message = CASES[case]
    before = snapshot(setup)
    result = runner.invoke(app, [a.replace("{tmp}", str(setup)) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert snapshot(setup) == before
