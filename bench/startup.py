"""CLI start-up: `discopop --help` and `discopop align --help` against TRL's own `trl dpo --help`."""

from __future__ import annotations

from measure import VENV_BIN, Row, Settings, alternate, measure, med_rss, med_seconds

REFERENCE = [str(VENV_BIN / "trl"), "dpo", "--help"]
OURS = {
    "`discopop --help`": [str(VENV_BIN / "discopop"), "--help"],
    "`discopop align --help`": [str(VENV_BIN / "discopop"), "align", "--help"],
}


def rows(settings: Settings) -> list[Row]:
    commands = {**OURS, "reference": REFERENCE}
    for command in commands.values():  # warm-up: bytecode caches and the page cache, not measured
        measure(command)
    runs = settings.startup_runs
    samples = alternate({name: (lambda c=command: measure(c)) for name, command in commands.items()}, runs)
    reference = samples.pop("reference")
    result = []
    for name, ours in samples.items():
        task = f"start-up: {name} vs `trl dpo --help`"
        result.append(Row(task, "wall time", med_seconds(ours), med_seconds(reference), 0.2, "s"))
        result.append(Row(task, "peak RSS", med_rss(ours), med_rss(reference), None, "MiB"))
    return result
