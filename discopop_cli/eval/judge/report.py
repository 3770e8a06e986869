"""The results of a judge run: one JSON document, the tables printed from it, and the bar chart drawn from it."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from discopop_cli.eval.judge import mtbench, stats, verdicts
from discopop_cli.eval.judge.prompts import MT_BENCH, PromptSet
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


@dataclass(frozen=True)
class Game:
    """One comparison of a candidate with the reference: a prompt, or one turn of an MT-Bench question."""

    id: str
    category: str
    turn: int
    keys: tuple[str, str]  # the judge calls with the candidate shown first, then second
    length_diff: int  # characters, candidate minus reference


def _games(c: str, ref: str, prompt_set: PromptSet, answers: dict[str, Any]) -> list[Game]:
    games = []
    for p in prompt_set.prompts:
        mine, theirs = _turns(answers[c][p.id]), _turns(answers[ref][p.id])
        for turn in range(1, len(p.all_turns) + 1):
            if prompt_set.kind == MT_BENCH:
                keys = tuple(mtbench.pair_key(c, ref, p.id, turn, order) for order in ("AB", "BA"))
            else:
                keys = tuple(verdicts.pair_key(c, ref, p.id, order) for order in ("AB", "BA"))
            diff = len(mine[turn - 1]) - len(theirs[turn - 1])
            games.append(Game(p.id, p.category, turn, keys, diff))  # type: ignore[arg-type]
    return games


def _turns(answer: dict[str, Any]) -> list[str]:
    return list(answer.get("turns") or [answer["answer"]])


def _pairwise(c: str, ref: str, prompt_set: PromptSet, answers: dict[str, Any], cache: JsonlCache) -> dict[str, Any]:
    outcomes, diffs, consistent = [], [], 0
    wins = {1.0: 0, 0.5: 0, 0.0: 0}
    categories: dict[str, list[float]] = defaultdict(list)
    turns: dict[int, list[float]] = defaultdict(list)
    by_game: dict[str, float] = {}
    games = _games(c, ref, prompt_set, answers)
    for game in games:
        first, second = game.keys
        if first not in cache.done or second not in cache.done:
            continue
        v1, v2 = cache.done[first]["value"], cache.done[second]["value"]
        outcome = verdicts.pair_outcome(v1, v2)
        consistent += outcome != 0.5 or (v1 == "tie" and v2 == "tie")
        wins[outcome] += 1
        outcomes.append(outcome)
        categories[game.category].append(outcome)
        turns[game.turn].append(outcome)
        diffs.append(game.length_diff)
        by_game[game.id if prompt_set.kind != MT_BENCH else f"{game.id}:{game.turn}"] = outcome
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
        **({"turns": _turn_cells(turns)} if prompt_set.kind == MT_BENCH else {}),
        "outcomes": by_game,
        "failed": _failures(cache, [key for game in games for key in game.keys]),
    }


def _turn_cells(turns: dict[int, list[float]]) -> list[dict[str, Any]]:
    return [{"turn": turn, **stats.mean_estimate(values).as_dict()} for turn, values in sorted(turns.items())]


def _single(model: str, prompt_set: PromptSet, cache: JsonlCache) -> dict[str, Any]:
    scores, categories, turns = [], defaultdict(list), defaultdict(list)
    keys = []
    for p in prompt_set.prompts:
        for turn in range(1, len(p.all_turns) + 1):
            if prompt_set.kind == MT_BENCH:
                key = mtbench.grade_key(model, p.id, turn)
            else:
                key = verdicts.grade_key(model, p.id)
            keys.append(key)
            record = cache.done.get(key)
            if record is not None:
                scores.append(float(record["value"]))
                categories[p.category].append(float(record["value"]))
                turns[turn].append(float(record["value"]))
    return {
        "model": model,
        "score": stats.mean_estimate(scores).as_dict(),
        **({"turns": _turn_cells(turns)} if prompt_set.kind == MT_BENCH else {}),
        "categories": [{"category": k, **stats.mean_estimate(v).as_dict()} for k, v in categories.items()],
        "failed": _failures(cache, keys),
    }


def _mean_length(answers: dict[str, Any]) -> float:
    lengths = [len(a["answer"]) for a in answers.values()]
    return sum(lengths) / len(lengths) if lengths else 0.0


def results(
    mode: str,
    judge: str,
    prompt_set: PromptSet,
    answers: dict[str, dict[str, Any]],
    cache: JsonlCache,
    reference: str | None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "mode": mode,
        "protocol": prompt_set.kind,
        "judge": judge,
        "prompts": len(prompt_set.prompts),
        "judgements_file": str(cache.path),
    }
    if mode == verdicts.PAIRWISE:
        assert reference is not None
        doc["reference"] = reference
        doc["reference_mean_length"] = _mean_length(answers[reference])
        doc["models"] = [_pairwise(c, reference, prompt_set, answers, cache) for c in answers if c != reference]
    else:
        models = [_single(m, prompt_set, cache) for m in answers]
        if prompt_set.kind == MT_BENCH:  # show_result's order: best first
            models.sort(key=lambda m: -m["score"]["value"] if m["score"]["n"] else float("inf"))
        doc["models"] = models
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
    if doc.get("protocol") == MT_BENCH:
        title = f"MT-Bench ({doc['prompts']} questions, both turns) " + title
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
    elif doc.get("protocol") == MT_BENCH:
        # FastChat's show_result: the mean score of each turn, then of both, best model first.
        table.add_column("model", min_width=12, overflow="fold")
        for column in ("First turn", "Second turn", "Average", "graded"):
            table.add_column(column, justify="right")
        for m in doc["models"]:
            turns = {cell["turn"]: _cell(cell, percent=False) for cell in m["turns"]}
            cells = [turns.get(1, "-"), turns.get(2, "-"), _cell(m["score"], percent=False), str(m["score"]["n"])]
            table.add_row(*(escape(cell) for cell in [m["model"], *cells]))
    else:
        table.add_column("model", min_width=12, overflow="fold")
        table.add_column("mean rating", justify="right")
        table.add_column("graded", justify="right")
        for m in doc["models"]:
            table.add_row(escape(m["model"]), escape(_cell(m["score"], percent=False)), str(m["score"]["n"]))
    out.print(table)
    if doc.get("alpaca_eval"):
        out.print(_alpaca_eval_table(doc))
    out.print(_category_table(doc))
    failed = [(m["model"], f) for m in doc["models"] for f in m["failed"]]
    for _, failure in failed:
        warn(f"not judged: {failure['item']}: {failure['error']}")
    if failed:
        warn(f"{len(failed)} judgement(s) missing from these figures; run the same command with --resume to retry them")


def _alpaca_eval_table(doc: dict[str, Any]) -> Any:
    """alpaca_eval's figures (its annotator, one order per instruction; its GLM) beside the project's."""
    from rich.markup import escape
    from rich.table import Table

    ours = {m["model"]: m for m in doc["models"]}
    annotator = doc["alpaca_eval"][0]["annotator"]
    notes = sorted({f["note"] for f in doc["alpaca_eval"] if f["note"]})
    table = Table(title=escape(f"alpaca_eval's own figures (annotator {annotator}) beside ours"))
    table.caption = escape(" ".join([f"vs {doc['reference']}; its annotator asks once per instruction.", *notes]))
    table.add_column("model", min_width=12, overflow="fold")
    for column in ("its win rate %", "its LC %", "annotated", "our win rate %", "our LC %"):
        table.add_column(column, justify="right")
    for figure in doc["alpaca_eval"]:
        mine = ours[figure["model"]]
        lc = f"{figure['lc_win_rate']:.1f}" if figure["lc_win_rate"] is not None else "-"
        plain = f"{figure['win_rate']:.1f}" if figure["win_rate"] is not None else "-"
        cells = [plain, lc, str(figure["n"])]
        cells += [f"{100 * mine['win_rate']['value']:.1f}", f"{100 * mine['lc_win_rate']['value']:.1f}"]
        table.add_row(*(escape(cell) for cell in [figure["model"], *cells]))
    return table


def _category_table(doc: dict[str, Any]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    pairwise = doc["mode"] == verdicts.PAIRWISE
    counted = "(turns)" if doc.get("protocol") == MT_BENCH else "(prompts)"  # MT-Bench: one figure per turn
    table = Table(title=("win rate %" if pairwise else "mean rating") + f" by category [95% interval] {counted}")
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
