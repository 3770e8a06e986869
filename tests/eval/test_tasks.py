"""`discopop eval tasks`: a shipped local lm-eval task, offline, on the tiny model; the score file and the card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from discopop_cli.cli import app

runner = CliRunner()
TASKS = Path(__file__).parent / "tasks"
ROWS = 10


def test_local_task_offline_writes_the_score_file(tiny_model_dir: Path, tmp_path: Path, no_network: None) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "README.md").write_text("---\nlicense: apache-2.0\n---\n\n# model\n\nEarlier text.\n", encoding="utf-8")
    args = ["eval", "tasks", str(model), "--tasks", "discopop_capitals", "--include-path", str(TASKS)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)["tasks"]["discopop_capitals"]
    acc = printed["metrics"]["acc"]
    assert printed["samples"] == ROWS
    assert acc * ROWS == pytest.approx(round(acc * ROWS))  # a share of the 10 questions

    saved = json.loads((model / "eval_results.json").read_text(encoding="utf-8"))
    [entry] = [r for r in saved["results"] if r["kind"] == "tasks"]
    assert entry["task"] == "discopop_capitals"
    assert entry["metrics"]["acc"] == acc
    front = yaml.safe_load((model / "README.md").read_text(encoding="utf-8").split("---")[1])
    assert front["license"] == "apache-2.0"  # the card's other metadata is kept
    [result_block] = front["model-index"][0]["results"]
    assert {"type": "acc", "value": round(acc, 6), "name": "discopop_capitals acc"} in result_block["metrics"]
    assert "Earlier text." in (model / "README.md").read_text(encoding="utf-8")


def test_a_gguf_runs_through_a_llama_cpp_server_and_log_likelihood_tasks_are_refused(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The GGUF path starts llama-cpp-python's server; its echoed log-probs are wrong, so a multiple-choice task is
    refused in one line naming why, and nothing is written beside the GGUF."""
    gguf = tmp_path / "tiny.gguf"
    exported = runner.invoke(app, ["export", str(tiny_model_dir), "--gguf", "--quant", "f32", "--output", str(gguf)])
    assert exported.exit_code == 0, exported.output
    before = sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(
        app, ["eval", "tasks", str(gguf), "--tasks", "discopop_capitals", "--include-path", str(TASKS)]
    )
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert "echoed prompt log-probs that do not match the model" in " ".join(result.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == before
