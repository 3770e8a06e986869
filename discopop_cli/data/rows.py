"""Row by row: does each row of a dataset hold what its format needs, in the right types, non-empty?

Pure Python on plain dicts, so the same checks serve a local file read before any model is loaded and a dataset
already loaded through `datasets`. A value is one of two kinds: text (a non-empty string) or a conversation (a
non-empty list of messages, each a mapping with a role and a content). Within one dataset a column keeps the kind
its first good row has: TRL reads the format from the first row, and pyarrow cannot load a column of mixed kinds.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from discopop_cli.core.errors import UserError

TEXT, CONVERSATION = "text", "a conversation (a list of messages)"
# Message keys: the OpenAI/TRL form, and ShareGPT's (`conversations` columns).
_MESSAGE_KEYS = (("role", "content"), ("from", "value"))
# The roles chat templates know, per form; any other ends in a template error or is silently dropped.
_ROLES = {
    "role": ("system", "user", "assistant", "tool", "developer", "function", "ipython"),
    "from": ("system", "human", "gpt", "user", "assistant", "tool", "function_call", "observation", "function"),
}
_ANSWER_ROLES = ("assistant", "gpt")


@dataclass(frozen=True)
class BadRow:
    index: int  # 0-based position among the dataset's rows
    column: str
    problem: str
    line: int | None = None  # the file line, where it differs from the row number

    def where(self) -> str:
        line = f" (line {self.line})" if self.line is not None and self.line != self.index + 1 else ""
        return f"row {self.index + 1}{line}, column '{self.column}'"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", dict: "a mapping"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _message_problem(message: Any, number: int) -> str | None:
    if not isinstance(message, dict):
        return f"message {number} is {_type_name(message)}, not a mapping with 'role' and 'content'"
    for role_key, content_key in _MESSAGE_KEYS:
        if role_key in message or content_key in message:
            role, content = message.get(role_key), message.get(content_key)
            if not isinstance(role, str) or not role.strip():
                return f"message {number} has no '{role_key}' (got {_type_name(role)})"
            if not isinstance(content, str | list):
                return f"message {number} has no '{content_key}' text (got {_type_name(content)})"
            if role not in _ROLES[role_key]:
                known = ", ".join(_ROLES[role_key][:4])
                return f"message {number} has the role {role[:40]!r}, which chat templates do not know (use {known})"
            return None
    return f"message {number} has neither 'role'/'content' nor 'from'/'value' keys (it has {sorted(message)})"


def value_problem(value: Any, kinds: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(problem, kind): what is wrong with one cell, else None and the kind it is."""
    if isinstance(value, str):
        if TEXT not in kinds:
            return f"is text, but this column holds {' or '.join(kinds)}", None
        return ("is an empty string", None) if not value.strip() else (None, TEXT)
    if isinstance(value, list):
        if CONVERSATION not in kinds:
            return f"is a list, but this column holds {' or '.join(kinds)}", None
        if not value:
            return "is an empty list (no messages)", None
        for number, message in enumerate(value, start=1):
            problem = _message_problem(message, number)
            if problem:
                return problem, None
        last = value[-1]
        role, content = last.get("role", last.get("from")), last.get("content", last.get("value"))
        if role in _ANSWER_ROLES and (not content or (isinstance(content, str) and not content.strip())):
            return f"ends with an empty {role} message (message {len(value)}): there is no answer to learn", None
        return None, CONVERSATION
    if value is None:
        return "is empty (null)", None
    return f"is {_type_name(value)} ({value!r}), not {' or '.join(kinds)}", None


@dataclass(frozen=True)
class RowFormat:
    """The columns one dataset format reads, and the kinds each may hold."""

    name: str
    columns: dict[str, tuple[str, ...]]


_EITHER = (TEXT, CONVERSATION)
PAIRS = RowFormat("preference pairs", {"chosen": _EITHER, "rejected": _EITHER})
PAIRS_WITH_PROMPT = RowFormat("preference pairs", {"prompt": _EITHER, "chosen": _EITHER, "rejected": _EITHER})


def row_format(task: str, columns: Iterable[str], text_field: str = "text") -> RowFormat | None:
    """The format a task reads from these columns (sft in select_sft_columns' order), or None if none fits."""
    names = set(columns)
    if task == "align":
        if not {"chosen", "rejected"} <= names:
            return None
        return PAIRS_WITH_PROMPT if "prompt" in names else PAIRS
    if "messages" in names:
        return RowFormat("conversations", {"messages": (CONVERSATION,)})
    if {"prompt", "completion"} <= names:
        return RowFormat("prompt/completion", {"prompt": _EITHER, "completion": _EITHER})
    if "conversations" in names:
        return RowFormat("ShareGPT conversations", {"conversations": (CONVERSATION,)})
    if text_field in names:
        return RowFormat("plain text", {text_field: (TEXT,)})
    return None


def find_bad_rows(rows: Iterable[tuple[int | None, Any]], fmt: RowFormat) -> tuple[int, list[BadRow]]:
    """(row count, bad rows) of `(line, row)` pairs: every row a mapping holding each column of `fmt`, of a kind
    the column takes and the same kind as the column's first good row, and non-empty."""
    kinds: dict[str, str] = {}
    bad: list[BadRow] = []
    count = 0
    for index, (line, row) in enumerate(rows):
        count += 1
        if not isinstance(row, dict):
            bad.append(BadRow(index, next(iter(fmt.columns)), f"the row is {_type_name(row)}, not a JSON object", line))
            continue
        for column, allowed in fmt.columns.items():
            if column not in row:
                bad.append(BadRow(index, column, "is missing", line))
                break
            problem, kind = value_problem(row[column], allowed)
            if problem is None and column in kinds and kind != kinds[column]:
                problem = f"is {kind}, but the first good row's is {kinds[column]}; use one form throughout"
            if problem is not None:
                bad.append(BadRow(index, column, problem, line))
                break
        else:
            if "chosen" in fmt.columns and "rejected" in fmt.columns and row["chosen"] == row["rejected"]:
                bad.append(BadRow(index, "rejected", "is the same as chosen: the pair prefers nothing", line))
                continue
            for column in fmt.columns:
                kinds.setdefault(column, value_problem(row[column], fmt.columns[column])[1] or "")
    return count, bad


def read_rows(path: Path) -> Iterator[tuple[int | None, Any]]:
    """Every row of a local data file as (file line or None, row); an unreadable line is a one-line error."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    yield number, json.loads(text)
                except ValueError as exc:
                    raise UserError(f"dataset {path} line {number} is not valid JSON ({exc}); fix the file") from None
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8") or "[]")
        for row in data if isinstance(data, list) else []:
            yield None, row
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                yield reader.line_num, row
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                yield None, row
