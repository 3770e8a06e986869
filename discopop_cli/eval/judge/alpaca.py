"""AlpacaEval's file formats, so that a run's answers and verdicts go to the `alpaca_eval` tool as they are.

- `model_outputs.json` (what `alpaca_eval evaluate --model_outputs` reads, with pandas' `read_json`): a JSON list
  with one object per instruction, `instruction`, `output`, `generator` (the model's name) and `dataset`. Every
  single-turn run writes one per model, `DIR/alpaca_eval/NAME/model_outputs.json`, in the prompt set's order.
- An outputs file given in `--models` is a model whose answers were made elsewhere (GPT-4 Turbo's reference
  outputs, or a vLLM run): they are read, matched to the prompts by instruction, not generated.
- `annotations.json`: the project's pairwise verdicts as AlpacaEval annotations (`output_1` the reference,
  `output_2` the candidate, `preference` 1 when the reference wins, 2 when the candidate wins, 1.5 for a tie),
  `DIR/alpaca_eval/NAME/JUDGE/annotations.json`: alpaca_eval's `get_winrate` and
  `get_length_controlled_winrate` read them as they read their own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from discopop_cli.core.errors import UserError
from discopop_cli.eval.judge.prompts import Prompt
from discopop_cli.eval.judge.store import slug, write_json


class OutputsFile:
    """An AlpacaEval outputs file used as a model: `generate` returns the file's output for the instruction asked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            text = path.read_text(encoding="utf-8")
            rows = (
                json.loads(text)
                if text.lstrip().startswith("[")
                else [json.loads(x) for x in text.splitlines() if x.strip()]
            )
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UserError(f"--models: {path} is not a readable AlpacaEval outputs file ({exc}); fix it") from None
        self.by_instruction: dict[str, str] = {}
        generators = set()
        for number, row in enumerate(rows, start=1):
            if not isinstance(row, dict) or not isinstance(row.get("instruction"), str):
                raise UserError(f"--models: {path} row {number} has no 'instruction'; give an AlpacaEval outputs file")
            if not isinstance(row.get("output"), str):
                raise UserError(f"--models: {path} row {number} has no text 'output'; give an AlpacaEval outputs file")
            self.by_instruction[row["instruction"]] = row["output"]
            generators.add(str(row.get("generator") or ""))
        if not self.by_instruction:
            raise UserError(f"--models: {path} holds no outputs; give an AlpacaEval outputs file with rows")
        self.generator = generators.pop() if len(generators) == 1 else None

    def check_covers(self, prompts: list[Prompt]) -> None:
        if any(p.turns and len(p.turns) > 1 for p in prompts):
            raise UserError(f"--models: {self.path} holds single-turn outputs; MT-Bench needs each model's two turns")
        missing = [p for p in prompts if p.text not in self.by_instruction]
        if missing:
            raise UserError(
                f"--models: {self.path} has no output for {len(missing)} of the {len(prompts)} instructions "
                f"(first: {missing[0].text[:60]!r}); give the outputs of this instruction set"
            )

    def generate(self, messages: list[dict[str, str]], seed: int, temperature: float | None = None) -> tuple[str, int]:
        return self.by_instruction[messages[-1]["content"]], 0

    def close(self) -> None:
        pass


def model_outputs(name: str, prompts: list[Prompt], answers: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    return [
        {"instruction": p.text, "output": answers[p.id]["answer"], "generator": name, "dataset": p.category}
        for p in prompts
    ]


def outputs_path(root: Path, name: str) -> Path:
    return root / "alpaca_eval" / slug(name) / "model_outputs.json"


def write_model_outputs(root: Path, prompts: list[Prompt], answers: dict[str, dict[str, dict[str, Any]]]) -> None:
    for name, by_id in answers.items():
        write_json(outputs_path(root, name), model_outputs(name, prompts, by_id))


def annotations(
    candidate: str,
    reference: str,
    judge: str,
    prompts: list[Prompt],
    answers: dict[str, dict[str, dict[str, Any]]],
    outcomes: dict[str, float],
) -> list[dict[str, Any]]:
    """The judged prompts as AlpacaEval annotations (preference = 1 + the candidate's outcome)."""
    return [
        {
            "instruction": p.text,
            "output_1": answers[reference][p.id]["answer"],
            "generator_1": reference,
            "output_2": answers[candidate][p.id]["answer"],
            "generator_2": candidate,
            "dataset": p.category,
            "annotator": judge,
            "preference": 1.0 + outcomes[p.id],
        }
        for p in prompts
        if p.id in outcomes
    ]


def annotations_path(root: Path, candidate: str, judge: str) -> Path:
    return root / "alpaca_eval" / slug(candidate) / slug(judge) / "annotations.json"
