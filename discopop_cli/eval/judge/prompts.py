"""Prompt sets: the shipped MT-Bench-style set, any JSONL file whose rows have a `prompt` field, MT-Bench's own
`question.jsonl`, or an AlpacaEval instruction set.

The shipped set (`mt-mini`) has 40 single-turn prompts, five in each of MT-Bench's eight categories. They were
written for discopop-cli; they are not MT-Bench's questions, so its scores are not comparable with published
MT-Bench numbers, only between the models you judge with it.

A file's format is told by its first row, the three having no field in common:

    {"prompt": ..., "id": ..., "category": ...}                              plain (id and category optional)
    {"question_id": 81, "category": ..., "turns": [..], "reference": [..]}   MT-Bench (FastChat's question.jsonl)
    {"instruction": ..., "dataset": ..., "output": ..., "generator": ...}    AlpacaEval (a JSON list, or JSONL)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from discopop_cli.core.errors import UserError

SHIPPED = "mt-mini"


PLAIN, MT_BENCH, ALPACA_EVAL = "plain", "mt-bench", "alpaca-eval"


@dataclass(frozen=True)
class Prompt:
    id: str
    category: str
    text: str
    # MT-Bench: every turn (the first is `text`) and the reference answers, where the question has them.
    turns: tuple[str, ...] = ()
    reference: tuple[str, ...] = ()

    @property
    def all_turns(self) -> tuple[str, ...]:
        return self.turns or (self.text,)


@dataclass(frozen=True)
class PromptSet:
    kind: str  # PLAIN, MT_BENCH or ALPACA_EVAL
    prompts: list[Prompt]


_MT_MINI: dict[str, list[str]] = {
    "writing": [
        "Write a short thank-you note to a neighbour who watered your plants while you were away.",
        "Draft a three-sentence product description for a reusable water bottle aimed at hikers.",
        "Write a haiku about the first snow of winter in a city.",
        "Rewrite this sentence to sound more formal: 'Hey, can you send me that report by tomorrow?'",
        "Write an opening paragraph for a mystery story set in a lighthouse.",
    ],
    "roleplay": [
        "You are a tour guide in Rome. Greet a group of tourists and tell them what they will see today.",
        "Pretend you are a chef explaining to a beginner how to hold a knife safely.",
        "Act as a librarian recommending a book to a teenager who says they hate reading.",
        "You are a ship's captain. Announce to the passengers that a storm is coming, without causing panic.",
        "Play a job interviewer and ask me the first three questions for a junior programmer role.",
    ],
    "reasoning": [
        "If all bloops are razzies and all razzies are lazzies, are all bloops definitely lazzies? Explain.",
        "A farmer has 17 sheep. All but 9 run away. How many sheep does the farmer have left?",
        "Tom is taller than Ann. Ann is taller than Bea. Who is the shortest of the three?",
        "A clock shows 3:15. What is the angle between the hour hand and the minute hand?",
        "Three boxes are labelled apples, oranges and mixed, and every label is wrong. You may take one fruit from "
        "one box. Which box do you pick from to relabel all three correctly?",
    ],
    "math": [
        "What is 15% of 240?",
        "Solve for x: 3x + 7 = 22.",
        "A rectangle has a perimeter of 30 cm and a width of 5 cm. What is its area?",
        "What is the sum of the integers from 1 to 100?",
        "A shirt costs $40 after a 20% discount. What was the original price?",
    ],
    "coding": [
        "Write a Python function that returns True if a string is a palindrome, ignoring case and spaces.",
        "Explain the difference between a list and a tuple in Python, with one example of each.",
        "Write a SQL query that returns the ten most recent orders from a table named orders.",
        "What does this Python expression return, and why: [x * 2 for x in range(4) if x % 2 == 0]?",
        "Write a shell command that counts the lines in every .txt file in the current folder.",
    ],
    "extraction": [
        "Extract the names and ages from this text as JSON: 'Maria is 34, her brother Luis is 29, and their "
        "aunt Rosa turned 61 last week.'",
        "List every date mentioned here: 'The meeting moved from 3 May to 10 May, and the report is due 1 June.'",
        "From this review, name the product and say whether the reviewer liked it: 'The Lumo desk lamp is bright, "
        "but its switch broke after a week. I would not buy it again.'",
        "Pull out the city and the temperature: 'Forecast for Oslo: cloudy, with a high of 4 degrees Celsius.'",
        "Which ingredients does this recipe need? 'Whisk two eggs with milk, add a cup of flour and a pinch of "
        "salt, then fry in butter.'",
    ],
    "stem": [
        "Why is the sky blue? Explain in a few sentences for a curious ten-year-old.",
        "What is the difference between a virus and a bacterium?",
        "Explain what photosynthesis produces and what it needs.",
        "Why does ice float on water?",
        "What does a transistor do in a computer, in simple terms?",
    ],
    "humanities": [
        "Summarise the main causes of the French Revolution in three bullet points.",
        "What is the difference between a democracy and a republic?",
        "Explain what an opportunity cost is, with an everyday example.",
        "Why did the printing press matter so much for Europe in the fifteenth century?",
        "Compare the roles of a prime minister and a president in two sentences.",
    ],
}


def shipped_prompts() -> list[Prompt]:
    return [
        Prompt(f"{category}-{i + 1}", category, text)
        for category, texts in _MT_MINI.items()
        for i, text in enumerate(texts)
    ]


def load_prompts(spec: str) -> list[Prompt]:
    return load_prompt_set(spec).prompts


def load_prompt_set(spec: str) -> PromptSet:
    """The shipped set for `mt-mini`, else a file's rows in whichever of the three formats they are."""
    if spec == SHIPPED:
        return PromptSet(PLAIN, shipped_prompts())
    path = Path(spec)
    if not path.is_file():
        raise UserError(
            f"--prompts {spec}: no such file; give a JSONL file with a 'prompt' field, MT-Bench's question.jsonl, "
            f"an AlpacaEval set or '{SHIPPED}'"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--prompts {spec}: cannot read it ({exc}); give a UTF-8 JSONL file") from None
    rows = _json_rows(path, text)
    if not rows:
        raise UserError(f'--prompts {spec} has no rows; add lines like {{"prompt": "..."}}')
    first = rows[0][1]
    if "turns" in first or "question_id" in first:
        prompts, kind = [_mt_bench_row(path, number, row) for number, row in rows], MT_BENCH
    elif "instruction" in first:
        prompts = [_alpaca_row(path, number, index, row) for index, (number, row) in enumerate(rows)]
        kind = ALPACA_EVAL
    else:
        prompts, kind = [_row(path, number, row) for number, row in rows], PLAIN
    ids = [p.id for p in prompts]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate is not None:
        raise UserError(f"--prompts {spec}: the id {duplicate!r} appears twice; give each row its own 'id'")
    return PromptSet(kind, prompts)


def _json_rows(path: Path, text: str) -> list[tuple[int, Any]]:
    """(line number, row) pairs of a JSONL file, or of a JSON list (AlpacaEval ships its sets as one JSON array)."""
    if text.lstrip().startswith("["):
        try:
            return list(enumerate(json.loads(text), start=1))
        except ValueError as exc:
            raise UserError(f"{path} is not valid JSON ({exc}); fix the file") from None
    numbered = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            numbered.append((number, json.loads(line)))
        except ValueError as exc:
            raise UserError(f"{path}:{number} is not valid JSON ({exc}); fix that line") from None
    return numbered


def _row(path: Path, number: int, row: Any) -> Prompt:
    if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
        raise UserError(f"{path}:{number} has no text 'prompt' field; each row needs one")
    return Prompt(str(row.get("id", number)), str(row.get("category") or "all"), row["prompt"])


def _mt_bench_row(path: Path, number: int, row: Any) -> Prompt:
    turns = row.get("turns") if isinstance(row, dict) else None
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
        raise UserError(f"{path}:{number}: 'turns' must be a list of question texts, as in MT-Bench's question.jsonl")
    if "question_id" not in row or not isinstance(row.get("category"), str):
        raise UserError(f"{path}:{number}: an MT-Bench question needs 'question_id' and 'category'; fix that line")
    reference = row.get("reference", [])
    if not isinstance(reference, list) or not all(isinstance(r, str) for r in reference):
        raise UserError(f"{path}:{number}: 'reference' must be a list of reference answers, one per turn")
    return Prompt(str(row["question_id"]), row["category"], turns[0], tuple(turns), tuple(reference))


def _alpaca_row(path: Path, number: int, index: int, row: Any) -> Prompt:
    if not isinstance(row, dict) or not isinstance(row.get("instruction"), str) or not row["instruction"].strip():
        raise UserError(f"{path}:{number} has no text 'instruction' field; each AlpacaEval row needs one")
    # AlpacaEval's rows have no id: its annotations and its GLM know an instruction by its position in the set.
    return Prompt(str(index), str(row.get("dataset") or "alpaca_eval"), row["instruction"])


def prompts_digest(prompts: list[Prompt]) -> str:
    """A short hash of the prompt set, so a resumed run can tell that the prompts changed under it."""
    rows = [[p.id, p.category, p.text] + ([list(p.turns), list(p.reference)] if p.turns else []) for p in prompts]
    body = json.dumps(rows, ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]
