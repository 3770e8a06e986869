"""'Did you mean ...?' for a misspelt key, command option or name."""

from __future__ import annotations

import difflib


def suggest(key: str, candidates: set[str] | list[str]) -> str:
    """'; did you mean 'x'?' or '' when nothing is close."""
    match = difflib.get_close_matches(key, sorted(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""
