"""The results of a judge run: one JSON document, the tables printed from it, and the bar chart drawn from it."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from discopop_cli.eval.judge import stats, verdicts
from discopop_cli.eval.judge.prompts import Prompt
from discopop_cli.eval.judge.store import JsonlCache

INTERVALS = "[low, high]: 95% bootstrap intervals over prompts."
PAIR_NOTES = (
    " LC: length-controlled. consistent: prompts whose two orders agreed. length: mean characters, vs the reference's."
)
CLAIM = " The intervals do not measure how far the judge can be trusted (a small local judge is not GPT-4)."


def _failures(cache: JsonlCache, keys: list[str]) -> list[dict[str, str]]:
    found = []
    for key in keys:
        if key in cache.done:
            continue
        record = cache.failed.get(key)
        found.append({"item": record["item"] if record else key, "error": record["error"] if record else "not judged"})
    return found


def _pairwise(c: str, ref: str, prompts: list[Prompt], answers: dict[str, Any], cache: JsonlCache) -> dict[str, Any]:
    outcomes, diffs, consistent = [], [], 0
    wins = {1.0: 0, 0.5: 0, 0.0: 0}
    categories: dict[str, list[float]] = defaultdict(list)
    keys = []
    for p in prompts:
        first, second = verdicts.pair_key(c, ref, p.id, "AB"), verdicts.pair_key(c, ref, p.id, "BA")
        keys += [first, second]
        if first not in cache.done or second not in cache.done:
            continue
        v1, v2 = cache.done[first]["value"], cache.done[second]["value"]
        outcome = verdicts.pair_outcome(v1, v2)
        consistent += outcome != 0.5 or (v1 == "tie" and v2 == "tie")
        wins[outcome] += 1
        outcomes.append(outcome)
        categories[p.category].append(outcome)
        diffs.append(len(answers[c][p.id]["answer"]) - len(answers[ref][p.id]["answer"]))
    n = len(outcomes)
    return {
        "model": c,
        "win_rate": stats.mean_estimate(outcomes).as_dict(),
        "lc_win_rate": stats.lc_estimate(outcomes, diffs).as_dict(),
        "wins": wins[1.0],
        "ties": wins[0.5],
        "losses": wins[0.0],
        "order_consistency": consistent / n if n else float("nan"),
        "mean_length": _mean_length(answers[c]),
        "categories": [
            {"category": name, **stats.mean_estimate(values).as_dict()} for name, values in categories.items()
        ],
        "failed": _failures(cache, keys),
    }


def _single(model: str, prompts: list[Prompt], cache: JsonlCache) -> dict[str, Any]:
    scores, categories = [], defaultdict(list)
    for p in prompts:
        record = cache.done.get(verdicts.grade_key(model, p.id))
        if record is not None:
            scores.append(float(record["value"]))
            categories[p.category].append(float(record["value"]))
    return {
        "model": model,
        "score": stats.mean_estimate(scores).as_dict(),
        "categories": [{"category": k, **stats.mean_estimate(v).as_dict()} for k, v in categories.items()],
        "failed": _failures(cache, [verdicts.grade_key(model, p.id) for p in prompts]),
    }


def _mean_length(answers: dict[str, Any]) -> float:
    lengths = [len(a["answer"]) for a in answers.values()]
    return sum(lengths) / len(lengths) if lengths else 0.0


def results(
    mode: str,
    judge: str,
    prompts: list[Prompt],
    answers: dict[str, dict[str, Any]],
    cache: JsonlCache,
    reference: str | None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {"mode": mode, "judge": judge, "prompts": len(prompts), "judgements_file": str(cache.path)}
    if mode == verdicts.PAIRWISE:
        assert reference is not None
        doc["reference"] = reference
        doc["reference_mean_length"] = _mean_length(answers[reference])
        doc["models"] = [_pairwise(c, reference, prompts, answers, cache) for c in answers if c != reference]
    else:
        doc["models"] = [_single(m, prompts, cache) for m in answers]
    return doc


def _cell(estimate: dict[str, Any], percent: bool = True) -> str:
    """'61.3 [48.8, 73.8]': a win rate in percent (as the paper and AlpacaEval give them), or a rating."""
    if estimate["n"] == 0:
        return "-"
    scale, digits = (100.0, 1) if percent else (1.0, 2)
    value, low, high = (estimate[k] * scale for k in ("value", "low", "high"))
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def show(doc: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    from rich.markup import escape
    from rich.table import Table

    from discopop_cli.core.console import out, warn

    pairwise = doc["mode"] == verdicts.PAIRWISE
    title = f"vs {doc['reference']}, judged by {doc['judge']}" if pairwise else f"graded 1-10 by {doc['judge']}"
    table = Table(title=escape(title), caption=escape(INTERVALS + (PAIR_NOTES if pairwise else "") + CLAIM))
    if pairwise:
        table.add_column("model", min_width=12, overflow="fold")
        for column in ("win rate %", "LC win rate %", "W/T/L", "consistent", "length"):
            table.add_column(column, justify="right")
        for m in doc["models"]:
            wtl = f"{m['wins']}/{m['ties']}/{m['losses']}"
            consistency = f"{m['order_consistency']:.0%}" if m["win_rate"]["n"] else "-"
            lengths = f"{m['mean_length']:.0f} vs {doc['reference_mean_length']:.0f}"
            cells = [_cell(m["win_rate"]), _cell(m["lc_win_rate"]), wtl, consistency, lengths]
            table.add_row(*(escape(cell) for cell in [m["model"], *cells]))
    else:
        table.add_column("model", min_width=12, overflow="fold")
        table.add_column("mean rating", justify="right")
        table.add_column("graded", justify="right")
        for m in doc["models"]:
            table.add_row(escape(m["model"]), escape(_cell(m["score"], percent=False)), str(m["score"]["n"]))
    out.print(table)
    out.print(_category_table(doc))
    failed = [(m["model"], f) for m in doc["models"] for f in m["failed"]]
    for _, failure in failed:
        warn(f"not judged: {failure['item']}: {failure['error']}")
    if failed:
        warn(f"{len(failed)} judgement(s) missing from these figures; run the same command with --resume to retry them")


def _category_table(doc: dict[str, Any]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    pairwise = doc["mode"] == verdicts.PAIRWISE
    table = Table(title=("win rate %" if pairwise else "mean rating") + " by category [95% interval] (prompts)")
    table.add_column("category", min_width=8, overflow="fold")
    names: list[str] = []
    for m in doc["models"]:
        table.add_column(escape(m["model"]), justify="right")
        names += [c["category"] for c in m["categories"] if c["category"] not in names]
    for name in names:
        row = [name]
        for m in doc["models"]:
            found = next((c for c in m["categories"] if c["category"] == name), None)
            row.append(f"{_cell(found, percent=pairwise)} ({found['n']})" if found else "-")
        table.add_row(*(escape(cell) for cell in row))
    return table


def plot(doc: dict[str, Any], path: Path) -> None:
    """Bars per category (and overall) for each model, with their 95% intervals as error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from discopop_cli.core.outputs import png_metadata, staged_file

    pairwise = doc["mode"] == verdicts.PAIRWISE
    key = "win_rate" if pairwise else "score"
    groups = ["overall"] + (["overall (LC)"] if pairwise else [])
    groups += list(dict.fromkeys(c["category"] for m in doc["models"] for c in m["categories"]))
    fig = Figure(figsize=(max(6.0, 1.1 * len(groups) * max(1, len(doc["models"])) / 1.5), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / max(1, len(doc["models"]))
    for i, m in enumerate(doc["models"]):
        cells = {"overall": m[key], "overall (LC)": m.get("lc_win_rate")}
        cells.update({c["category"]: c for c in m["categories"]})
        values, low, high = [], [], []
        for group in groups:
            cell = cells.get(group) or {"n": 0}
            ok = cell["n"] > 0
            values.append(cell["value"] if ok else 0.0)
            low.append(cell["value"] - cell["low"] if ok else 0.0)
            high.append(cell["high"] - cell["value"] if ok else 0.0)
        xs = [g + (i - (len(doc["models"]) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width, yerr=[low, high], capsize=3, label=m["model"])
    if pairwise:
        ax.axhline(0.5, color="0.5", linewidth=0.8, linestyle="--")
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"win rate vs {doc['reference']}")
    else:
        ax.set_ylim(0, 10)
        ax.set_ylabel("mean rating (1-10)")
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    ax.legend(loc="best", fontsize="small")
    ax.set_title(f"judge: {doc['judge']} (95% bootstrap intervals over {doc['prompts']} prompts)", fontsize="medium")
    with staged_file(path) as partial:
        fig.savefig(partial, format="png", dpi=110, metadata=png_metadata())
