"""Model cards in the spirit of the seed's: what was trained from what, with which loss, how, and how it went."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import yaml

GEMMA_NOTICE = "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms"

# Metrics shown in the results table, in the seed card's order; TRL's log-history key -> column title.
_RESULT_COLUMNS = [
    ("rewards/chosen", "Rewards/chosen"),
    ("rewards/rejected", "Rewards/rejected"),
    ("rewards/accuracies", "Rewards/accuracies"),
    ("rewards/margins", "Rewards/margins"),
    ("logps/rejected", "Logps/rejected"),
    ("logps/chosen", "Logps/chosen"),
    ("logits/rejected", "Logits/rejected"),
    ("logits/chosen", "Logits/chosen"),
]


def framework_versions() -> list[tuple[str, str]]:
    rows = []
    for name, dist in [
        ("discopop-cli", "discopop-cli"),
        ("TRL", "trl"),
        ("Transformers", "transformers"),
        ("PyTorch", "torch"),
        ("Datasets", "datasets"),
        ("Tokenizers", "tokenizers"),
        ("PEFT", "peft"),
    ]:
        try:
            rows.append((name, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            continue
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return str(value)


def results_table(log_history: list[dict[str, Any]], columns: list[tuple[str, str]] | None = None) -> list[str]:
    """Rows of the training results table: eval rows (with the last train loss) or, without eval, train rows.

    `columns` are (log-history key, title) pairs after loss, epoch and step; the default is DPO's.
    """
    columns = _RESULT_COLUMNS if columns is None else columns
    train_loss = None
    evals = []
    trains = []
    for entry in log_history:
        if "loss" in entry:
            train_loss = entry["loss"]
            trains.append(entry)
        if "eval_loss" in entry:
            evals.append({**entry, "train_loss": train_loss})
    if evals:
        header = ["Training Loss", "Epoch", "Step", "Validation Loss"] + [t for _, t in columns]
        rows = [
            [
                _fmt(e["train_loss"]) if e["train_loss"] is not None else "No log",
                _fmt(e.get("epoch", "")),
                str(e.get("step", "")),
                _fmt(e["eval_loss"]),
            ]
            + [_fmt(e.get(f"eval_{k}", "")) for k, _ in columns]
            for e in evals
        ]
    else:
        header = ["Training Loss", "Epoch", "Step"] + [t for _, t in columns]
        rows = [
            [_fmt(e["loss"]), _fmt(e.get("epoch", "")), str(e.get("step", ""))]
            + [_fmt(e.get(k, "")) for k, _ in columns]
            for e in trains
        ]
    if not rows:
        return ["No metrics were logged (raise `logging_steps` coverage to see them here)."]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(":---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render_card(
    *,
    model_name: str,
    base_model: str,
    datasets: list[str],
    method: str,
    losses: list[dict[str, Any]],
    hyperparameters: list[tuple[str, Any]],
    log_history: list[dict[str, Any]],
    is_gemma: bool,
    peft: bool = False,
    task_tag: str = "dpo",
    result_columns: list[tuple[str, str]] | None = None,
    notes: list[str] | None = None,
) -> str:
    """The README.md written beside a trained model.

    `losses` items carry name, weight, formula, params and who computes it (discopop-cli or TRL); `notes` are
    things a user of the model must know (e.g. tokens added to the tokenizer).
    """
    front = {
        "base_model": base_model,
        "library_name": "peft" if peft else "transformers",
        "tags": ["discopop-cli", "trl", task_tag, *sorted({item["name"] for item in losses})],
        "datasets": datasets,
    }
    if is_gemma:
        front["license"] = "gemma"
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {model_name}", ""]
    data = ", ".join(datasets) if datasets else "the recipe's data"
    lines += [
        f"This model is a fine-tuned version of {base_model} on {data}, trained with {method} by discopop-cli.",
        "",
    ]
    if losses:
        lines += ["## Loss", ""]
        for item in losses:
            params = ", ".join(f"{k}={v}" for k, v in item["params"].items())
            weight = f" (weight {item['weight']})" if len(losses) > 1 else ""
            lines.append(f"- **{item['name']}**{weight}, computed by {item['source']}: `{item['formula']}`")
            if params:
                lines.append(f"  - parameters: {params}")
        lines.append("")
    lines += ["## Training hyperparameters", "", "The following hyperparameters were used during training:"]
    lines += [f"- {name}: {value}" for name, value in hyperparameters]
    lines += ["", "## Training results", "", *results_table(log_history, result_columns), ""]
    if notes:
        lines += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    lines += ["## Framework versions", ""]
    lines += [f"- {name} {version}" for name, version in framework_versions()]
    if is_gemma:
        lines += ["", "## License", "", f"{GEMMA_NOTICE}."]
    return "\n".join(lines) + "\n"
