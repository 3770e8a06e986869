"""Local datasets checked before any model is loaded: the file exists, has rows, has the columns the command
reads, and every row holds what its format needs (rows.py), or, with `--skip-bad-rows`, the bad rows are counted,
reported and left out of loading. Hub datasets are left to load time.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from discopop_cli.core.console import notice
from discopop_cli.core.errors import UserError, first_line
from discopop_cli.data.rows import BadRow, find_bad_rows, read_rows, row_format
from discopop_cli.data.sources import FILE_BUILDERS, DatasetSpec, DataSpec, split_base

# What each task reads: align needs preference pairs; sft one of its formats (see sft.select_sft_columns).
_PAIR_COLUMNS = {"chosen", "rejected"}


_LIMIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")
_SHOWN = 3  # bad rows named when they are skipped


@dataclass(frozen=True)
class BadRowPolicy:
    """`--skip-bad-rows [--max-bad-rows N|P%]`: drop bad rows instead of refusing, up to a limit per file."""

    skip: bool = False
    max_bad: str = "5%"

    @classmethod
    def from_options(cls, skip: bool, max_bad: str | None) -> BadRowPolicy:
        if max_bad is not None and not skip:
            raise UserError("--max-bad-rows only applies with --skip-bad-rows; add --skip-bad-rows or drop it")
        policy = cls(skip, max_bad if max_bad is not None else cls.max_bad)
        policy.allowed(100)  # refuses a malformed limit now, before anything is read
        return policy

    def allowed(self, rows: int) -> int:
        """How many of a file's `rows` may be bad and dropped."""
        match = _LIMIT.match(self.max_bad)
        if match is None or (not match.group(2) and "." in match.group(1)):
            raise UserError(
                f"--max-bad-rows must be a row count (e.g. 10) or a percentage (e.g. 5%), got {self.max_bad!r}"
            )
        number = float(match.group(1))
        if match.group(2):
            if number > 100:
                raise UserError(f"--max-bad-rows {self.max_bad} is above 100%; give a percentage up to 100%")
            return math.floor(rows * number / 100)
        return int(number)


def looks_like_file(value: str) -> bool:
    """A dataset id that can only be a local path: a data-file name, or a path no Hub id looks like."""
    suffix = Path(value).suffix.lower()
    return suffix in FILE_BUILDERS or value.startswith((".", "/", "~")) or value.count("/") > 1


def _file_preview(path: Path) -> tuple[int | None, list[str] | None]:
    """(rows, columns) of a local data file, read no further than needed; None where the format does not say."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows, first = 0, None
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    rows += 1
                    if first is None:
                        try:
                            first = json.loads(line)
                        except ValueError as exc:
                            raise UserError(
                                f"dataset {path} line {number} is not valid JSON ({exc}); fix the file"
                            ) from None
            if first is not None and not isinstance(first, dict):
                raise UserError(f"dataset {path} holds {type(first).__name__}s, not JSON objects (one row per line)")
            return rows, list(first) if isinstance(first, dict) else None
        if suffix == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8") or "[]")
            except ValueError as exc:
                raise UserError(f"dataset {path} is not valid JSON ({exc}); fix the file") from None
            if isinstance(data, list):
                first = data[0] if data else None
                return len(data), list(first) if isinstance(first, dict) else None
            return None, None
        if suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as handle:
                lines = list(csv.reader(handle))
            return max(len(lines) - 1, 0), lines[0] if lines else []
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path)
            return meta.metadata.num_rows, list(meta.schema_arrow.names)
    except UserError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"dataset {path} cannot be read ({exc}); fix or replace the file") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises its own types for a damaged file
        raise UserError(f"dataset {path} cannot be read ({first_line(exc)}); fix or replace the file") from None
    return None, None


def _check_task_columns(columns: list[str], task: str, text_field: str, where: str) -> None:
    if task == "align":
        missing = _PAIR_COLUMNS - set(columns)
        if missing:
            raise UserError(
                f"align needs columns {sorted(_PAIR_COLUMNS)}; {where} has {columns} (missing {sorted(missing)}); "
                "select or rename them in the recipe's dataset 'columns'"
            )
    elif task == "sft":
        formats = ("messages" in columns, {"prompt", "completion"} <= set(columns), "conversations" in columns)
        if not any(formats) and text_field not in columns:
            raise UserError(
                f"sft needs a 'messages' column (conversations), 'prompt' and 'completion' columns, or a "
                f"'{text_field}' column (plain text; see dataset_text_field); {where} has {columns}"
            )


def _bad_row_line(path: Path, first: BadRow, bad: int, rows: int) -> str:
    return f"dataset {path} {first.where()} {first.problem} ({bad} of {rows} rows are bad)"


def check_rows(
    spec: DatasetSpec, path: Path, columns: list[str], task: str, text_field: str, policy: BadRowPolicy
) -> None:
    """Every row of a local file, checked for the format its columns make; bad rows refused or, with
    --skip-bad-rows, recorded in `spec.drop_rows` for loading to leave out."""
    fmt = row_format(task, columns, text_field)
    if fmt is None:
        return
    rows, bad = find_bad_rows(read_rows(path), fmt)
    if not bad:
        return
    if not policy.skip:
        raise UserError(
            f"{_bad_row_line(path, bad[0], len(bad), rows)}; fix or remove the row, or pass --skip-bad-rows to "
            "leave bad rows out"
        )
    allowed = policy.allowed(rows)
    if len(bad) > allowed or len(bad) == rows:
        raise UserError(
            f"{_bad_row_line(path, bad[0], len(bad), rows)}, more than --max-bad-rows {policy.max_bad} allows "
            f"({allowed}); fix the data, or raise --max-bad-rows if dropping them is right"
        )
    shown = "; ".join(f"{b.where()} {b.problem}" for b in bad[:_SHOWN])
    more = f"; and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
    notice(f"--skip-bad-rows: leaving out {len(bad)} of {rows} rows of {path}: {shown}{more}")
    spec.drop_rows = tuple(b.index for b in bad)


def check_local_spec(
    spec: DatasetSpec, task: str, *, text_field: str = "text", policy: BadRowPolicy | None = None
) -> None:
    """Refuse, before any model is loaded, a local dataset that is missing, empty, lacks the task's columns or
    holds a row its format cannot use (`policy` may drop those instead).

    Hub datasets are left to load time; a local directory is checked for the split it is asked for.
    """
    path = spec.local_path
    if path is None:
        if looks_like_file(spec.id):
            raise UserError(f"dataset {spec.id} not found here or beside the recipe; fix its path in the recipe")
        return
    if path.is_dir():
        splits_file = path / "dataset_dict.json"
        if splits_file.is_file():
            splits = json.loads(splits_file.read_text(encoding="utf-8")).get("splits") or []
            if splits and split_base(spec.split) not in splits:
                raise UserError(f"dataset {spec.id} has no split '{spec.split}'; it has {sorted(splits)}")
        return
    if not path.is_file():  # a FIFO or a device: reading it could wait forever
        raise UserError(f"dataset {path} is not a regular file (a FIFO, socket or device); give a data file")
    if path.suffix.lower() not in FILE_BUILDERS:
        raise UserError(f"dataset file {path} has an unsupported type; use .json, .jsonl, .parquet or .csv")
    if split_base(spec.split) != "train":
        raise spec.one_split_error(path)
    rows, columns = _file_preview(path)
    if rows == 0:
        raise UserError(f"dataset {path} is empty (no rows); point the recipe at a file with data")
    if rows is not None and spec.weight is not None and int(rows * spec.weight) == 0:
        raise UserError(f"weight {spec.weight} of dataset {path} keeps none of its {rows} rows; raise the weight")
    if columns is None:
        return
    if spec.columns:
        missing = [c for c in spec.columns if c not in columns]
        if missing:
            raise UserError(f"dataset {spec.label} has no column(s) {missing}; it has {columns}")
        columns = list(spec.columns)
    _check_task_columns(columns, task, text_field, f"dataset {path.name}")
    check_rows(spec, path, columns, task, text_field, policy or BadRowPolicy())


def check_local_data(
    data: DataSpec,
    task: str,
    *,
    text_field: str = "text",
    with_eval: bool = True,
    policy: BadRowPolicy | None = None,
) -> None:
    """`check_local_spec` for every dataset a run would load: the training ones, and the eval ones if evaluating."""
    for spec in [*data.train, *(data.eval if with_eval else [])]:
        check_local_spec(spec, task, text_field=text_field, policy=policy)
