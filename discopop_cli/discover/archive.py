"""`DIR/archive.jsonl`: one JSON line per candidate, scored or refused, only ever appended to.

Each line is written whole and flushed to disk before the next candidate starts, so an interrupted run leaves
every finished candidate on record and `--resume` starts after the last one. A line cut short by a crash while it
was being written is skipped when read (and said so), never rewritten.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from discopop_cli.core.console import warn
from discopop_cli.core.errors import UserError

ARCHIVE = "archive.jsonl"
SETTINGS = "discover.json"


def read(folder: Path) -> list[dict[str, Any]]:
    """Every candidate of the archive; a damaged line is refused naming its number, except a last line cut short
    (no newline after it: a crash while it was written), which is skipped with a warning."""
    path = folder / ARCHIVE
    if not path.is_file():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            if number == len(lines):  # no newline after it: cut short while being written
                warn(f"{path}: line {number} is not complete JSON (an interrupted write?); skipped")
                continue
            what = "is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "is not valid JSON"
            raise UserError(f"{path} line {number} {what}; restore the archive or remove that line") from None
        problem = _problem(entry)
        if problem:
            raise UserError(f"{path} line {number} {problem}; restore the archive or remove that line")
        entries.append(entry)
    return entries


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _problem(entry: Any) -> str | None:
    """What keeps one archive line from being a candidate, else None."""
    if not isinstance(entry, dict):
        return f"holds a JSON {type(entry).__name__}, not one candidate (one JSON object per line)"
    if not isinstance(entry.get("id"), str) or not isinstance(entry.get("generation"), int):
        return "has no candidate id and generation number"
    if entry.get("status") == "scored":
        if not _is_number(entry.get("fitness")):
            return f"has a fitness that is not a finite number ({str(entry.get('fitness'))[:40]!r})"
        metrics = entry.get("metrics", {})
        if not isinstance(metrics, dict):
            return "has metrics that are not a mapping"
        margin = metrics.get("reward_margin")
        if margin is not None and not _is_number(margin):
            return f"has a reward margin that is not a number ({str(margin)[:40]!r})"
    return None


def append(folder: Path, entry: dict[str, Any]) -> None:
    path = folder / ARCHIVE
    line = json.dumps(entry, ensure_ascii=False, sort_keys=False)
    with path.open("ab") as handle:
        if handle.tell() and not _ends_with_newline(path):
            handle.write(b"\n")  # after a cut-short line: start a fresh one rather than glue onto it
        handle.write(line.encode("utf-8") + b"\n")
        handle.flush()
        os.fsync(handle.fileno())


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def require_archive(folder: Path) -> list[dict[str, Any]]:
    """The entries of an existing discovery folder, for `report` and `export`."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; pass the --out folder of a `discopop discover` run")
    if not (folder / ARCHIVE).is_file():
        raise UserError(f"{folder} has no {ARCHIVE}; pass the --out folder of a `discopop discover` run")
    return read(folder)


def best(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scored entries, best first: fitness, then reward margin, then the earlier generation."""
    scored = [e for e in entries if e.get("status") == "scored" and e.get("fitness") is not None]
    return sorted(
        scored,
        key=lambda e: (-float(e["fitness"]), -float(e.get("metrics", {}).get("reward_margin") or 0.0), e["generation"]),
    )
