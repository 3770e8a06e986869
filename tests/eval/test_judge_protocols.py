"""The benchmarks' own protocols in `eval judge`: MT-Bench's two turns against a real judge (`python -m
llama_cpp.server` serving SmolLM2, one server for the module), FastChat's prompt choice and rating rules, AlpacaEval's
files read by `alpaca_eval` itself with its win rates computed by its own functions, and `--concurrency`.

The MT-Bench files are a fixture written here in FastChat's formats (tests/eval/mt_bench/: four two-turn questions,
one with reference answers, and eight judge prompts); none of MT-Bench's text is used."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from judge_support import LlamaServer, Reply, Request, ScriptedJudge, free_port, invoke, judgement_lines

MT_BENCH = Path(__file__).parent / "mt_bench"
QUESTIONS, JUDGE_PROMPTS = MT_BENCH / "question.jsonl", MT_BENCH / "judge_prompts.jsonl"


@pytest.fixture(scope="module")
def server(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    started = LlamaServer(smollm2_gguf, free_port(), tmp_path_factory.mktemp("server") / "server.log")
    yield started
    started.kill()


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def flat(output: str) -> str:
    return " ".join(output.split())


def verdicts_by_key(run: Path) -> dict[str, Any]:
    return {line["key"]: line.get("value", line.get("error")) for line in judgement_lines(run)}


@dataclass
class MTRun:
    run: Path
    args: list[str]
    output: str


@pytest.fixture(scope="module")
def mt_run(
    server: LlamaServer, smollm2_gguf: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> MTRun:
    """The fixture's questions answered by SmolLM2 (llama.cpp) and the tiny model (transformers), graded by SmolLM2
    behind llama_cpp.server, one request at a time."""
    run = tmp_path_factory.mktemp("mt") / "run"
    args = ["--models", f"{smollm2_gguf},{tiny_model_dir}", "--prompts", str(QUESTIONS), "--mode", "single"]
    args += ["--judge-prompts", str(JUDGE_PROMPTS), "--judge", server.spec, "--judge-format", "json"]
    args += ["--max-new-tokens", "12", "--judge-max-tokens", "16", "--concurrency", "1", "-o", str(run)]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return MTRun(run, args, result.output)


def test_mt_bench_two_turns_graded_by_a_real_judge_then_resume_redoes_nothing(
    server: LlamaServer, mt_run: MTRun, tmp_path: Path
) -> None:
    run, args = mt_run.run, mt_run.args

    # Two answers per question, the second asked after the model's own first, at MT-Bench's temperatures.
    for name in ("SmolLM2-135M-Instruct.Q4_1", "model"):
        answers = rows(run / "answers" / f"{name}.jsonl")
        assert [a["key"] for a in answers] == ["1", "2", "3", "4"]
        assert all(len(a["turns"]) == 2 and a["turns"][0] == a["answer"] for a in answers)
        assert [a["temperature"] for a in answers] == [0.7, 0.0, 0.1, 0.0]
        # ... and in FastChat's model_answer format, for its own gen_judgment.
        fastchat = rows(run / "mt_bench" / "model_answer" / f"{name}.jsonl")
        assert [(r["question_id"], len(r["choices"][0]["turns"])) for r in fastchat] == [(i, 2) for i in (1, 2, 3, 4)]
    smol = rows(run / "answers" / "SmolLM2-135M-Instruct.Q4_1.jsonl")
    assert smol[1]["turns"][0].startswith("12 + 30")  # SmolLM2 takes up the sum (greedy: math is at temperature 0)

    # A rating per turn: 2 models x 4 questions x 2 turns, each graded on its own.
    lines = judgement_lines(run)
    keys = sorted(json.loads(line["key"]) for line in lines)
    assert keys == sorted([m, q, t] for m in ("SmolLM2-135M-Instruct.Q4_1", "model") for q in "1234" for t in (1, 2))
    assert server.completions() >= 16
    doc = json.loads((run / "results.json").read_text())
    assert doc["protocol"] == "mt-bench" and doc["mode"] == "single"
    for model in doc["models"]:
        graded = [line["value"] for line in lines if json.loads(line["key"])[0] == model["model"] and "value" in line]
        assert model["score"]["n"] == len(graded) >= 6
        assert model["score"]["value"] == pytest.approx(sum(graded) / len(graded))
        assert [cell["turn"] for cell in model["turns"]] == [1, 2]
        assert sum(cell["n"] for cell in model["turns"]) == len(graded)
        assert {c["category"] for c in model["categories"]} == {"writing", "math", "humanities", "extraction"}
    scores = [m["score"]["value"] for m in doc["models"]]
    assert scores == sorted(scores, reverse=True)  # show_result's order: best first
    table = flat(mt_run.output)
    assert "MT-Bench (4 questions, both turns)" in table
    assert "First turn" in table and "Second turn" in table and "Average" in table

    # --resume: every answer and every judgement is there, so the server is asked nothing.
    asked = server.completions()
    again = invoke(*args, "--resume")
    assert again.exit_code == 0, again.output
    assert server.completions() == asked
    assert "judgements: 16 of 16 already in" in flat(again.output)
    assert "answers of model: all 4 from" in flat(again.output)
    assert json.loads((run / "results.json").read_text())["models"] == doc["models"]

    # SmolLM2's gradings of questions 1 and 2 asked again, four at a time: a greedy judge gives the same verdicts.
    parallel = tmp_path / "parallel"
    shutil.copytree(run, parallel, ignore=shutil.ignore_patterns("results.json"))
    (kept,) = (parallel / "judgements").glob("*.jsonl")
    redo = {json.dumps(["SmolLM2-135M-Instruct.Q4_1", q, t]) for q in "12" for t in (1, 2)}
    kept.write_text(
        "".join(line + "\n" for line in kept.read_text().splitlines() if json.loads(line)["key"] not in redo)
    )
    args4 = [*args[: args.index("--concurrency")], "--concurrency", "4", "-o", str(parallel), "--resume"]
    fourfold = invoke(*args4)
    assert fourfold.exit_code == 0, fourfold.output
    assert "judgements: 12 of 16 already in" in flat(fourfold.output)
    assert server.completions() >= asked + 4
    assert verdicts_by_key(parallel) == verdicts_by_key(run)


def test_mt_bench_picks_fastchats_judge_prompt_per_category_and_turn_and_reads_verdicts_as_fastchat_does(
    mt_run: MTRun, tmp_path: Path
) -> None:
    def decide(request: Request, seen: int) -> Reply:
        shown = request.question
        if "Grade" in request.body["messages"][0]["content"]:
            return Reply(content="Fine. [8] overall" if "Name one play" in shown else "[[7]], not [[3]]")
        if shown.startswith("Question: Name one play"):
            return Reply(content="[[A]] at first sight; on reflection [[B]]")  # FastChat reads [[A]] first
        return Reply(content="[[B]]")

    judge = ScriptedJudge(decide)
    run = tmp_path / "run"  # the answers of mt_run, judged by another judge
    shutil.copytree(mt_run.run, run, ignore=shutil.ignore_patterns("judgements", "results.json"))
    args = mt_run.args[: mt_run.args.index("--mode")] + ["--judge-prompts", str(JUDGE_PROMPTS)]
    args += ["--judge", judge.spec, "--max-new-tokens", "12", "-o", str(run), "--resume"]
    args += ["--concurrency", "1"]  # the requests in order: the assertions below read them by position
    try:
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        pairwise = list(judge.requests)
        graded = invoke(*args, "--mode", "single")
        assert graded.exit_code == 0, graded.output
    finally:
        judge.close()
    answers = {name: rows(run / "answers" / f"{name}.jsonl") for name in ("SmolLM2-135M-Instruct.Q4_1", "model")}
    # 4 questions x 2 turns x 2 orders; the math question with its reference, turn 2 with the whole conversation.
    assert len(pairwise) == 16
    systems = {r.body["messages"][0]["content"] for r in pairwise}
    assert len(systems) == 4  # pair-v2, pair-v2-multi-turn, pair-math-v1, pair-math-v1-multi-turn
    math_turn_1 = [r.question for r in pairwise if r.question.startswith("Question: What is 12 + 30?")]
    assert len(math_turn_1) == 2 and all("Reference: 42\n" in q for q in math_turn_1)
    math_turn_2 = [r.question for r in pairwise if r.question.startswith("Reference: 42 / 84")]
    smol, tiny = answers["SmolLM2-135M-Instruct.Q4_1"][1]["turns"], answers["model"][1]["turns"]
    assert len(math_turn_2) == 2
    assert f"Assistant A: {smol[0]}\nUser: Now double that number.\nAssistant A: {smol[1]}" in math_turn_2[0]
    assert f"Assistant B: {tiny[0]}\nUser: Now double that number.\nAssistant B: {tiny[1]}" in math_turn_2[0]
    writing = [r for r in pairwise if "Write one sentence about a rainy morning" in r.question]
    assert all("Reference" not in r.question and "reference" not in r.body["messages"][0]["content"] for r in writing)

    pair_doc = rows_by_key(run, "pairwise")
    # "[[A]] ... [[B]]" is A (FastChat looks for [[A]] first): the candidate wins shown first, loses shown second.
    assert pair_doc[json.dumps(["SmolLM2-135M-Instruct.Q4_1", "model", "3", 1, "AB"])] == "A"
    single = rows_by_key(run, "single")
    assert single[json.dumps(["model", "3", 1])] == 8.0  # the single-bracket fallback, [8]
    assert single[json.dumps(["model", "1", 1])] == 7.0  # the first [[N]], as FastChat's re.search reads it
    assert single[json.dumps(["model", "3", 2])] == 8.0  # turn 2 shows the whole conversation, first question too


def rows_by_key(run: Path, mode: str) -> dict[str, Any]:
    (path,) = (run / "judgements").glob(f"{mode}-*.jsonl")
    return {row["key"]: row["value"] for row in rows(path)}


def length_taste(true_rate: float, bias: float, scale: float) -> Callable[[Request, int], Reply]:
    """A judge that rewards length: the candidate (the answer starting "cand") wins with probability
    sigmoid(logit(true_rate) + bias * tanh(length difference / scale)), drawn once per instruction from a hash so
    both orders agree."""

    def decide(request: Request, seen: int) -> Reply:
        first, second = request.first, request.second or ""
        candidate_first = first.startswith("cand")
        cand, ref = (first, second) if candidate_first else (second, first)
        z = math.log(true_rate / (1 - true_rate)) + bias * math.tanh((len(cand) - len(ref)) / scale)
        draw = int.from_bytes(hashlib.sha256(request.question.encode()).digest()[:4], "little") / 2**32
        cand_wins = draw < 1 / (1 + math.exp(-z))
        return Reply(content="[[A]]" if cand_wins == candidate_first else "[[B]]")

    return decide


def alpaca_set(tmp_path: Path, n: int) -> tuple[Path, Path, Path, list[str]]:
    """An AlpacaEval instruction set (a JSON list, as alpaca_eval ships it) and two models' outputs files: the
    candidate's answers run longer than the reference's, by a different amount on each instruction."""
    instructions = [f"Instruction {i}: describe item {i}." for i in range(n)]
    datasets = ["helpful_base", "koala", "oasst", "selfinstruct", "vicuna"]
    evalset = tmp_path / "alpaca_eval.json"
    evalset.write_text(json.dumps([{"instruction": t, "dataset": datasets[i % 5]} for i, t in enumerate(instructions)]))
    cand, ref = tmp_path / "cand.json", tmp_path / "ref.json"
    extra = [int(300 + 400 * math.sin(i * 1.7)) for i in range(n)]  # -100 .. 700 characters longer
    cand.write_text(
        json.dumps(
            [
                {"instruction": t, "output": "cand " + "x" * (300 + d), "generator": "cand"}
                for t, d in zip(instructions, extra, strict=True)
            ]
        )
    )
    ref.write_text(
        json.dumps([{"instruction": t, "output": "ref " + "y" * 300, "generator": "ref"} for t in instructions])
    )
    return evalset, cand, ref, instructions


def test_alpaca_eval_reads_our_outputs_and_its_win_rates_agree_with_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd
    from alpaca_eval import utils
    from alpaca_eval.metrics import get_winrate, glm_winrate

    evalset, cand, ref, instructions = alpaca_set(tmp_path, 160)
    judge = ScriptedJudge(length_taste(true_rate=0.6, bias=2.0, scale=300.0))
    run = tmp_path / "run"
    try:
        result = invoke(
            *["--models", f"{cand},{ref}", "--prompts", str(evalset), "--judge", judge.spec, "-o", str(run), "--json"],
            *["--concurrency", "8"],
        )
    finally:
        judge.close()
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (ours,) = doc["models"]
    assert ours["model"] == "cand" and doc["reference"] == "ref" and ours["win_rate"]["n"] == 160

    # alpaca_eval's own loader reads the model_outputs.json the run wrote: the same rows, in the set's order.
    outputs = utils.load_or_convert_to_dataframe(run / "alpaca_eval" / "cand" / "model_outputs.json")
    assert list(outputs.columns) == ["instruction", "output", "generator", "dataset"]
    assert outputs["instruction"].tolist() == instructions
    assert outputs["output"].tolist() == [row["output"] for row in json.loads(cand.read_text())]
    assert set(outputs["generator"]) == {"cand"} and outputs["dataset"][1] == "koala"

    # The same annotations, through alpaca_eval's functions.
    annotations = utils.load_or_convert_to_dataframe(
        run / "alpaca_eval" / "cand" / "vs-ref" / judge_name(doc) / "annotations.json"
    )
    assert len(annotations) == 160
    plain = get_winrate(annotations)
    assert plain["win_rate"] == pytest.approx(100 * ours["win_rate"]["value"], abs=1e-9)
    assert plain["n_wins"] == ours["wins"] and plain["n_wins_base"] == ours["losses"]
    # Its length-controlled GLM reads a per-instruction difficulty table from the Hub even for the model that does
    # not use it (length_controlled_minimal: length term and intercept, as ours): a placeholder stands in, offline.
    placeholder = tmp_path / "df_gamed.csv"
    pd.DataFrame({"model": "x", "index": range(160), "instruction_difficulty": 0.0}).to_csv(placeholder, index=False)
    monkeypatch.setattr(glm_winrate, "hf_hub_download", lambda **kwargs: str(placeholder))
    theirs = glm_winrate.get_length_controlled_winrate(
        annotations, glm_name="length_controlled_minimal", save_weights_dir=None
    )
    lc = 100 * ours["lc_win_rate"]["value"]
    assert plain["win_rate"] - lc > 10  # the judge's taste for length is there to be removed ...
    assert abs(theirs["length_controlled_winrate"] - lc) < 0.5, (theirs, lc)  # ... and both remove it alike


def judge_name(doc: dict[str, Any]) -> str:
    from discopop_cli.eval.judge.store import slug

    return slug(doc["judge"])


def test_concurrent_judging_gives_the_sequential_verdicts_in_a_fraction_of_the_time(tmp_path: Path) -> None:
    evalset, cand, ref, _ = alpaca_set(tmp_path, 6)
    taste = length_taste(true_rate=0.5, bias=1.0, scale=300.0)
    # A judge that takes 0.25 s per reply, as a hosted API does: what concurrency is for.
    slow = ScriptedJudge(lambda request, seen: Reply(content=taste(request, seen).content, delay=0.25))
    seconds, verdicts = {}, {}
    try:
        for concurrency in (1, 4):
            run = tmp_path / f"run{concurrency}"
            started = time.monotonic()
            result = invoke(
                *["--models", f"{cand},{ref}", "--prompts", str(evalset), "--judge", slow.spec, "-o", str(run)],
                *["--concurrency", str(concurrency)],
            )
            seconds[concurrency] = time.monotonic() - started
            assert result.exit_code == 0, result.output
            verdicts[concurrency] = verdicts_by_key(run)
    finally:
        slow.close()
    assert len(verdicts[1]) == 12 and verdicts[4] == verdicts[1]
    assert seconds[1] > 12 * 0.25
    assert seconds[4] < 0.5 * seconds[1], seconds


def test_alpaca_eval_runs_its_own_annotator_through_the_real_judge_and_resume_asks_nothing(
    server: LlamaServer, tmp_path: Path
) -> None:
    from alpaca_eval import utils
    from alpaca_eval.metrics import get_winrate

    evalset, cand, ref = tmp_path / "set.json", tmp_path / "cand.json", tmp_path / "ref.json"
    asked = {"Name a primary colour.": ("Red.", "Green."), "What is the capital of France?": ("Paris.", "Lyon.")}
    evalset.write_text(json.dumps([{"instruction": t, "dataset": "helpful_base"} for t in asked]))
    for path, side in ((cand, 0), (ref, 1)):
        path.write_text(
            json.dumps([{"instruction": t, "output": o[side], "generator": path.stem} for t, o in asked.items()])
        )
    run = tmp_path / "run"
    args = ["--models", f"{cand},{ref}", "--prompts", str(evalset), "--judge", server.spec, "-o", str(run)]
    args += ["--judge-format", "json", "--judge-max-tokens", "16", "--alpaca-eval", "--json"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (figure,) = doc["alpaca_eval"]
    assert figure["model"] == "cand" and figure["annotator"] == "weighted_alpaca_eval_gpt4_turbo-smollm2"
    # Its annotations, as it wrote them (one order per instruction, a weighted preference), give its figure.
    annotations = utils.load_or_convert_to_dataframe(
        run / "alpaca_eval" / "cand" / "vs-ref" / figure["annotator"] / "annotations.json"
    )
    assert len(annotations) == 2 and set(annotations["generator_2"]) == {"cand"}
    assert figure["n"] == get_winrate(annotations)["n_total"] <= 2
    assert figure["win_rate"] == pytest.approx(get_winrate(annotations)["win_rate"])
    # Offline (the tests set HF_HUB_OFFLINE), its GLM cannot fetch its instruction difficulties: said, not hidden.
    assert figure["lc_win_rate"] is None and "df_gamed.csv" in figure["note"]
    assert json.loads((run / "results.json").read_text())["alpaca_eval"] == doc["alpaca_eval"]

    asked = server.completions()
    again = invoke(*args, "--resume")
    assert again.exit_code == 0, again.output
    assert server.completions() == asked  # our verdicts from our cache, its annotations from its own
    (again_figure,) = json.loads(again.stdout)["alpaca_eval"]
    assert again_figure["win_rate"] == pytest.approx(figure["win_rate"])  # its cache keeps 15 digits
