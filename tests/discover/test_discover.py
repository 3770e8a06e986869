"""`discopop discover` end to end with `dir:` on the tiny model: six candidates (some broken) through the checks,
training, scoring and the archive; `--resume`; the report; the exported plugin, used by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from discover_helpers import MARGIN, SIGNATURE, discover_recipe, write_candidates
from typer.testing import CliRunner

from discopop_cli.cli import app
from discopop_cli.discover.candidate import formula

runner = CliRunner()

SIX = {
    "a_dpo.py": f'''
        """Plain DPO, the baseline."""
        import torch
        import torch.nn.functional as F


        def dpo({SIGNATURE}):
            margin = {MARGIN}
            return -F.logsigmoid(beta * margin)
        ''',
    "b_paper_form.py": """
        import torch
        import torch.nn.functional as F


        def hinge_logistic(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps):
            x = self.beta * ((policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps))
            return 0.5 * torch.relu(1 - x) + 0.5 * F.softplus(-x)
        """,
    "c_imports_os.py": f"""
        import os


        def sneaky({SIGNATURE}):
            os.system("echo hi")
            return policy_chosen_logps
        """,
    "d_nan.py": f"""
        import torch


        def broken({SIGNATURE}):
            return torch.log(policy_chosen_logps - policy_rejected_logps)
        """,
    "e_dpo_in_disguise.py": f"""
        import torch.nn.functional as F


        def softplus_margin({SIGNATURE}):
            return F.softplus(-beta * ({MARGIN}))
        """,
    "f_scalar.py": f"""
        import torch.nn.functional as F


        def mean_already({SIGNATURE}):
            return -F.logsigmoid(beta * ({MARGIN})).mean()
        """,
}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_discover_dir_end_to_end(tmp_path: Path, tiny_model_dir: Path, tiny_dataset_path: Path) -> None:
    recipe = discover_recipe(tmp_path, tiny_model_dir, tiny_dataset_path)
    candidates = write_candidates(tmp_path / "inbox", SIX)
    out = tmp_path / "run"
    args = ["discover", str(recipe), "--proposer", f"dir:{candidates}", "--out", str(out)]

    # An interrupted run: three generations, then --resume to six.
    first = runner.invoke(app, [*args, "--generations", "3"])
    assert first.exit_code == 0, first.output
    archive = out / "archive.jsonl"
    after_first = archive.read_bytes()
    assert len(lines(archive)) == 3
    again = runner.invoke(app, [*args, "--generations", "3"])
    assert again.exit_code == 2 and "pass --resume to continue" in again.output
    resumed = runner.invoke(app, [*args, "--generations", "6", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert archive.read_bytes().startswith(after_first)  # append-only: the first three lines untouched

    entries = lines(archive)
    by_origin = {e["origin"]: e for e in entries}
    assert [e["generation"] for e in entries] == [1, 2, 3, 4, 5, 6]
    assert sorted(by_origin) == sorted(SIX)  # each file tried exactly once across the two runs
    for origin in ("a_dpo.py", "b_paper_form.py"):
        entry = by_origin[origin]
        assert entry["status"] == "scored", entry
        assert 0.0 <= entry["fitness"] <= 1.0 and entry["fitness_method"] == "trl-eval-accuracy"
        assert entry["metrics"]["steps"] == 2
    assert by_origin["b_paper_form.py"]["form"] == "paper"
    assert by_origin["a_dpo.py"]["thought"] == "Plain DPO, the baseline."
    refused = {o: (e["status"], e["stage"], e["reason"]) for o, e in by_origin.items() if e["status"] != "scored"}
    assert (
        refused["c_imports_os.py"][:2] == ("rejected", "static") and "import of `os`" in refused["c_imports_os.py"][2]
    )
    assert refused["d_nan.py"][:2] == ("rejected", "sandbox") and "non-finite" in refused["d_nan.py"][2]
    dpo_id = by_origin["a_dpo.py"]["id"]
    assert refused["e_dpo_in_disguise.py"] == ("rejected", "duplicate", f"behaves like {dpo_id} on the fixed inputs")
    assert refused["f_scalar.py"][:2] == ("rejected", "sandbox") and "shape []" in refused["f_scalar.py"][2]
    # Only the two that passed were trained; their weights are gone after scoring, their numbers kept.
    assert sorted(p.name for p in (out / "runs").iterdir() if p.is_dir()) == sorted(
        by_origin[o]["id"] for o in ("a_dpo.py", "b_paper_form.py")
    )
    assert not list((out / "runs").rglob("*.safetensors"))
    assert "generation 6" in resumed.output and "rejected at sandbox" in resumed.output

    # The report: the leaderboard as JSON, best first, and the PNG.
    report = runner.invoke(app, ["discover", "report", str(out), "--json"])
    assert report.exit_code == 0, report.output
    board = json.loads(report.stdout)
    ranked = [row for row in board["candidates"] if row["rank"] is not None]
    assert [row["rank"] for row in ranked] == [1, 2]
    assert ranked[0]["fitness"] >= ranked[1]["fitness"]
    assert len(board["candidates"]) == 6
    assert (out / "fitness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = runner.invoke(app, ["discover", "report", str(out)])
    assert table.exit_code == 0 and "behaves like" in table.output and ranked[0]["id"] in table.output

    # The export: a plugin package that, installed, registers the loss by name for `discopop losses` and `align`.
    exported = runner.invoke(app, ["discover", "export", str(out), "--name", "found_loss"])
    assert exported.exit_code == 0, exported.output
    plugin = out / "plugin-found_loss"
    assert "discopop_cli.losses" in (plugin / "pyproject.toml").read_text()
    again = runner.invoke(app, ["discover", "export", str(out), "--name", "found_loss"])
    assert again.exit_code == 2 and "--force" in again.output
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*pip, "--target", str(site), str(plugin)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    listed = subprocess.run(
        [sys.executable, "-m", "discopop_cli", "losses", "--json"], env=env, capture_output=True, text=True, check=True
    )
    found = {row["name"]: row for row in json.loads(listed.stdout)}["found_loss"]
    best_code = next(e["code"] for e in entries if e["id"] == ranked[0]["id"])
    assert found["formula"] == formula(best_code) and "L = " in found["formula"]
    dry = subprocess.run(
        [sys.executable, "-m", "discopop_cli", "align", str(recipe), "--set", "loss_type=found_loss", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert dry.returncode == 0, dry.stderr
    assert "found_loss [discopop-cli]" in dry.stdout  # resolved by name, through the plugin's entry point
    best = ranked[0]
    module = (plugin / "discopop_loss_found_loss" / "__init__.py").read_text()
    assert f"Fitness {best['fitness']:.4f}" in module and best["id"] in module


def test_training_past_its_time_is_stopped_and_archived(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset_path: Path
) -> None:
    """A candidate whose training runs too long (here: the child's start-up alone) is killed, with its process
    group, and archived as failed at training with the reason; the loop goes on."""
    recipe = discover_recipe(tmp_path, tiny_model_dir, tiny_dataset_path)
    candidates = write_candidates(tmp_path / "inbox", {"a_dpo.py": SIX["a_dpo.py"]})
    out = tmp_path / "run"
    args = ["discover", str(recipe), "--proposer", f"dir:{candidates}", "--out", str(out), "--generations", "1"]
    result = runner.invoke(app, [*args, "--train-timeout", "0.5"])
    assert result.exit_code == 0, result.output
    (entry,) = lines(out / "archive.jsonl")
    assert (entry["status"], entry["stage"]) == ("failed", "training"), entry
    assert entry["reason"] == (
        "training ran past --train-timeout 0.5 s and was stopped; raise it or shorten the recipe"
    )
    assert entry["seconds"] < 30
    assert not (out / "runs" / entry["id"]).exists()  # killed before it wrote anything
