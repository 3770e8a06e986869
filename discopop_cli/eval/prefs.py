"""`discopop eval prefs MODEL... --data D [--ref REF] [--recipe R]`: preference metrics on held-out pairs.

With a reference model the metrics are TRL's, by name and by number: `rewards/chosen`, `rewards/rejected`,
`rewards/accuracies`, `rewards/margins`, `logps/chosen`, `logps/rejected`. Like `DPOTrainer.evaluate()`, each is the
mean over batches of the batch mean (TRL's `per_device_eval_batch_size` is `--batch-size`), so the figures equal
TRL's on the same data, beta, batch size and dtype. Without a reference the log-probs and two reference-free
accuracies remain: how often `logp(chosen) > logp(rejected)`, summed over the completion and per token
(length-normalised, which a longer rejected answer cannot win by length alone).

The reference is scored once and shared by every model; a model that is the reference itself is not run twice.
`score_models` is the library entry point (issue 17's `discover` calls it); `run_prefs` the command.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from discopop_cli.core.console import notice, out
from discopop_cli.core.errors import UserError
from discopop_cli.eval import logps as lp
from discopop_cli.eval import models
from discopop_cli.eval.pairs import load_rows, plan_data, tokenize_pairs

TRL_METRICS = [
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
]
REF_FREE_METRICS = ["ref_free/accuracies", "ref_free/accuracies_per_token"]
DEFAULT_BETA = 0.1  # DPOConfig's default
DEFAULT_MAX_LENGTH = 1024  # DPOConfig's default


def _batch_means(values: Any, batch_size: int) -> float:
    """TRL's aggregation: each eval batch's mean (float32, as `.item()` returns it), then the mean of those."""
    means = [values[i : i + batch_size].mean().item() for i in range(0, len(values), batch_size)]
    return sum(means) / len(means)


def metrics_for(
    policy: lp.PairLogps, ref: lp.PairLogps | None, tokens: tuple[Any, Any], *, beta: float, batch_size: int
) -> dict[str, float]:
    """The numbers of one model: TRL's (rewards need the reference) and the reference-free accuracies."""
    chosen_tokens, rejected_tokens = tokens
    result: dict[str, float] = {}
    if ref is not None:
        chosen_rewards = beta * (policy.chosen - ref.chosen)
        rejected_rewards = beta * (policy.rejected - ref.rejected)
        result["rewards/chosen"] = _batch_means(chosen_rewards, batch_size)
        result["rewards/rejected"] = _batch_means(rejected_rewards, batch_size)
        result["rewards/accuracies"] = _batch_means((chosen_rewards > rejected_rewards).float(), batch_size)
        result["rewards/margins"] = _batch_means(chosen_rewards - rejected_rewards, batch_size)
    result["logps/chosen"] = _batch_means(policy.chosen, batch_size)
    result["logps/rejected"] = _batch_means(policy.rejected, batch_size)
    # Reference-free: over pairs (no batch structure); a tie counts as wrong, as TRL's strict `>` does.
    result["ref_free/accuracies"] = (policy.chosen > policy.rejected).float().mean().item()
    per_token_chosen = policy.chosen / chosen_tokens.clamp(min=1)
    per_token_rejected = policy.rejected / rejected_tokens.clamp(min=1)
    result["ref_free/accuracies_per_token"] = (per_token_chosen > per_token_rejected).float().mean().item()
    return result


def score_models(
    model_paths: Sequence[str | Path],
    pairs: Any,
    *,
    ref: str | Path | None = None,
    beta: float = DEFAULT_BETA,
    batch_size: int = 8,
    dtype: str = "auto",
    max_length: int | None = DEFAULT_MAX_LENGTH,
    max_prompt_length: int | None = None,
    tokenizer: Any = None,
    chat_template: str | None = None,
    insert_empty_system: bool = False,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Preference metrics of each model on `pairs`, as plain floats: `{model: {metric: value, ..., "pairs": n}}`.

    `pairs` is a `datasets.Dataset` or a list of rows with `chosen`/`rejected` (and optionally `prompt`), in TRL's
    conversational or plain-text form. With `ref`, TRL's `rewards/*` metrics are included. The tokenizer (and chat
    template) is `tokenizer`'s, else the first model's; every model and the reference must share its vocabulary (a loaded
    tokenizer passed as `tokenizer` is used as it is, its vocabulary already compared).
    """
    names = [str(m) for m in model_paths]
    models.check_models(names, ref=str(ref) if ref is not None else None)
    rows = pairs
    if isinstance(pairs, list):
        from datasets import Dataset

        rows = Dataset.from_list(pairs)
    if tokenizer is None or isinstance(tokenizer, str | Path):
        tok = models.shared_tokenizer(names, str(ref) if ref is not None else None, tokenizer, chat_template)
    else:  # loaded by the caller, who has compared the vocabularies (run_prefs does)
        tok = tokenizer
    if insert_empty_system:  # the recipe's auto_insert_empty_system_msg, as `align` applies it
        from discopop_cli.data.sources import insert_empty_system_message

        rows = insert_empty_system_message(rows, tok.chat_template)
    examples = tokenize_pairs(rows, tok, max_length=max_length, max_prompt_length=max_prompt_length)
    batches = lp.make_batches(examples, tok, batch_size=batch_size, max_length=max_length)
    tokens = lp.completion_tokens(batches)
    torch_dtype = lp.resolve_dtype(dtype)
    # One forward pass per distinct model: the reference is scored once, and not again when it is also listed.
    keys = {name: models.identity(name) for name in names}
    sources: dict[str, str] = {}  # identity -> the name to load it by, the reference first
    for name in ([str(ref)] if ref is not None else []) + names:
        sources.setdefault(models.identity(name), name)
    scored: dict[str, lp.PairLogps] = {}
    with _progress(progress, len(batches) * len(sources)) as advance:
        for key in sources:
            model = lp.load_model(sources[key], torch_dtype)
            scored[key] = lp.score(model, batches, advance)
            del model
    ref_logps = scored[models.identity(str(ref))] if ref is not None else None
    results = {}
    for name in names:
        values = metrics_for(scored[keys[name]], ref_logps, tokens, beta=beta, batch_size=batch_size)
        results[name] = {**values, "pairs": float(len(examples))}
    return results


class _progress:
    """A rich progress bar over batches (stderr), or nothing; yields the function that advances it."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total, self.bar = enabled, total, None

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from discopop_cli.core.console import err

        self.bar = Progress(
            TextColumn("scoring pairs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
        )
        self.bar.start()
        task = self.bar.add_task("batches", total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def run_prefs(
    model_paths: list[str],
    *,
    data: list[str],
    split: str | None,
    ref: str | None,
    recipe: Path | None,
    beta: float | None,
    batch_size: int,
    dtype: str,
    max_length: int | None,
    as_json: bool,
    save: bool,
) -> None:
    """The command: check everything, score, print a table (or JSON), keep the results beside each model."""
    from discopop_cli.eval import results as saved

    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    if beta is not None and beta <= 0:
        raise UserError(f"--beta must be positive, got {beta}; TRL's default is {DEFAULT_BETA}")
    lp.resolve_dtype(dtype)
    plan = plan_data(data, split, recipe)
    if ref is None and plan.reference is not None:
        ref = plan.reference
        notice(f"reference: {ref} (the recipe's model_name_or_path)")
    beta = beta if beta is not None else (plan.beta or DEFAULT_BETA)
    max_length = max_length if max_length is not None else (plan.max_length or DEFAULT_MAX_LENGTH)
    models.check_models(model_paths, ref=ref)
    if save:
        saved.check_can_save(model_paths)
    # The vocabularies are compared before any dataset or weights load.
    tokenizer = models.shared_tokenizer(model_paths, ref, plan.tokenizer, plan.chat_template)
    rows = load_rows(plan)
    results = score_models(
        model_paths,
        rows,
        ref=ref,
        beta=beta,
        batch_size=batch_size,
        dtype=dtype,
        max_length=max_length,
        max_prompt_length=plan.max_prompt_length,
        tokenizer=tokenizer,
        insert_empty_system=plan.insert_system,
        progress=not as_json,
    )
    setting = {"dataset": plan.label, "split": plan.split, "reference": ref, "beta": beta, "batch_size": batch_size}
    if as_json:
        out.print_json(json.dumps({"settings": setting, "models": results}))
    else:
        _print_table(results, ref, setting)
    if save:
        for name, values in results.items():
            written = saved.save_prefs(name, values, setting)
            if written is not None and not as_json:
                notice(f"results kept in {written} (eval_results.json, README.md model-index)")


def _print_table(results: dict[str, dict[str, float]], ref: str | None, setting: dict[str, Any]) -> None:
    from rich.table import Table

    pairs = int(next(iter(results.values()))["pairs"])
    against = f"reference {ref}, beta {setting['beta']}" if ref else "no reference"
    table = Table(title=f"{setting['dataset']} [{setting['split']}]: {pairs} pairs, {against}")
    table.add_column("metric")
    for name in results:
        table.add_column(Path(name).name or name, justify="right")
    metrics = (TRL_METRICS if ref else TRL_METRICS[4:]) + REF_FREE_METRICS
    for metric in metrics:
        cells = []
        for name, values in results.items():
            is_ref = ref is not None and Path(name).resolve() == Path(ref).resolve()
            cells.append("(reference)" if is_ref and metric.startswith("rewards/") else f"{values[metric]:.4f}")
        table.add_row(metric, *cells)
    out.print(table)
