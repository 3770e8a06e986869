"""`eval judge` against a real HTTP judge that misbehaves on purpose: HTTP 500s, timeouts, replies with no verdict,
a wrong key; and against judges whose verdicts are known, so the figures can be checked to the last digit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from judge_support import Reply, Request, ScriptedJudge, invoke, judgement_lines, write_prompts

from discopop_cli.demo.tiny import build_tiny_model

PROMPTS = [
    ("ok", "math", "What is 2 + 2?"),
    ("flaky", "math", "What is 3 + 3?"),
    ("http500", "stem", "Why is the sky blue?"),
    ("slow", "stem", "Why does ice float?"),
    ("babble", "writing", "Write a haiku about rain."),
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def models(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two different tiny chat models (transformers folders), answering in a second or two."""
    other = build_tiny_model(tmp_path_factory.mktemp("other") / "other", seed=1)
    return f"{other},{tiny_model_dir}"


def run_args(models: str, prompts: Path, judge: ScriptedJudge, out: Path, *extra: str) -> list[str]:
    return [
        "--models",
        models,
        "--prompts",
        str(prompts),
        "--judge",
        judge.spec,
        "-o",
        str(out),
        "--max-new-tokens",
        "12",
        *extra,
    ]


def answers_of(run: Path, name: str) -> dict[str, str]:
    lines = (run / "answers" / f"{name}.jsonl").read_text().splitlines()
    return {row["key"]: row["answer"] for row in map(json.loads, lines)}


def test_failures_are_retried_then_reported_per_item_and_resume_retries_only_them(models: str, tmp_path: Path) -> None:
    healthy = {"on": False}

    def decide(request: Request, seen: int) -> Reply:
        if healthy["on"] or request.question == PROMPTS[0][2]:
            return Reply(content="Both say little. [[C]]")
        if request.question == PROMPTS[1][2]:  # one 500, then fine
            return Reply(status=500) if seen == 0 else Reply(content="[[C]]")
        if request.question == PROMPTS[2][2]:
            return Reply(status=500)
        if request.question == PROMPTS[3][2]:
            return Reply(content="[[C]]", delay=2.5)
        return Reply(content="I think both answers are about rain.")

    judge = ScriptedJudge(decide)
    prompts = write_prompts(tmp_path / "prompts.jsonl", PROMPTS)
    run = tmp_path / "run"
    args = run_args(models, prompts, judge, run, "--retries", "1", "--timeout", "1")
    try:
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output
        # Every call of a failing item was tried twice (--retries 1); the flaky one got through on its retry.
        asked = {pid: judge.asked(text) for pid, _, text in PROMPTS}
        assert asked == {"ok": 2, "flaky": 4, "http500": 4, "slow": 4, "babble": 4}
        # A retry after a reply with no verdict samples instead of repeating the greedy reply.
        babble = [r for r in judge.requests if r.question == PROMPTS[4][2]]
        for shown_first in {r.first for r in babble}:  # each order's call, its attempts in the order they were sent
            assert [r.body["temperature"] for r in babble if r.first == shown_first] == [0.0, 0.7]

        doc = json.loads((run / "results.json").read_text())
        (model,) = doc["models"]
        assert model["win_rate"]["n"] == 2  # ok and flaky
        reasons = {f["item"].split(" on ")[1].split(" ")[0]: f["error"] for f in model["failed"]}
        assert len(model["failed"]) == 6
        assert reasons["http500"].startswith("HTTP 500")
        assert reasons["slow"].startswith("no reply within 1 s")
        assert reasons["babble"].startswith("no verdict in the reply: I think both answers are about rain.")
        flat = " ".join(result.output.split())
        assert "6 judgement(s) missing from these figures" in flat and "--resume" in flat
        assert "not judged: other vs model on http500 (candidate first): HTTP 500" in flat

        # The judge is fixed; --resume asks it again about the six failed calls, and about nothing else.
        healthy["on"] = True
        before = len(judge.requests)
        resumed = invoke(*args, "--resume")
        assert resumed.exit_code == 0, resumed.output
        again = judge.requests[before:]
        assert sorted({r.question for r in again}) == sorted(text for _, _, text in PROMPTS[2:])
        assert len(again) == 6
        doc = json.loads((run / "results.json").read_text())
        assert doc["models"][0]["win_rate"]["n"] == 5 and doc["models"][0]["failed"] == []
        verdicts = [line for line in judgement_lines(run) if "error" not in line]
        assert len(verdicts) == len({line["key"] for line in verdicts}) == 10  # no call judged twice
    finally:
        judge.close()


def test_a_judge_that_always_picks_the_first_answer_gives_no_wins(models: str, tmp_path: Path) -> None:
    judge = ScriptedJudge(lambda request, seen: Reply(content="[[A]]"))
    prompts = write_prompts(tmp_path / "prompts.jsonl", PROMPTS)
    try:
        result = invoke(*run_args(models, prompts, judge, tmp_path / "run", "--json"))
    finally:
        judge.close()
    assert result.exit_code == 0, result.output
    (model,) = json.loads(result.stdout)["models"]
    assert (model["wins"], model["ties"], model["losses"]) == (0, 5, 0)
    assert model["win_rate"]["value"] == 0.5
    assert model["order_consistency"] == 0.0


def test_a_judge_that_prefers_longer_answers_gives_the_figures_the_answers_imply(models: str, tmp_path: Path) -> None:
    def longer(request: Request, seen: int) -> Reply:
        a, b = len(request.first), len(request.second or "")
        return Reply(content="[[A]]" if a > b else "[[B]]" if b > a else "[[C]]")

    judge = ScriptedJudge(longer)
    prompts = write_prompts(tmp_path / "prompts.jsonl", PROMPTS)
    run, chart = tmp_path / "run", tmp_path / "chart.png"
    try:
        result = invoke(*run_args(models, prompts, judge, run, "--json", "--plot", str(chart)))
    finally:
        judge.close()
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc == json.loads((run / "results.json").read_text())
    candidate, reference = answers_of(run, "other"), answers_of(run, "model")
    expected = [
        1.0 if len(candidate[p]) > len(reference[p]) else 0.0 if len(candidate[p]) < len(reference[p]) else 0.5
        for p, _, _ in PROMPTS
    ]
    (model,) = doc["models"]
    assert model["win_rate"]["value"] == pytest.approx(sum(expected) / len(expected))
    assert model["wins"] == expected.count(1.0) and model["losses"] == expected.count(0.0)
    by_category = {c["category"]: c for c in model["categories"]}
    assert by_category["stem"]["value"] == pytest.approx((expected[2] + expected[3]) / 2)
    assert by_category["writing"]["n"] == 1
    assert model["order_consistency"] == 1.0
    assert chart.read_bytes()[:8] == PNG_MAGIC


def test_single_answer_grading_averages_the_ratings(models: str, tmp_path: Path) -> None:
    ratings = {"What is 2 + 2?": 9, "What is 3 + 3?": 7, "Why is the sky blue?": 4, "Why does ice float?": 2}

    def grade(request: Request, seen: int) -> Reply:
        return Reply(content=f"Some reasons. Rating: [[{ratings.get(request.question, 5)}]]")

    judge = ScriptedJudge(grade)
    prompts = write_prompts(tmp_path / "prompts.jsonl", PROMPTS)
    try:
        result = invoke(*run_args(models, prompts, judge, tmp_path / "run", "--mode", "single"))
    finally:
        judge.close()
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [m["model"] for m in doc["models"]] == ["other", "model"]
    for model in doc["models"]:
        assert model["score"]["value"] == pytest.approx((9 + 7 + 4 + 2 + 5) / 5)
        assert {c["category"]: c["value"] for c in model["categories"]} == {"math": 8.0, "stem": 3.0, "writing": 5.0}
    assert len(judge.requests) == 10
    assert "graded 1-10 by openai-scripted-127.0.0.1" in " ".join(result.output.split())
    assert "Loading weights" not in result.output


def test_the_api_key_is_sent_but_never_shown(models: str, tmp_path: Path) -> None:
    secret = "sk-test-0123456789abcdef"
    refused = {"on": True}
    judge = ScriptedJudge(lambda request, seen: Reply(status=401) if refused["on"] else Reply(content="[[C]]"))
    prompts = write_prompts(tmp_path / "prompts.jsonl", PROMPTS[:1])
    run = tmp_path / "run"
    args = run_args(models, prompts, judge, run, "--api-key-env", "JUDGE_KEY")
    try:
        result = invoke(*args, env={"JUDGE_KEY": secret})
        assert result.exit_code == 1, result.output
        flat = " ".join(result.output.split())
        assert "answered HTTP 401" in flat and "check the API key variable" in flat
        assert secret not in result.output
        refused["on"] = False
        resumed = invoke(*args, "--resume", env={"JUDGE_KEY": secret})
        assert resumed.exit_code == 0, resumed.output
    finally:
        judge.close()
    assert {r.authorization for r in judge.requests} == {f"Bearer {secret}"}
    assert secret not in resumed.output
    assert not [p for p in run.rglob("*") if p.is_file() and secret in p.read_text()]


def test_a_line_cut_off_by_a_kill_is_dropped_and_its_call_made_again(models: str, tmp_path: Path) -> None:
    judge = ScriptedJudge(lambda request, seen: Reply(content="[[B]]"))
    prompts = write_prompts(tmp_path / "prompts.jsonl", PROMPTS[:2])
    run = tmp_path / "run"
    args = run_args(models, prompts, judge, run)
    try:
        assert invoke(*args).exit_code == 0
        (path,) = (run / "judgements").glob("*.jsonl")
        whole = path.read_bytes()
        path.write_bytes(whole[: whole.rstrip(b"\n").rfind(b"\n") + 1 + 25])  # the last line, half written
        before = len(judge.requests)
        resumed = invoke(*args, "--resume")
    finally:
        judge.close()
    assert resumed.exit_code == 0, resumed.output
    assert len(judge.requests) - before == 1
    assert path.read_bytes() == whole  # the same four lines again, the cut one rewritten whole
    doc = json.loads((run / "results.json").read_text())
    assert (doc["models"][0]["losses"], doc["models"][0]["wins"]) == (0, 0)  # "B" in both orders: no agreement
