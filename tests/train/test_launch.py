"""Scaling out: global batch arithmetic, launch option checks, and a real 2-process CPU run through accelerate."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from discopop_cli.cli import app
from discopop_cli.core.errors import UserError
from discopop_cli.train.launch import LaunchOptions, apply_global_batch, resolve_config

runner = CliRunner()


@pytest.mark.parametrize(
    ("per_device", "processes", "global_batch", "accumulation"),
    [(2, 8, 128, 8), (2, 4, 128, 16), (2, 2, 128, 32), (2, 1, 128, 64), (4, 3, 24, 2)],
)
def test_global_batch_sets_accumulation(per_device, processes, global_batch, accumulation) -> None:
    training = {"per_device_train_batch_size": per_device, "gradient_accumulation_steps": 99}
    message = apply_global_batch(training, global_batch, processes, "--global-batch-size")
    assert training["gradient_accumulation_steps"] == accumulation
    assert f"(gradient_accumulation_steps 99 -> {accumulation})" in message


@pytest.mark.parametrize(("per_device", "processes", "global_batch"), [(2, 8, 100), (2, 3, 128), (4, 8, 16)])
def test_global_batch_that_does_not_divide_is_refused(per_device, processes, global_batch) -> None:
    training = {"per_device_train_batch_size": per_device}
    with pytest.raises(UserError, match=f"is not a multiple of {per_device} per device x {processes} process"):
        apply_global_batch(training, global_batch, processes, "--global-batch-size")
    assert "gradient_accumulation_steps" not in training


def test_launch_options_are_checked() -> None:
    with pytest.raises(UserError, match="--main-process-ip"):
        LaunchOptions(accelerate_config="ddp", num_processes=16, num_machines=2).validate()
    with pytest.raises(UserError, match="--machine-rank 2 is outside 0..1"):
        LaunchOptions("ddp", 16, num_machines=2, machine_rank=2, main_process_ip="10.0.0.1").validate()
    with pytest.raises(UserError, match="does not divide over 2 machines"):
        LaunchOptions("ddp", 3, num_machines=2, main_process_ip="10.0.0.1").validate()
    with pytest.raises(UserError, match="--num-processes 4 needs --accelerate-config"):
        LaunchOptions(num_processes=4).validate()
    LaunchOptions(num_processes=4).validate(dry_run=True)  # sizing the batch for a later launch is fine
    with pytest.raises(UserError, match="did you mean 'zero3'"):
        resolve_config("zero-3")
    assert resolve_config("fsdp").name == "fsdp.yaml"


def test_dry_run_zero3_on_eight_processes_is_the_papers_batch(repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = str(repo_root / "recipes/zephyr-7b-gemma.yaml")
    result = runner.invoke(app, ["align", recipe, "--dry-run", "--accelerate-config", "zero3", "--num-processes", "8"])
    assert result.exit_code == 0, result.output
    assert "2 per device x 8 accumulation x 8 process(es) = 128 global" in flat(result.output)

    # --global-batch-size overrides the recipe's global_batch_size: accumulation derived, and said.
    result = runner.invoke(app, ["align", recipe, "--dry-run", "--num-processes", "2", "--global-batch-size", "64"])
    assert result.exit_code == 0, result.output
    assert "global batch 64 = 2 per device x 2 process(es) x 16 accumulation (gradient_accumulation_steps 8 -> 16)" in (
        result.output
    )
    assert "2 per device x 16 accumulation x 2 process(es) = 64 global; published: 128" in flat(result.output)

    refused = runner.invoke(app, ["align", recipe, "--dry-run", "--num-processes", "3", "--global-batch-size", "128"])
    assert refused.exit_code == 2
    assert "--global-batch-size 128 is not a multiple of 2 per device x 3 process(es) = 6" in refused.output

    # A recipe that states its global batch and an accumulation given on the command line: one must go.
    clash = runner.invoke(app, ["align", recipe, "--dry-run", "--set", "gradient_accumulation_steps=4"])
    assert clash.exit_code == 2 and "--unset global_batch_size" in clash.output
    unset = runner.invoke(
        app, ["align", recipe, "--dry-run", "--unset", "global_batch_size", "--set", "gradient_accumulation_steps=4"]
    )
    assert unset.exit_code == 0 and "2 per device x 4 accumulation x 1 process(es) = 8 global" in flat(unset.output)


def flat(text: str) -> str:
    """Rich's table cells wrap; their words, in order, on one line."""
    return " ".join(text.replace("│", " ").split())


def test_two_cpu_processes_through_accelerate(tmp_path: Path, tiny_model_dir: Path, tiny_dataset_path: Path) -> None:
    rows = sum(1 for line in tiny_dataset_path.read_text().splitlines() if line.strip())
    test_rows = 12
    per_device = 4
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": str(tiny_model_dir),
                "dataset_mixture": {"datasets": [{"id": str(tiny_dataset_path)}], "test_split_size": test_rows},
                "loss_type": "discopop",
                "beta": 0.1,
                "max_steps": 3,
                "per_device_train_batch_size": per_device,
                "logging_steps": 1,
                "max_length": 96,
                "save_strategy": "no",
                "report_to": "none",
                "output_dir": str(tmp_path / "aligned"),
            }
        )
    )
    # A real process, so the output of every rank is seen, as a user would see it.
    result = subprocess.run(
        [sys.executable, "-m", "discopop_cli.cli", "align", str(recipe), "--accelerate-config", "ddp"]
        + ["--num-processes", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    out = tmp_path / "aligned"
    logs = [e for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    # Each optimizer step consumed 2 processes x per-device pairs: an epoch is that many times shorter.
    steps_per_epoch = math.ceil((rows - test_rows) / (2 * per_device))
    assert logs[0]["epoch"] == pytest.approx(1 / steps_per_epoch, rel=1e-3)
    # Exactly one model, card and recipe, written by rank 0 only; no staging directories left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aligned", "ddp.yaml"]
    assert len(list(out.glob("*.safetensors"))) == 1 and not (out / ".final.partial").exists()
    assert (out / "README.md").read_text().count("- num_devices: 2") == 1
    assert output.count("aligned: ") == 1
    assert output.count("no GPU found") == 1  # notices are not repeated per rank
