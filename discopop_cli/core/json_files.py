"""The JSON files of model, adapter and tokenizer folders, read with a one-line error naming a damaged one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from discopop_cli.core.errors import UserError


def read_json(path: Path, what: str, *, missing_ok: bool = False) -> dict[str, Any]:
    """The JSON object in `path` ({} for a missing file when `missing_ok`); `what` names whose copy to restore."""
    if missing_ok and not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); restore the {what}'s copy of it") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} holds a {type(value).__name__}, not a JSON object; restore the {what}'s copy of it")
    return value
