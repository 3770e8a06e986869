"""MT-Bench's protocol, as FastChat's `llm_judge` runs it, on files the user supplies (none of their text ships here).

- Questions: FastChat's `question.jsonl` (`question_id`, `category`, two `turns`, `reference` where given), read by
  `prompts.load_prompt_set`; the answers are two-turn conversations (`answers.answer_all`) at MT-Bench's
  per-category temperatures (`TEMPERATURES`).
- Judge prompts: FastChat's `judge_prompts.jsonl` (`name`, `type`, `system_prompt`, `prompt_template`,
  `output_format`). Each turn is judged on its own: turn 1 with `single-v1` (`pair-v2` pairwise), turn 2 with the
  multi-turn prompt, which shows the whole conversation; math, reasoning and coding questions use the
  reference-guided prompts (`single-math-v1`, `pair-math-v1` and their multi-turn forms).
- Reference answers: a question's own `reference` list, or FastChat's `reference_answer/gpt-4.jsonl` (a model
  answer file: `question_id`, `choices[0].turns`) given with --reference-answers, which takes precedence.
- Ratings are read as FastChat reads them: the first `[[N]]`, else the first `[N]`; a pairwise verdict is `[[A]]`,
  else `[[B]]`, else `[[C]]` (a tie), looked for in that order. A reply with none is retried, then left out (FastChat
  records -1 and its `show_result` drops it).
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from discopop_cli.core.errors import UserError
from discopop_cli.eval.judge import verdicts
from discopop_cli.eval.judge.prompts import Prompt

# FastChat's temperature_config: the sampling temperature of a category's answers (0 means greedy).
TEMPERATURES = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
    "arena-hard-200": 0.0,
}
# FastChat's NEED_REF_CATS: judged against a reference answer.
NEEDS_REFERENCE = ("math", "reasoning", "coding", "arena-hard-200")
MAX_NEW_TOKENS = 1024  # FastChat's gen_model_answer default

_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_FALLBACK = re.compile(r"\[(\d+\.?\d*)\]")


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    system: str
    template: str
    output_format: str


def prompt_name(mode: str, category: str, turn: int) -> str:
    """The judge prompt FastChat's gen_judgment picks for a category and turn."""
    if category in NEEDS_REFERENCE:
        name = "single-math-v1" if mode == verdicts.SINGLE else "pair-math-v1"
    else:
        name = "single-v1" if mode == verdicts.SINGLE else "pair-v2"
    return name + ("-multi-turn" if turn > 1 else "")


def _fields(mode: str, reference: bool, multi_turn: bool) -> set[str]:
    if mode == verdicts.SINGLE:
        fields = {"question_1", "question_2", "answer_1", "answer_2"} if multi_turn else {"question", "answer"}
    elif multi_turn:
        fields = {"question_1", "question_2", "answer_a_1", "answer_b_1", "answer_a_2", "answer_b_2"}
    else:
        fields = {"question", "answer_a", "answer_b"}
    if reference:
        fields |= {"ref_answer_1", "ref_answer_2"} if multi_turn else {"ref_answer_1"}
    return fields


def load_judge_prompts(path: Path, mode: str, prompts: list[Prompt]) -> dict[str, JudgePrompt]:
    """The judge prompts this run needs, from FastChat's judge_prompts.jsonl, each checked against its fields."""
    if not path.is_file():
        raise UserError(f"--judge-prompts {path}: no such file; give FastChat's data/judge_prompts.jsonl")
    found: dict[str, dict[str, Any]] = {}
    try:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                row = json.loads(line)
                if not isinstance(row, dict) or "name" not in row:
                    raise UserError(f"{path}:{number} has no 'name'; give FastChat's judge_prompts.jsonl")
                found[str(row["name"])] = row
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(
            f"--judge-prompts {path}: cannot read it ({exc}); give FastChat's judge_prompts.jsonl"
        ) from None
    needed = sorted({prompt_name(mode, p.category, t) for p in prompts for t in range(1, len(p.all_turns) + 1)})
    chosen = {}
    for name in needed:
        row = found.get(name)
        if row is None:
            raise UserError(f"--judge-prompts {path} has no {name!r} prompt; give FastChat's judge_prompts.jsonl")
        template, system = row.get("prompt_template"), row.get("system_prompt", "")
        if not isinstance(template, str) or not isinstance(system, str):
            raise UserError(f"--judge-prompts {path}: {name!r} needs text 'prompt_template' and 'system_prompt'")
        wanted = "[[rating]]" if mode == verdicts.SINGLE else "[[A]]"
        if row.get("output_format") != wanted:
            raise UserError(
                f"--judge-prompts {path}: {name!r} asks for {row.get('output_format')!r}; this mode reads {wanted}"
            )
        used = {f for _, f, _, _ in string.Formatter().parse(template) if f}
        allowed = _fields(mode, "math" in name, "multi-turn" in name)
        if not used <= allowed:
            unknown = ", ".join(sorted(used - allowed))
            raise UserError(f"--judge-prompts {path}: {name!r} uses {{{unknown}}}, which MT-Bench does not fill in")
        chosen[name] = JudgePrompt(name, system, template, row["output_format"])
    return chosen


def load_reference_answers(path: Path | None, prompts: list[Prompt]) -> dict[str, tuple[str, ...]]:
    """Each question's reference answers (one per turn): from --reference-answers, else from the question itself.
    A question whose category is judged against a reference and that has none is refused here, before any work."""
    from_file: dict[str, tuple[str, ...]] = {}
    if path is not None:
        if not path.is_file():
            raise UserError(f"--reference-answers {path}: no such file; give FastChat's reference_answer/gpt-4.jsonl")
        try:
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    from_file[str(row["question_id"])] = tuple(row["choices"][0]["turns"])
        except (OSError, UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise UserError(
                f"--reference-answers {path}: not a FastChat answer file ({exc}); each row needs question_id and "
                "choices[0].turns"
            ) from None
    references = {}
    for p in prompts:
        answers = from_file.get(p.id) or p.reference
        if p.category in NEEDS_REFERENCE:
            if len(answers) < len(p.all_turns):
                raise UserError(
                    f"MT-Bench question {p.id} ({p.category}) is judged against a reference answer and has none for "
                    "each turn; give FastChat's reference_answer/gpt-4.jsonl with --reference-answers"
                )
            references[p.id] = tuple(answers)
    return references


def _format(prompt: JudgePrompt, fields: dict[str, str], as_json: bool, mode: str) -> list[dict[str, str]]:
    system = prompt.system + (verdicts.json_note(mode) if as_json else "")
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": prompt.template.format(**fields)}]


def single_messages(
    prompt: JudgePrompt, question: Prompt, answers: list[str], turn: int, reference: tuple[str, ...], as_json: bool
) -> list[dict[str, str]]:
    turns = question.all_turns
    if turn == 1:
        fields = {"question": turns[0], "answer": answers[0]}
    else:
        fields = {"question_1": turns[0], "question_2": turns[1], "answer_1": answers[0], "answer_2": answers[1]}
    fields.update({f"ref_answer_{i + 1}": text for i, text in enumerate(reference[:turn])})
    return _format(prompt, fields, as_json, verdicts.SINGLE)


def pair_messages(
    prompt: JudgePrompt,
    question: Prompt,
    first: list[str],
    second: list[str],
    turn: int,
    reference: tuple[str, ...],
    as_json: bool,
) -> list[dict[str, str]]:
    turns = question.all_turns
    if turn == 1:
        fields = {"question": turns[0], "answer_a": first[0], "answer_b": second[0]}
    else:
        fields = {"question_1": turns[0], "question_2": turns[1]}
        fields |= {"answer_a_1": first[0], "answer_b_1": second[0], "answer_a_2": first[1], "answer_b_2": second[1]}
    fields.update({f"ref_answer_{i + 1}": text for i, text in enumerate(reference[:turn])})
    return _format(prompt, fields, as_json, verdicts.PAIRWISE)


def parse_rating(reply: str) -> float | None:
    """FastChat's reading: the first [[N]], else the first [N]; else a JSON {"rating": N} (structured output)."""
    match = _RATING.search(reply) or _RATING_FALLBACK.search(reply)
    if match:
        return float(match.group(1))
    value = verdicts.json_field(reply, "rating")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def parse_verdict(reply: str) -> str | None:
    """FastChat's reading: [[A]] anywhere wins over [[B]], which wins over [[C]] (a tie); else a JSON verdict."""
    for mark, verdict in (("[[A]]", "A"), ("[[B]]", "B"), ("[[C]]", "tie")):
        if mark in reply:
            return verdict
    value = verdicts.json_field(reply, "verdict")
    return {"A": "A", "B": "B", "C": "tie"}.get(value.strip().upper()) if isinstance(value, str) else None


def grade_key(model: str, question_id: str, turn: int) -> str:
    return json.dumps([model, question_id, turn])


def pair_key(candidate: str, reference: str, question_id: str, turn: int, order: str) -> str:
    return json.dumps([candidate, reference, question_id, turn, order])


def model_answer_rows(name: str, prompts: list[Prompt], answers: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """A model's answers in FastChat's model_answer format, for its gen_judgment and show_result."""
    return [
        {
            "question_id": int(p.id) if p.id.isdigit() else p.id,
            "model_id": name,
            "choices": [{"index": 0, "turns": answers[p.id].get("turns", [answers[p.id]["answer"]])}],
        }
        for p in prompts
    ]
