"""What the discover tests share: a tiny align recipe with an eval split, and writing candidate files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml


def discover_recipe(folder: Path, model_dir: Path, dataset: Path, **overrides: object) -> Path:
    """Two training steps and one evaluation on 8 held-out pairs: a short run, as discovery trains each candidate."""
    body = {
        "model_name_or_path": str(model_dir),
        "dataset_mixture": {"datasets": [{"id": str(dataset)}], "seed": 0, "test_split_size": 8},
        "loss_type": "discopop",
        "beta": 0.5,
        "learning_rate": 1e-3,
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "eval_strategy": "steps",
        "eval_steps": 2,
        "logging_steps": 1,
        "max_length": 96,
        "max_prompt_length": 48,
        "save_strategy": "no",
        "report_to": "none",
        **overrides,
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def write_candidates(folder: Path, candidates: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, code in candidates.items():
        (folder / name).write_text(textwrap.dedent(code).lstrip(), encoding="utf-8")
    return folder


SIGNATURE = "policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *, beta"
MARGIN = "(policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)"
