"""Results stay with the model: `eval_results.json` in its folder, and the `model-index` of its model card.

`eval_results.json` holds every evaluation run on the model, one entry per (kind, dataset, split, reference or
task): running the same evaluation again replaces its entry, anything else is added, nothing earlier is lost. The
card's `model-index` (the Hub's format for evaluation results) is rebuilt from the new entry and merged into what the
card already has (core/model_card.py). Both files are written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from discopop_cli.core.errors import UserError
from discopop_cli.core.json_files import read_json
from discopop_cli.core.model_card import framework_versions, with_model_index
from discopop_cli.core.outputs import staged_file

RESULTS_FILE = "eval_results.json"


def results_folder(model: str) -> Path | None:
    """Where a model's results go: its folder (a GGUF file's folder), or None for a Hub id."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    return None


def check_can_save(models: list[str]) -> None:
    """Before any work: each local model's results file and card can be written (and read, if present)."""
    for model in models:
        folder = results_folder(model)
        if folder is None:
            continue
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"cannot write results into {folder}: not writable by this user; pass --no-save")
        read_json(folder / RESULTS_FILE, "model folder", missing_ok=True)


def _same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("kind", "dataset", "split", "reference", "task")
    return all(a.get(k) == b.get(k) for k in keys)


def record(model: str, entry: dict[str, Any], model_index: list[dict[str, Any]]) -> Path | None:
    """Add (or replace) `entry` in the model's eval_results.json and merge `model_index` into its card."""
    folder = results_folder(model)
    if folder is None:
        return None
    entry = {**entry, "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds")}
    entry["tool"] = "discopop-cli " + dict(framework_versions()).get("discopop-cli", "")
    path = folder / RESULTS_FILE
    existing = read_json(path, "model folder", missing_ok=True)
    runs = [run for run in existing.get("results", []) if isinstance(run, dict) and not _same_run(run, entry)]
    document = {**existing, "results": [*runs, entry]}
    with staged_file(path) as partial:
        partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    card = folder / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else None
    name = folder.name if Path(model).is_dir() else Path(model).stem
    with staged_file(card) as partial:
        partial.write_text(with_model_index(text, name, model_index), encoding="utf-8")
    return folder


def save_prefs(model: str, values: dict[str, float], setting: dict[str, Any]) -> Path | None:
    """One `eval prefs` result: the metrics, the dataset, the reference and beta."""
    entry = {"kind": "prefs", **setting, "metrics": values}
    against = f" vs {Path(setting['reference']).name}" if setting.get("reference") else ""
    metrics = [
        {"type": key, "value": round(value, 6), "name": f"{key}{against}" if key.startswith("rewards/") else key}
        for key, value in values.items()
        if key != "pairs"
    ]
    index = [
        {
            "task": {"type": "text-generation", "name": "Preference pairs (held out)"},
            "dataset": {"name": setting["dataset"], "type": setting["dataset"], "split": setting["split"]},
            "metrics": metrics,
            "source": {"name": "discopop eval prefs", "url": "https://github.com/huggingface/trl"},
        }
    ]
    return record(model, entry, index)


def save_tasks(model: str, task_results: dict[str, dict[str, Any]], setting: dict[str, Any]) -> Path | None:
    """One `eval tasks` run: per task, its metrics (lm-evaluation-harness names, e.g. `acc`, `acc_norm`)."""
    folder = None
    for task, values in task_results.items():
        entry = {"kind": "tasks", "task": task, **setting, "metrics": values["metrics"]}
        entry |= {"stderr": values.get("stderr", {}), "samples": values.get("samples")}
        metrics = [
            {"type": key, "value": round(float(v), 6), "name": f"{task} {key}"} for key, v in values["metrics"].items()
        ]
        index = [
            {
                "task": {"type": "text-generation", "name": task},
                "dataset": {
                    "name": task,
                    "type": values.get("dataset") or task,
                    "split": values.get("split") or "test",
                },
                "metrics": metrics,
                "source": {
                    "name": "lm-evaluation-harness (discopop eval tasks)",
                    "url": "https://github.com/EleutherAI/lm-evaluation-harness",
                },
            }
        ]
        folder = record(model, entry, index)
    return folder
