"""What the judge is asked, and how its reply becomes a verdict (pairwise) or a rating (single-answer grading).

The reply formats follow MT-Bench's: `[[A]]`, `[[B]]` or `[[C]]` (a tie) for a pair, `[[N]]` with N from 1 to 10
for one answer; the last such mark in the reply counts. A JSON object (`{"verdict": "A"}`, `{"rating": 7}`) is
read too, which is what a judge asked for structured output (`--judge-format json`) returns.
"""

from __future__ import annotations

import json
import re
from typing import Any

PAIRWISE = "pairwise"
SINGLE = "single"
MODES = (PAIRWISE, SINGLE)

_PAIR_SYSTEM = (
    "You are a careful and impartial judge. You will see one question from a user and the answers of two AI "
    "assistants, A and B. Decide which answer serves the user better: correct, helpful, relevant, clear. The "
    "order in which the answers appear, their length and the assistants' names must not sway you. Explain your "
    "reasoning in a few sentences, then end with your verdict alone on the last line: [[A]] if A is better, "
    "[[B]] if B is better, [[C]] if they are equally good."
)
_SINGLE_SYSTEM = (
    "You are a careful and impartial judge. You will see one question from a user and the answer of an AI "
    "assistant. Rate the answer for correctness, helpfulness, relevance and clarity on a scale from 1 (useless) "
    "to 10 (excellent). Explain your reasoning in a few sentences, then end with your rating alone on the last "
    "line in double brackets, for example [[6]]."
)
_JSON_NOTE = " Reply with a JSON object only: {schema}."

_PAIR_MARK = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)
_RATING_MARK = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")


def json_note(mode: str) -> str:
    """What a judge asked for structured output (--judge-format json) is told to write."""
    schema = '{"verdict": "A" | "B" | "C"}' if mode == PAIRWISE else '{"rating": 1..10}'
    return _JSON_NOTE.format(schema=schema)


def pair_messages(question: str, first: str, second: str, *, as_json: bool = False) -> list[dict[str, str]]:
    system = _PAIR_SYSTEM + (json_note(PAIRWISE) if as_json else "")
    user = (
        f"[Question]\n{question}\n\n[Answer of assistant A]\n{first}\n[End of A]\n\n"
        f"[Answer of assistant B]\n{second}\n[End of B]"
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def single_messages(question: str, answer: str, *, as_json: bool = False) -> list[dict[str, str]]:
    system = _SINGLE_SYSTEM + (json_note(SINGLE) if as_json else "")
    user = f"[Question]\n{question}\n\n[Answer of the assistant]\n{answer}\n[End of answer]"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def json_schema(mode: str) -> dict[str, Any]:
    """The JSON schema a structured-output judge must follow."""
    if mode == PAIRWISE:
        prop: dict[str, Any] = {"verdict": {"type": "string", "enum": ["A", "B", "C"]}}
    else:
        prop = {"rating": {"type": "integer", "minimum": 1, "maximum": 10}}
    return {"type": "object", "properties": prop, "required": list(prop)}


def json_field(reply: str, field: str) -> Any:
    start, end = reply.find("{"), reply.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        value = json.loads(reply[start : end + 1])
    except ValueError:
        return None
    return value.get(field) if isinstance(value, dict) else None


def parse_pair(reply: str) -> str | None:
    """'A', 'B' or 'tie', or None when the reply holds no verdict."""
    marks = _PAIR_MARK.findall(reply)
    mark = marks[-1] if marks else json_field(reply, "verdict")
    if not isinstance(mark, str):
        return None
    mark = mark.strip().upper()
    if mark in ("A", "B"):
        return mark
    return "tie" if mark in ("C", "TIE") else None


def parse_rating(reply: str) -> float | None:
    """A rating from 1 to 10, or None when the reply holds none (or one out of range)."""
    marks = _RATING_MARK.findall(reply)
    value: Any = float(marks[-1]) if marks else json_field(reply, "rating")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 1 <= value <= 10 else None


def pair_outcome(first_order: str, second_order: str) -> float:
    """The candidate's result from two verdicts: candidate shown as A, then as B. A win or a loss only when both
    orders agree on it; anything else (a disagreement, a tie in either order) is a tie, 0.5."""
    as_a = {"A": 1.0, "B": 0.0, "tie": 0.5}[first_order]
    as_b = {"B": 1.0, "A": 0.0, "tie": 0.5}[second_order]
    return as_a if as_a == as_b else 0.5


def pair_key(candidate: str, reference: str, prompt_id: str, order: str) -> str:
    """The cache key of one pairwise judge call; `order` AB shows the candidate first, BA the reference first."""
    return json.dumps([candidate, reference, prompt_id, order])


def grade_key(model: str, prompt_id: str) -> str:
    return json.dumps([model, prompt_id])
