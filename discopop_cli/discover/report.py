"""`discopop discover report DIR`: the leaderboard (a table, or `--json`) and a PNG of fitness by generation.

The plot goes to `DIR/fitness.png` unless `--plot FILE` says otherwise; the one inside DIR is the report's own and
is redrawn on every call, a FILE elsewhere that exists is replaced only with `--force`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from discopop_cli.core.console import out
from discopop_cli.core.errors import UserError
from discopop_cli.core.outputs import check_destination, png_metadata, real, staged_file
from discopop_cli.discover import archive

PLOT = "fitness.png"


def leaderboard(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scored candidates best first, then the rest in generation order; one row each, without code."""
    ranked = archive.best(entries)
    rows = []
    for rank, entry in enumerate(ranked, 1):
        rows.append(_row(entry, rank))
    rest = [e for e in entries if e not in ranked]
    rows += [_row(entry, None) for entry in sorted(rest, key=lambda e: e["generation"])]
    return rows


def _row(entry: dict[str, Any], rank: int | None) -> dict[str, Any]:
    metrics = entry.get("metrics", {})
    return {
        "rank": rank,
        "id": entry["id"],
        "generation": entry["generation"],
        "name": entry.get("name", ""),
        "origin": entry.get("origin", ""),
        "status": entry.get("status"),
        "fitness": entry.get("fitness"),
        "reward_margin": metrics.get("reward_margin"),
        "stage": entry.get("stage"),
        "reason": entry.get("reason", ""),
    }


def run_report(folder: Path, *, as_json: bool, plot: Path | None, force: bool) -> None:
    entries = archive.require_archive(folder)
    target = plot or folder / PLOT
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise UserError(f"--plot {plot}: the plot is a PNG; give a file name ending in .png")
        if real(plot) != real(folder / PLOT):  # the report's own plot in DIR is redrawn on every call
            check_destination(plot, force=force, what="--plot file")
    rows = leaderboard(entries)
    _plot(entries, target)
    if as_json:
        out.print_json(json.dumps({"folder": str(folder), "plot": str(target), "candidates": rows}))
        return
    scored = [row for row in rows if row["rank"] is not None]
    table = Table(title=f"{folder}: {len(scored)} of {len(entries)} candidate(s) scored")
    for column in ("rank", "id", "fitness", "margin"):
        table.add_column(column, no_wrap=True, justify="left" if column == "id" else "right")
    table.add_column("name", overflow="fold")
    table.add_column("origin", overflow="fold")
    for row in scored:
        table.add_row(
            str(row["rank"]),
            row["id"],
            f"{row['fitness']:.4f}",
            f"{row['reward_margin']:.4f}" if row["reward_margin"] is not None else "",
            escape(str(row["name"])),
            escape(str(row["origin"])),
        )
    out.print(table)
    for row in rows:
        if row["rank"] is None:
            what = f"{row['id']} ({escape(str(row['name'] or row['origin']))})"
            out.print(f"{what}: {row['status']} at {row['stage']}: {escape(str(row['reason']))}", soft_wrap=True)
    out.print(f"plot: {target}", highlight=False)


def _plot(entries: list[dict[str, Any]], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [e for e in entries if e.get("status") == "scored"]
    refused = [e for e in entries if e.get("status") != "scored"]
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    if scored:
        axes.scatter([e["generation"] for e in scored], [e["fitness"] for e in scored], label="scored", zorder=3)
        best, running = [], float("-inf")
        for entry in sorted(entries, key=lambda e: e["generation"]):
            if entry.get("status") == "scored":
                running = max(running, float(entry["fitness"]))
            best.append((entry["generation"], running if running > float("-inf") else None))
        points = [(g, f) for g, f in best if f is not None]
        axes.step([g for g, _ in points], [f for _, f in points], where="post", label="best so far", color="tab:green")
    if refused:
        floor = min([float(e["fitness"]) for e in scored] + [0.0])
        axes.scatter(
            [e["generation"] for e in refused],
            [floor] * len(refused),
            marker="x",
            color="tab:red",
            label="refused or failed",
            zorder=3,
        )
    axes.set_xlabel("generation")
    axes.set_ylabel("fitness")
    axes.set_title("discopop discover: fitness by generation")
    axes.grid(alpha=0.3)
    if entries:
        axes.legend(loc="best")
    with staged_file(target) as partial:
        figure.savefig(partial, format="png", metadata=png_metadata())
    plt.close(figure)
