"""Model cards in the spirit of the seed's: what was trained from what, with which loss, how, and how it went."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import yaml

from discopop_cli.core.yaml_text import YamlRefused, load_yaml_text

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


# --- evaluation results: the card's `model-index`, as the Hugging Face Hub reads it -----------------------------


def _result_key(result: dict[str, Any]) -> tuple[Any, ...]:
    task, dataset = result.get("task") or {}, result.get("dataset") or {}
    return (task.get("type"), dataset.get("type"), dataset.get("name"), dataset.get("config"), dataset.get("split"))


def merge_model_index(earlier: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`model-index` results with `new` merged in: a result for the same task and dataset gets the new metrics
    (replacing those of the same type and name, keeping the others); every other earlier result is kept as it was."""
    merged = [dict(result) for result in earlier if isinstance(result, dict)]
    for result in new:
        match = next((m for m in merged if _result_key(m) == _result_key(result)), None)
        if match is None:
            merged.append(result)
            continue
        fresh = {(m.get("type"), m.get("name")) for m in result.get("metrics", [])}
        kept = [m for m in match.get("metrics", []) if (m.get("type"), m.get("name")) not in fresh]
        match["metrics"] = kept + list(result.get("metrics", []))
        if "source" in result:
            match["source"] = result["source"]
    return merged


def split_card(text: str) -> tuple[dict[str, Any], str]:
    """(front matter, body) of a model card; a card without front matter has an empty one."""
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            try:
                front = load_yaml_text(text[4:end]) or {}
            except YamlRefused:  # aliases or deep nesting: not a card this tool reads
                front = None
            if isinstance(front, dict):
                body = text[end + 4 :]
                return front, body[1:] if body.startswith("\n") else body
    return {}, text


def with_model_index(text: str | None, model_name: str, results: list[dict[str, Any]]) -> str:
    """The card `text` (a minimal one when there is none) with `results` merged into its `model-index`.

    The body and every other front-matter key are kept; so are results of other tools and other datasets."""
    if text is None:
        text = (
            f"# {model_name}\n\nEvaluated with discopop-cli (`discopop eval`); the results are in the metadata above.\n"
        )
    front, body = split_card(text)
    index = front.get("model-index")
    entries = [e for e in index if isinstance(e, dict)] if isinstance(index, list) else []
    if not entries:
        entries = [{"name": model_name, "results": []}]
    entries[0]["results"] = merge_model_index(entries[0].get("results") or [], results)
    front["model-index"] = entries
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip() + "\n---\n" + body
