"""The speed levers of `discopop sft|align` (discopop_cli/train/speed.py): what each decides, that each does what it
says, and that none changes a loss.

- A tiny `discopop align` run with every lever on (lean head, allocator, threads, checkpointing off by the memory
  plan, reference log-probs precomputed for its 2 epochs) logs the same losses, step by step, as the same run with
  DISCOPOP_SPEEDUPS_OFF=all, and as the same run with each lever turned off alone (the lean head's log-probs and
  gradients have tests/train/test_lean_head.py too).
- The allocator: after it, memory freed by one step is reused by the next without faulting its pages in again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from discopop_cli.core.errors import UserError
from discopop_cli.train import speed

GB = 1024**3


def test_switch_names_levers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(speed.SWITCH, "allocator, threads")
    assert speed.turned_off() == {"allocator", "threads"} and speed.enabled("lean-head")
    monkeypatch.setenv(speed.SWITCH, "all")
    assert speed.turned_off() == set(speed.LEVERS)
    monkeypatch.setenv(speed.SWITCH, "lean_head")
    with pytest.raises(UserError, match=r"DISCOPOP_SPEEDUPS_OFF names \['lean_head'\]; use .*lean-head"):
        speed.tune_process()


def test_checkpointing_plan() -> None:
    plan = speed.checkpointing_plan
    # CPU: off when the step without it fits in half the memory, on when it does not, whatever the recipe says.
    assert plan(True, on_gpu=False, step_bytes_without=4 * GB, available_bytes=20 * GB).on is False
    assert plan(False, on_gpu=False, step_bytes_without=12 * GB, available_bytes=20 * GB).on is True
    assert "12.0 GB without it, 20.0 GB available" in plan(None, on_gpu=False, step_bytes_without=12 * GB,
                                                              available_bytes=20 * GB).reason  # fmt: skip
    # GPU: the recipe's setting stands, unless it says auto.
    assert plan(True, on_gpu=True, step_bytes_without=1 * GB, available_bytes=80 * GB).on is True
    assert plan(False, on_gpu=True, step_bytes_without=70 * GB, available_bytes=80 * GB).on is False
    assert plan("auto", on_gpu=True, step_bytes_without=1 * GB, available_bytes=80 * GB).on is False
    # No plan (no config.json to size the model from): the recipe's setting.
    assert plan(False, on_gpu=False, step_bytes_without=None, available_bytes=20 * GB).on is False


def test_recipe_may_say_auto(tmp_path: Path, tiny_model_dir: Path, tiny_dataset_path: Path) -> None:
    from discopop_cli.recipes.load import load_recipe

    recipe_path = _recipe(tmp_path, tiny_model_dir, tiny_dataset_path)
    recipe_path.write_text(recipe_path.read_text() + "gradient_checkpointing: auto\nuse_cpu: true\nbf16: false\n")
    recipe = load_recipe(recipe_path, "align", quiet=True)
    assert recipe.extras["activation_checkpointing"] == "auto" and "activation_checkpointing" not in recipe.training
    config = recipe.training_config()
    assert speed.plan_checkpointing(recipe, config, 1) is not None  # the plan decided: off, from TRL's default on
    assert config.activation_checkpointing is False


def _config(**values: object) -> SimpleNamespace:
    base = dict(precompute_ref_log_probs=False, sync_ref_model=False, num_train_epochs=3.0, max_steps=-1,
                per_device_train_batch_size=4, gradient_accumulation_steps=2, world_size=1)  # fmt: skip
    return SimpleNamespace(**{**base, **values})


def test_reference_precompute_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config()
    message = speed.plan_reference_precompute(config, 100, recipe_sets_it=False)
    assert config.precompute_ref_log_probs is True and "each pair is seen 3 times" in message
    for config, pairs, sets in [
        (_config(num_train_epochs=1.0), 100, False),  # each pair once: precomputing only moves the work
        (_config(max_steps=10), 100, False),  # 10 steps x 8 pairs < 100 pairs
        (_config(sync_ref_model=True), 100, False),  # the reference moves
        (_config(), 100, True),  # the recipe says precompute_ref_log_probs: false
    ]:
        assert speed.plan_reference_precompute(config, pairs, recipe_sets_it=sets) is None
        assert config.precompute_ref_log_probs is False
    config = _config(max_steps=30)
    assert "2.4 times" in speed.plan_reference_precompute(config, 100, recipe_sets_it=False)
    monkeypatch.setenv(speed.SWITCH, "precompute")
    assert speed.plan_reference_precompute(_config(), 100, recipe_sets_it=False) is None


def test_threads_one_per_physical_core(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        torch.set_num_threads(7)
        assert speed.set_threads() is not None
        assert torch.get_num_threads() == speed.physical_cores() <= (os.cpu_count() or 1)
        torch.set_num_threads(7)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice stands
        assert speed.set_threads() is None and torch.get_num_threads() == 7
    finally:
        torch.set_num_threads(before)


ALLOCATOR_PROBE = textwrap.dedent(
    """
    import ctypes, resource
    from discopop_cli.train import speed
    done = speed.keep_freed_memory()
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, faults = 256 * 2**20, []
    for step in range(4):  # one "training step": 256 MiB written, then freed
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(done, min(faults[1:]))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is Linux's")
def test_allocator_keeps_freed_memory(repo_root: Path) -> None:
    def probe(switch: str) -> tuple[str, int]:
        env = {**os.environ, speed.SWITCH: switch}
        out = subprocess.run([sys.executable, "-c", ALLOCATOR_PROBE], env=env, cwd=repo_root, capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
        return " ".join(out[:-1]), int(out[-1])

    kept, faults_kept = probe("")
    plain, faults_plain = probe("allocator")
    assert kept.startswith("malloc keeps freed memory") and plain == "None"
    # Without the lever every step faults its 65,536 pages of 4 KiB in again; with it, steps 2-4 reuse them.
    assert faults_plain > 30_000
    assert faults_kept < 1_000


def _recipe(folder: Path, model: Path, data: Path) -> Path:
    body = {
        "model_name_or_path": str(model),
        "dataset_mixture": {"datasets": [{"id": str(data), "columns": ["chosen", "rejected"]}], "seed": 0},
        "loss_type": "discopop",
        "beta": 0.5,
        "learning_rate": 1e-3,
        "num_train_epochs": 2,
        "per_device_train_batch_size": 8,
        "max_length": 96,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
        "use_peft": True,
        "lora_r": 8,
        "lora_target_modules": ["q_proj", "v_proj"],
        "output_dir": str(folder / "out"),
    }
    path = folder / "speed.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def _align(recipe: Path, out: Path, switch: str, repo_root: Path) -> tuple[list[float], str]:
    env = {**os.environ, speed.SWITCH: switch}
    command = [str(Path(sys.executable).parent / "discopop"), "align", str(recipe), "-o", str(out)]
    result = subprocess.run(command, env=env, cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry], result.stderr


@pytest.fixture(scope="module")
def every_lever_on(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, repo_root: Path) -> dict:
    """The tiny align run (LoRA, 2 epochs of 16 pairs) with every lever on: its recipe, losses and notices."""
    folder = tmp_path_factory.mktemp("levers")
    data = folder / "pairs.jsonl"
    lines = (repo_root / "recipes" / "data" / "tiny-preferences.jsonl").read_text().splitlines()[:32]
    data.write_text("\n".join(lines) + "\n")
    recipe = _recipe(folder, tiny_model_dir, data)
    losses, said = _align(recipe, folder / "fast", "", repo_root)
    return {"recipe": recipe, "folder": folder, "losses": losses, "said": said}


def test_align_losses_with_and_without_every_lever(every_lever_on: dict, repo_root: Path) -> None:
    fast, said = every_lever_on["losses"], every_lever_on["said"]
    plain, said_plain = _align(every_lever_on["recipe"], every_lever_on["folder"] / "plain", "all", repo_root)
    assert "activation checkpointing off (the memory plan" in said
    assert "reference log-probs are computed once before training, as each pair is seen 2 times" in said
    assert "activation checkpointing" not in said_plain and "reference log-probs" not in said_plain
    assert len(fast) == len(plain) == 8
    assert fast == pytest.approx(plain, abs=1e-5)
    assert fast[0] != fast[-1]  # it trained


# tied-gradient does nothing under LoRA (the tied embedding is frozen): tests/train/test_tied_gradient.py runs it on
# a full fine-tune.
@pytest.mark.parametrize("lever", [lever for lever in speed.LEVERS if lever != "tied-gradient"])
def test_each_lever_alone_keeps_the_align_losses(lever: str, every_lever_on: dict, repo_root: Path) -> None:
    losses, _ = _align(every_lever_on["recipe"], every_lever_on["folder"] / lever, lever, repo_root)
    assert losses == pytest.approx(every_lever_on["losses"], abs=1e-5)
