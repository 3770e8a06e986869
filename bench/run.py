"""`make bench`: every benchmark, one markdown table, written to bench/RESULTS.md with the machine it ran on.

    python bench/run.py [--quick] [--runs 3] [--only startup,loss,align,real,merge,export,eval,judge,concurrency]
                        [--output FILE]

Each command is measured in its own child process (wall time; peak RSS from os.wait4's ru_maxrss), ours and the
reference alternating, and each figure is the median of `--runs` runs. `--quick` shrinks the models and runs each
command once, for development; it writes no results file unless `--output` is given.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
from pathlib import Path

from measure import BENCH, Row, Settings, machine

# Cheapest first, so a broken environment shows up early.
GROUPS = {
    "startup": "startup",
    "loss": "loss_cost",
    "align": "align_train",
    "real": "real_train",
    "merge": "merge_vs_peft",
    "export": "export_vs_llamacpp",
    "eval": "eval_prefs_vs_trl",
    "judge": "judge_answers",
    "concurrency": "judge_concurrency",
}


def number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    if unit == "ms":
        return f"{value:.2f} ms"
    return f"{value:.2f} s" if round(value, 2) < 10 else f"{value:.1f} s"


def table(rows: list[Row]) -> str:
    lines = [
        "| task | metric | ours | reference | ratio | target | |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        target = f"≤ {row.target:g}" if row.target is not None else ""
        verdict = row.verdict + (f" ({row.note})" if row.note else "") if row.verdict or row.note else ""
        lines.append(
            f"| {row.task} | {row.metric} | {number(row.ours, row.unit)} | {number(row.reference, row.unit)} "
            f"| {row.ratio:.2f} | {target} | {verdict} |"
        )
    return "\n".join(lines)


def results_file(rows: list[Row], settings: Settings, seconds: float, load_before: str) -> str:
    info = machine()
    return "\n".join(
        [
            "# Benchmark results",
            "",
            "Written by `make bench` (`bench/run.py`); see [README.md](README.md) for what each row runs. Ratios are",
            "ours / reference: below 1 means `discopop` is faster or smaller. Each figure is the median of "
            f"{settings.runs} alternating runs (start-up: {settings.startup_runs}), each command in its own process.",
            "",
            f"- machine: {info['cpu']}, {info['memory']} RAM; {info['os']}",
            f"- versions: {info['versions']}",
            f"- date: {info['date']}; the whole run took {seconds / 60:.1f} min",
            f"- load average (1 / 5 / 15 min) before the run: {load_before}; after: {info['load']}",
            "",
            table(rows),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small models, one run each; no results file.")
    parser.add_argument("--runs", type=int, help="Runs per command (default 3, or 1 with --quick).")
    parser.add_argument("--only", help=f"Comma-separated groups among {', '.join(GROUPS)}.")
    parser.add_argument("--workdir", type=Path, help="Where models and outputs go (default: $TMPDIR/discopop-bench).")
    parser.add_argument("--output", type=Path, help="Results file (default bench/RESULTS.md; none with --quick).")
    args = parser.parse_args()

    settings = Settings(runs=args.runs or (1 if args.quick else 3), quick=args.quick)
    if args.workdir:
        settings.workdir = args.workdir
    settings.workdir.mkdir(parents=True, exist_ok=True)
    names = args.only.split(",") if args.only else list(GROUPS)
    unknown = [name for name in names if name not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {unknown}; choose from {', '.join(GROUPS)}")

    load_before = machine()["load"]
    started = time.perf_counter()
    rows: list[Row] = []
    for name in names:
        group_started = time.perf_counter()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        rows += importlib.import_module(GROUPS[name]).rows(settings)
        print(f"bench: {name} done in {time.perf_counter() - group_started:.0f} s", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - started

    print(table(rows))
    output = args.output or (None if args.quick else BENCH / "RESULTS.md")
    if output is not None:
        output.write_text(results_file(rows, settings, seconds, load_before), encoding="utf-8")
        print(f"\nwritten: {output} ({seconds / 60:.1f} min in all)", file=sys.stderr)


if __name__ == "__main__":
    main()
