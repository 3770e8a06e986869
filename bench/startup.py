"""CLI start-up: `discopop --help` and every `discopop CMD --help` against TRL's own `trl dpo --help`."""

from __future__ import annotations

from measure import VENV_BIN, Row, Settings, alternate, measure, med_rss, med_seconds

REFERENCE = [str(VENV_BIN / "trl"), "dpo", "--help"]
LIMIT_SECONDS = 0.5  # what a user waits for help text before it feels slow


def our_commands() -> dict[str, list[str]]:
    """`discopop --help` and the help of every command and sub-command the CLI registers."""
    from discopop_cli.cli import command_paths

    paths = [(), *command_paths()]
    return {
        f"`{' '.join(('discopop', *path, '--help'))}`": [str(VENV_BIN / "discopop"), *path, "--help"] for path in paths
    }


def rows(settings: Settings) -> list[Row]:
    commands = {**our_commands(), "reference": REFERENCE}
    for command in commands.values():  # warm-up: bytecode caches and the page cache, not measured
        measure(command)
    runs = settings.startup_runs
    samples = alternate({name: (lambda c=command: measure(c)) for name, command in commands.items()}, runs)
    reference = samples.pop("reference")
    result = []
    for name, ours in samples.items():
        task = f"start-up: {name} vs `trl dpo --help`"
        seconds = med_seconds(ours)
        limit = f"{'under' if seconds < LIMIT_SECONDS else 'OVER'} {LIMIT_SECONDS} s"
        result.append(Row(task, "wall time", seconds, med_seconds(reference), 0.2, "s", note=limit))
        result.append(Row(task, "peak RSS", med_rss(ours), med_rss(reference), None, "MiB"))
    return result
