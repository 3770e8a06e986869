"""HumanEval decontamination, as the 2024 alignment-handbook scripts did it before training (`run_sft.py`,
`run_dpo.py` and SakanaAI's `run_gpo.py` all called `decontaminate_humaneval` from `src/alignment/decontaminate.py`).

A row is removed when its text contains, lower-cased and with runs of whitespace collapsed, any HumanEval
problem's docstring or canonical solution (stripped). The text is the whole conversation for `sft` and the chosen
answer (the last turn of `chosen`) for `align`; train and eval data are both filtered, as the handbook filtered
every split. The handbook kept four generic solutions; the fourth, written `"return " ".join(strings)"`, is the
Python string "return .join(strings)" and matches no solution, so HumanEval/28's was filtered like the others:
kept here as published.

A recipe turns it on with `decontaminate_humaneval: true` (the `openai_humaneval` dataset, from the Hub or its
cache), or names the problems itself: a Hub id, or a local file or folder of rows with `prompt` and
`canonical_solution`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from discopop_cli.core.errors import UserError, first_line

HUMANEVAL_ID = "openai_humaneval"
KEPT_SOLUTIONS = ("return x + y", "return len(string)", "return n**2", "return .join(strings)")


def humaneval_source(value: bool | str) -> str:
    return HUMANEVAL_ID if value is True else str(value)


def docstring(prompt: str) -> str | None:
    """The docstring of a HumanEval prompt: the one triple-quoted block (the second when there are two)."""
    for quote in ('"""', "'''"):
        parts = prompt.split(quote)
        if len(parts) == 3:
            return parts[1].strip()
        if len(parts) == 5:
            return parts[3].strip()
    return None


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


def filter_strings(problems: Iterable[dict[str, Any]]) -> list[str]:
    """The normalized strings a row must not contain: every docstring and every solution but the kept ones."""
    docstrings, solutions = [], []
    for problem in problems:
        found = docstring(str(problem.get("prompt") or ""))
        if found:
            docstrings.append(found)
        solution = str(problem.get("canonical_solution") or "").strip()
        if solution and solution not in KEPT_SOLUTIONS:
            solutions.append(solution)
    return [normalize(s) for s in [*docstrings, *solutions]]


def is_clean(text: str, strings: list[str]) -> bool:
    content = normalize(text)
    return not any(s in content for s in strings)


def row_text(example: dict[str, Any], task: str) -> str:
    """What the handbook searched: the chosen answer (align), or every text of the row (sft: the conversation)."""
    if task == "align":
        chosen = example.get("chosen")
        if isinstance(chosen, list):
            return _content(chosen[-1]) if chosen else ""
        return str(chosen or "")
    parts: list[str] = []
    for value in example.values():
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            parts.extend(_content(message) for message in value)
    return "\n".join(parts)


def _content(message: Any) -> str:
    if isinstance(message, dict):
        content = message.get("content", message.get("value", ""))
        if isinstance(content, list):  # multimodal parts
            return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        return str(content)
    return str(message)


def load_problems(value: bool | str) -> list[dict[str, Any]]:
    """The HumanEval problems; one line naming the fix when they cannot be loaded (offline without a cache)."""
    from discopop_cli.data.sources import DatasetSpec, load_split

    source = humaneval_source(value)
    path = Path(source).expanduser()
    spec = DatasetSpec(source, split="train" if path.is_file() else "test")
    try:
        problems = load_split(spec)
    except UserError as exc:
        fetch = f"python -c \"import datasets; datasets.load_dataset('{source}', split='test')\""
        hint = f"run once with the network ({fetch}), or " if not path.exists() else ""
        raise UserError(
            f"decontaminate_humaneval: the HumanEval problems ({source}) could not be loaded ({first_line(exc)}); "
            f"{hint}--set decontaminate_humaneval=false to train without the filter"
        ) from None
    missing = {"prompt", "canonical_solution"} - set(problems.column_names)
    if missing:
        raise UserError(f"decontaminate_humaneval: {source} has no {sorted(missing)} column(s); point it at HumanEval")
    return list(problems)


def decontaminate(dataset: Any, strings: list[str], task: str) -> tuple[Any, int]:
    """(the dataset without the rows that quote HumanEval, how many were removed)."""
    if dataset is None:
        return None, 0
    before = len(dataset)
    kept = dataset.filter(lambda example: is_clean(row_text(example, task), strings), desc="Decontaminating HumanEval")
    return kept, before - len(kept)
