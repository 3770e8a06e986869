"""Nothing lost: a killed run resumes to the same weights, a non-finite step stops the run, outputs are refused or
replaced only as asked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import yaml
from bad_input import EMPTY_SAFETENSORS
from typer.testing import CliRunner

from discopop_cli.cli import app
from discopop_cli.core.outputs import MARKER, mark

runner = CliRunner()

# Runs `discopop ARGS` and SIGKILLs the process right after its second checkpoint is complete on disk.
KILL_AFTER_SECOND_CHECKPOINT = textwrap.dedent(
    """
    import os, signal, sys
    from transformers.trainer_callback import CallbackHandler

    saved = []
    on_save = CallbackHandler.on_save

    def on_save_then_die(self, args, state, control):
        control = on_save(self, args, state, control)
        saved.append(state.global_step)
        if len(saved) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return control

    CallbackHandler.on_save = on_save_then_die
    from discopop_cli.cli import main

    sys.argv = ["discopop", *sys.argv[1:]]
    main()
    """
)


def write_recipe(folder: Path, model_dir: Path, dataset: Path, **overrides: object) -> Path:
    body = {
        "model_name_or_path": str(model_dir),
        "dataset_mixture": {"datasets": [{"id": str(dataset)}], "seed": 0},
        "loss_type": "discopop",
        "beta": 0.1,
        "learning_rate": 2e-3,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 2,
        "max_steps": 8,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "logging_steps": 1,
        "max_length": 96,
        "eval_strategy": "no",
        "save_strategy": "steps",
        "save_steps": 2,
        "report_to": "none",
        "seed": 7,
        "output_dir": str(folder / "run"),
        **overrides,
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


@pytest.fixture
def small_preferences(tmp_path: Path, tiny_dataset_path: Path) -> Path:
    """20 pairs: 8 pairs a step, so 8 steps cross two epoch boundaries (the data position must survive them)."""
    lines = tiny_dataset_path.read_text(encoding="utf-8").splitlines()[:20]
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def discopop(*args: str, script: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    head = [sys.executable, "-c", script] if script else [sys.executable, "-m", "discopop_cli.cli"]
    return subprocess.run([*head, *args], env=env, capture_output=True, text=True, timeout=600, check=False)


def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(
    tmp_path: Path, tiny_model_dir: Path, small_preferences: Path
) -> None:
    from safetensors.torch import load_file

    recipe = write_recipe(tmp_path, tiny_model_dir, small_preferences)
    whole, killed = tmp_path / "whole", tmp_path / "killed"

    alone = discopop("align", str(recipe), "-o", str(whole))
    assert alone.returncode == 0, alone.stderr

    died = discopop("align", str(recipe), "-o", str(killed), script=KILL_AFTER_SECOND_CHECKPOINT)
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert sorted(p.name for p in killed.iterdir()) == [MARKER, "checkpoint-2", "checkpoint-4"]  # no model, no card

    again = runner.invoke(app, ["align", str(recipe), "-o", str(killed)])
    assert again.exit_code == 2
    assert "holds a run (checkpoint-4); pass --resume to continue it, --force to replace it" in again.output

    resumed = discopop("align", str(recipe), "-o", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"aligned: {killed} (8 steps" in " ".join(resumed.stdout.split())
    # It continued: the resumed process logged steps 5-8 only (starting afresh would also end on these weights).
    assert alone.stdout.count("'loss/discopop'") == 8 and resumed.stdout.count("'loss/discopop'") == 4

    reference, continued = load_file(whole / "model.safetensors"), load_file(killed / "model.safetensors")
    assert reference.keys() == continued.keys()
    base = load_file(tiny_model_dir / "model.safetensors")
    assert max((reference[k] - base[k]).abs().max().item() for k in base) > 1e-3  # it trained
    assert max((reference[k] - continued[k]).abs().max().item() for k in reference) <= 1e-5

    # Steps 5-8 were trained by the resumed process, on the same data, optimizer and schedule.
    def step_logs(folder: Path) -> dict[int, dict]:
        history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
        return {e["step"]: e for e in history if "loss" in e}

    want, got = step_logs(whole), step_logs(killed)
    for step in (5, 6, 7, 8):
        assert got[step]["loss"] == pytest.approx(want[step]["loss"], rel=1e-5, abs=1e-7)
        assert got[step]["learning_rate"] == pytest.approx(want[step]["learning_rate"], rel=1e-9)
    assert (killed / "README.md").is_file() and not (killed / ".final.partial").exists()


NONFINITE_LOSSES = """
import torch
import torch.nn.functional as F

# Call 1 is the contract check `align` makes on a test batch before the model loads (losses/user.py), and both
# losses pass it; training's calls come after.
CALLS = []
INF_CALLS = []


def _x(pc, pr, rc, rr, beta):
    return beta * ((pc - pr) - (rc - rr))


def nan_loss_from_fifth_step(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                             reference_rejected_logps, *, beta):
    CALLS.append(1)
    x = _x(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta)
    loss = -F.logsigmoid(x)
    return loss * float("nan") if len(CALLS) >= 6 else loss


def inf_gradient_from_first_step(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                                 reference_rejected_logps, *, beta):
    INF_CALLS.append(1)
    x = _x(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta)
    if len(INF_CALLS) == 1:
        return -F.logsigmoid(x)
    return -F.logsigmoid(x) + torch.sqrt(x - x.detach())  # value finite (+0), d sqrt(0) = inf


RAISE_CALLS = []


def raises_in_training(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                       reference_rejected_logps, *, beta):
    RAISE_CALLS.append(1)
    if len(RAISE_CALLS) > 1:
        raise RuntimeError("shapes drifted")
    return -F.logsigmoid(_x(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                            reference_rejected_logps, beta))
"""


@pytest.fixture
def nonfinite_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"nonfinite_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(NONFINITE_LOSSES, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_nan_loss_stops_the_run_naming_the_step_and_the_last_checkpoint(
    tmp_path: Path, tiny_model_dir: Path, small_preferences: Path, nonfinite_module: str
) -> None:
    from safetensors.torch import load_file

    recipe = write_recipe(
        tmp_path,
        tiny_model_dir,
        small_preferences,
        loss_type=f"{nonfinite_module}:nan_loss_from_fifth_step",
        gradient_accumulation_steps=1,
    )
    result = runner.invoke(app, ["align", str(recipe)])
    out = tmp_path / "run"
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert "step 5: the training loss is nan, so training stopped before the optimizer step" in message
    assert f"the last checkpoint is {out / 'checkpoint-4'}; continue from it with --resume" in message
    assert "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "checkpoint-2", "checkpoint-4"]
    weights = load_file(next((out / "checkpoint-4").glob("*.safetensors")))
    assert all(t.isfinite().all() for t in weights.values())


def test_infinite_gradient_with_a_finite_loss_stops_the_run(
    tmp_path: Path, tiny_model_dir: Path, small_preferences: Path, nonfinite_module: str
) -> None:
    recipe = write_recipe(
        tmp_path, tiny_model_dir, small_preferences, loss_type=f"{nonfinite_module}:inf_gradient_from_first_step"
    )
    out = tmp_path / "run"
    out.mkdir()
    mark(out, "align")  # an earlier output of discopop's, which --force may replace
    (out / "model.safetensors").write_text("an earlier output")
    result = runner.invoke(app, ["align", str(recipe), "--force"])
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert "step 1: the gradient norm is" in message and "no checkpoint was saved" in message
    # --force replaces an output only once the new run has something to show: the earlier one is back.
    assert "is as it was before --force" in message
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "model.safetensors"]
    assert (out / "model.safetensors").read_text() == "an earlier output"
    assert not [p.name for p in tmp_path.iterdir() if ".replaced-" in p.name]


def test_a_loss_raising_during_training_is_one_line_and_writes_no_model(
    tmp_path: Path, tiny_model_dir: Path, small_preferences: Path, nonfinite_module: str
) -> None:
    """A loss that passes the plan-time check and raises later stops the run with one line naming it, exit 1."""
    recipe = write_recipe(
        tmp_path, tiny_model_dir, small_preferences, loss_type=f"{nonfinite_module}:raises_in_training"
    )
    result = runner.invoke(app, ["align", str(recipe)])
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert (
        f"error: loss `{nonfinite_module}:raises_in_training` raised RuntimeError: shapes drifted at step 1 (it passed "
        "the check on a test batch before training); fix the function (--debug shows the traceback)"
    ) in message
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "prepare", "message"),
    [
        (["--resume", "--force"], None, "--resume continues the run in"),
        (["--resume"], None, "holds no complete checkpoint-N to continue from"),
        (["--resume"], "checkpoint-3/config.json", "holds no complete checkpoint-N to continue from"),
        ([], "notes.txt", "already exists; pass --force to replace it"),
    ],
)
def test_resume_and_force_refusals_write_nothing(
    tmp_path: Path, tiny_model_dir: Path, small_preferences: Path, args: list[str], prepare: str | None, message: str
) -> None:
    recipe = write_recipe(tmp_path, tiny_model_dir, small_preferences)
    out = tmp_path / "run"
    if prepare:
        (out / prepare).parent.mkdir(parents=True, exist_ok=True)
        (out / prepare).write_text("x")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    result = runner.invoke(app, ["align", str(recipe), *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_sft_resume_needs_a_checkpoint(tmp_path: Path, tiny_model_dir: Path, repo_root: Path) -> None:
    recipe = tmp_path / "sft.yaml"
    chat = repo_root / "recipes" / "data" / "tiny-chat.jsonl"
    body = {"model_name_or_path": str(tiny_model_dir), "dataset_mixture": {"datasets": [{"id": str(chat)}]}}
    recipe.write_text(yaml.safe_dump({**body, "output_dir": str(tmp_path / "sft")}), encoding="utf-8")
    result = runner.invoke(app, ["sft", str(recipe), "--resume"])
    assert result.exit_code == 2, result.output
    assert "holds no complete checkpoint-N to continue from" in " ".join(result.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft.yaml"]


def test_resume_skips_a_checkpoint_cut_off_mid_write(tmp_path: Path) -> None:
    from discopop_cli.train.run_directory import check_run_directory

    for name, complete in [("checkpoint-2", True), ("checkpoint-4", True), ("checkpoint-6", False)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(EMPTY_SAFETENSORS)
        if complete:
            (tmp_path / name / "trainer_state.json").write_text("{}")
    assert check_run_directory(tmp_path, force=False, resume=True) == tmp_path / "checkpoint-4"
