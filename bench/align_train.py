"""align training: `discopop align` against a plain TRL `DPOTrainer(loss_type="discopop")` script, and
`precompute_ref_log_probs` (on by default for these 2 epochs, train/speed.py) against off.

Both train the same random-weight Gemma (4 layers, hidden 256, the tiny model's 512-token ChatML tokenizer) on the
140 pairs of recipes/data/tiny-preferences.jsonl, shuffled with the same seed, for the same steps. Train time is the
trainer's own `train_runtime` for both (from trainer_state.json for `discopop align`, from `train()`'s metrics for
the script); whole-process time and peak RSS come from the kernel. `discopop align` precomputes the reference
log-probs while the trainer is built, before `train_runtime` starts, so the target is on whole-process time.
"""

from __future__ import annotations

import json
from pathlib import Path

from measure import (
    BENCH,
    PYTHON,
    ROOT,
    VENV_BIN,
    Row,
    Sample,
    Settings,
    alternate,
    measure,
    med_extra,
    med_rss,
    med_seconds,
)

DATA = ROOT / "recipes" / "data" / "tiny-preferences.jsonl"
MODEL = {"hidden_size": 256, "intermediate_size": 1024, "num_layers": 4, "num_heads": 4, "head_dim": 64}

RECIPE = """\
model_name_or_path: {model}
dataset_mixture:
  datasets:
    - id: {data}
      split: train
      columns: [chosen, rejected]
  seed: 42
loss_type: discopop
discopop_tau: 0.05
beta: 0.5
learning_rate: 1.0e-4
lr_scheduler_type: cosine
num_train_epochs: {epochs}
per_device_train_batch_size: 8
gradient_accumulation_steps: 1
max_length: 128
eval_strategy: "no"
logging_steps: 5
save_strategy: "no"
report_to: none
seed: 42
"""


def build_model(folder: Path) -> Path:
    """The benchmark model, built once (in a child process, so this one stays small) and reused."""
    model = folder / "align-model"
    if not (model / "model.safetensors").is_file():
        kwargs = ", ".join(f"{k}={v}" for k, v in MODEL.items())
        code = f"from discopop_cli.demo.tiny import build_tiny_model as b; b({str(model)!r}, num_kv_heads=1, {kwargs})"
        measure([PYTHON, "-c", code])
    return model


def with_train_runtime(sample: Sample, runtime: float, loss: float) -> Sample:
    sample.extra.update(train_s=runtime, loss=loss)
    return sample


def discopop_align(recipe: Path, output: Path, *precompute: str) -> Sample:
    sample = measure([str(VENV_BIN / "discopop"), "align", str(recipe), "-o", str(output), "--force", *precompute])
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    final = next(entry for entry in reversed(history) if "train_runtime" in entry)
    return with_train_runtime(sample, final["train_runtime"], final["train_loss"])


def plain_trl(model: Path, output: Path, epochs: int) -> Sample:
    command = [PYTHON, str(BENCH / "trl_dpo_plain.py"), str(model), str(DATA), str(output), "--epochs", str(epochs)]
    sample = measure(command)
    printed = json.loads(sample.stdout.strip().splitlines()[-1])
    return with_train_runtime(sample, printed["train_runtime"], printed["train_loss"])


def rows(settings: Settings) -> list[Row]:
    folder = settings.workdir / "align"
    folder.mkdir(parents=True, exist_ok=True)
    epochs = 1 if settings.quick else 2
    model = build_model(folder)
    recipe = folder / "bench-align.yaml"
    recipe.write_text(RECIPE.format(model=model, data=DATA, epochs=epochs))
    precompute_off = ("--set", "precompute_ref_log_probs=false")
    samples = alternate(
        {
            "discopop": lambda: discopop_align(recipe, folder / "out-discopop"),
            "trl": lambda: plain_trl(model, folder / "out-trl", epochs),
            "per-step reference": lambda: discopop_align(recipe, folder / "out-per-step", *precompute_off),
        },
        settings.runs,
    )
    ours, trl, per_step = samples["discopop"], samples["trl"], samples["per-step reference"]
    passes = ["--passes", "1" if settings.quick else "3"]
    steps = json.loads(
        measure([PYTHON, str(BENCH / "align_steps.py"), str(model), str(DATA), *passes]).stdout.splitlines()[-1]
    )
    losses = f"train_loss {med_extra(ours, 'loss'):.4f} vs {med_extra(trl, 'loss'):.4f}"
    task = f"align, {epochs} epoch(s): `discopop align` vs a TRL `DPOTrainer` script"
    step_task = "align step: `discopop align`'s trainer vs TRL's `DPOTrainer`, one process, alternating batches"
    saving = f"align, {epochs} epoch(s): reference log-probs precomputed (the default) vs per step"
    return [
        Row(task, "train time (train_runtime)", med_extra(ours, "train_s"), med_extra(trl, "train_s"), None, "s", losses),
        Row(task, "whole-process wall time", med_seconds(ours), med_seconds(trl), 1.02, "s"),
        Row(task, "peak RSS", med_rss(ours), med_rss(trl), None, "MiB"),
        Row(step_task, "`training_step` (median)", steps["discopop"], steps["trl"], 1.02, "ms",
            f"{steps['steps']} steps each"),
        Row(saving, "whole-process wall time", med_seconds(ours), med_seconds(per_step), None, "s",
            f"train_runtime {med_extra(ours, 'train_s'):.1f} vs {med_extra(per_step, 'train_s'):.1f} s"),
        Row(saving, "peak RSS", med_rss(ours), med_rss(per_step), None, "MiB"),
    ]  # fmt: skip
