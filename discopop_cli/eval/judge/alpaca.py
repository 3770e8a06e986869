"""AlpacaEval's file formats, so that a run's answers and verdicts go to the `alpaca_eval` tool as they are.

- `model_outputs.json` (what `alpaca_eval evaluate --model_outputs` reads, with pandas' `read_json`): a JSON list
  with one object per instruction, `instruction`, `output`, `generator` (the model's name) and `dataset`. Every
  single-turn run writes one per model, `DIR/alpaca_eval/NAME/model_outputs.json`, in the prompt set's order.
- An outputs file given in `--models` is a model whose answers were made elsewhere (GPT-4 Turbo's reference
  outputs, or a vLLM run): they are read, matched to the prompts by instruction, not generated.
- `annotations.json`: the project's pairwise verdicts as AlpacaEval annotations (`output_1` the reference,
  `output_2` the candidate, `preference` 1 when the reference wins, 2 when the candidate wins, 1.5 for a tie),
  `DIR/alpaca_eval/NAME/vs-REFERENCE/JUDGE/annotations.json`: alpaca_eval's `get_winrate` and
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


def annotations_path(root: Path, candidate: str, reference: str, annotator: str) -> Path:
    """Where a candidate's annotations against one reference go: a folder may hold runs against several."""
    return root / "alpaca_eval" / slug(candidate) / f"vs-{slug(reference)}" / slug(annotator) / "annotations.json"


# AlpacaEval 2.0's default annotator: its prompt asks which of two outputs is better and reads the probabilities of
# the one-token answers "m" and "M" from the judge's top log-probabilities (a weighted preference in [1, 2]).
ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
INSTALL_HINT = 'run: pip install "discopop-cli[alpaca_eval]"'


def check_available() -> None:
    from importlib.util import find_spec

    if find_spec("alpaca_eval") is None:
        raise UserError(f"--alpaca-eval needs the alpaca_eval package; {INSTALL_HINT}")


def _quiet_import() -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # alpaca_eval 0.6.6 imports the deprecated pkg_resources
        import alpaca_eval
        from alpaca_eval import metrics
        from alpaca_eval.annotators import PairwiseAnnotator
    return alpaca_eval, metrics, PairwiseAnnotator


def annotator_folder(root: Path, model: str, url: str, concurrency: int) -> Path:
    """alpaca_eval's own annotator config for ANNOTATOR, with the judge's model and URL in place of GPT-4 Turbo's.
    alpaca_eval names an annotator after its folder; the API key stays in the environment, never in these files."""
    import yaml

    alpaca_eval, _, _ = _quiet_import()
    package = Path(alpaca_eval.__file__).parent / "evaluators_configs"
    config = yaml.safe_load((package / ANNOTATOR / "configs.yaml").read_text())[ANNOTATOR]
    folder = root / "alpaca_eval" / "annotators" / slug(f"{ANNOTATOR}-{model}")
    folder.mkdir(parents=True, exist_ok=True)
    config["prompt_template"] = str(package / config["prompt_template"])
    client = folder / "client_configs.yaml"
    client.write_text(yaml.safe_dump({"default": [{"base_url": url}]}))
    config["completions_kwargs"] |= {"model_name": model, "client_config_path": str(client), "num_procs": concurrency}
    (folder / "configs.yaml").write_text(yaml.safe_dump({folder.name: config}, sort_keys=False))
    return folder


def run_alpaca_eval(
    root: Path, candidates: list[str], reference: str, model: str, url: str, key: str | None, concurrency: int
) -> list[dict[str, Any]]:
    """alpaca_eval's annotator on each candidate's model_outputs.json against the reference's, then its own
    win rate and length-controlled win rate on those annotations. Its annotations cache (in the annotator's folder)
    makes a second run, or --resume, ask the judge nothing again."""
    import logging
    import os

    import pandas as pd

    _, metrics, PairwiseAnnotator = _quiet_import()
    folder = annotator_folder(root, model, url, concurrency)
    # The openai client alpaca_eval builds reads its key from the environment; a local server wants any value.
    saved = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = key or saved or "none"
    # Its warnings (no price known for a local model, a cache path that is not "auto") are not the user's concern.
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)
    figures = []
    try:
        # Its own annotations cache is not used: alpaca_eval 0.6.6 fails to merge a reloaded cache under pandas 3
        # ("Invalid value '1.5' for dtype 'int64'"). Each candidate's annotations.json is the cache instead, saved
        # after every chunk, and only pairs it does not hold are sent.
        annotator = PairwiseAnnotator(annotators_config=folder.name, base_dir=folder.parent, caching_path=None)
        baseline = json.loads(outputs_path(root, reference).read_text(encoding="utf-8"))
        for candidate in candidates:
            outputs = json.loads(outputs_path(root, candidate).read_text(encoding="utf-8"))
            saved_path = annotations_path(root, candidate, reference, folder.name)
            annotated = _annotate(annotator, baseline, outputs, saved_path)
            table = pd.DataFrame(annotated)
            plain = metrics.get_winrate(table)
            figure = {
                "model": candidate,
                "annotator": folder.name,
                "win_rate": float(plain["win_rate"]) if plain["n_total"] else None,  # none read: no figure
                "n": int(plain["n_total"]),
                "lc_win_rate": None,
                "note": None,
            }
            if not plain["n_total"]:
                figure["note"] = "alpaca_eval read no preference from the judge's replies."
                figures.append(figure)
                continue
            try:
                lc = metrics.get_length_controlled_winrate(table, save_weights_dir=None)
                figure["lc_win_rate"] = float(lc["length_controlled_winrate"])
            except OSError:  # offline: its GLM's instruction difficulties live on the Hub
                figure["note"] = "alpaca_eval's LC needs df_gamed.csv from the Hub dataset tatsu-lab/alpaca_eval."
            figures.append(figure)
    finally:
        root_logger.setLevel(level)
        if saved is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = saved
    return figures


CHUNK = 32  # pairs per annotator call between two saves


def _annotate(annotator: Any, baseline: list[dict], outputs: list[dict], saved_path: Path) -> list[dict[str, Any]]:
    """alpaca_eval's annotations of (baseline, candidate) pairs, in the set's order, reusing those saved earlier for
    the same instruction and outputs."""
    from discopop_cli.core.errors import RunFailure, first_line

    def pair(row: dict[str, Any]) -> tuple[str, str, str]:
        return row["instruction"], row["output_1"], row["output_2"]

    saved = json.loads(saved_path.read_text(encoding="utf-8")) if saved_path.is_file() else []
    done = {pair(row): row for row in saved}
    wanted = [(b, o) for b, o in zip(baseline, outputs, strict=True)]
    todo = [(b, o) for b, o in wanted if (b["instruction"], b["output"], o["output"]) not in done]
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start : start + CHUNK]
        try:
            rows = annotator.annotate_head2head(outputs_1=[b for b, _ in chunk], outputs_2=[o for _, o in chunk])
        except Exception as exc:  # openai.OpenAIError, and what alpaca_eval raises around it
            raise RunFailure(
                f"alpaca_eval's annotator failed ({first_line(exc)}); check the judge, then run the same command "
                "with --resume (the annotations made so far are kept)"
            ) from None
        done.update({pair(row): _plain(row) for row in rows})
        write_json(saved_path, [done[key] for key in done])
    return [done[(b["instruction"], b["output"], o["output"])] for b, o in wanted]


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """An annotation as JSON can hold it: numpy numbers as Python's, NaN (no preference read) as null."""
    import math

    clean = {}
    for key, value in row.items():
        if hasattr(value, "item"):
            value = value.item()
        clean[key] = None if isinstance(value, float) and math.isnan(value) else value
    return clean
