"""`discopop eval judge` refuses bad input with one line naming the fix, exit code 2, and nothing written; its
`--help` loads none of the heavy libraries."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bad_input import DIR, EMPTY_SAFETENSORS, case, check_case_ids, check_refused

GGUF_HEADER = b"GGUF\x03\x00\x00\x00" + b"\x00" * 16


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the probe is closed


JUDGE = "openai:judge@http://127.0.0.1:9/v1"  # never reached: every case below fails before any contact
PROMPTS = "".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(3))


def files(**extra: Any) -> dict[str, Any]:
    """Two models a check passes (a folder with a config and weights, a file with a GGUF header), prompts."""
    model = {"a/config.json": "{}", "a/model.safetensors": EMPTY_SAFETENSORS}
    return {**model, "b.gguf": GGUF_HEADER, "prompts.jsonl": PROMPTS, **extra}


def judge(*args: str, models: str = "{tmp}/a,{tmp}/b.gguf", judge_spec: str = JUDGE) -> list[str]:
    base = ["eval", "judge", "--models", models, "--judge", judge_spec, "--prompts", "{tmp}/prompts.jsonl"]
    return [*base, "-o", "{tmp}/run", *args]


MT_BENCH = Path(__file__).parent / "mt_bench"  # four questions and eight judge prompts in FastChat's formats
MT_QUESTIONS = (MT_BENCH / "question.jsonl").read_text()
MT_PROMPTS = (MT_BENCH / "judge_prompts.jsonl").read_text()
MT_FILES = {"q.jsonl": MT_QUESTIONS}


def mt_bench(*args: str, models: str = "{tmp}/a,{tmp}/b.gguf") -> list[str]:
    base = ["eval", "judge", "--models", models, "--judge", JUDGE, "--prompts", "{tmp}/q.jsonl"]
    return [*base, "-o", "{tmp}/run", *args]


CASES = [
    case("judge-one-model", judge(models="{tmp}/a"), files(), 2, "give at least two, comma-separated"),
    case("judge-missing-model", judge(models="{tmp}/a,{tmp}/nope"), files(), 2, "{tmp}/nope does not exist"),
    case("judge-folder-no-config", judge(models="{tmp}/a,{tmp}/c"), files(c=DIR), 2, "{tmp}/c has no config.json"),
    case(
        "judge-not-gguf",
        judge(models="{tmp}/a,{tmp}/x.bin"),
        files(**{"x.bin": b"\x80\x02}q"}),
        2,
        "{tmp}/x.bin is not a GGUF file",
    ),
    case("judge-same-model-twice", judge(models="{tmp}/a,{tmp}/a"), files(), 2, "--models lists {tmp}/a twice"),
    case(
        "judge-prompts-missing",
        [*judge()[:6], "--prompts", "{tmp}/none.jsonl", "-o", "{tmp}/run"],
        files(),
        2,
        "--prompts {tmp}/none.jsonl: no such file",
    ),
    case(
        "judge-prompts-not-json",
        judge(),
        files(**{"prompts.jsonl": '{"prompt": "ok"}\nnot json\n'}),
        2,
        "prompts.jsonl:2 is not valid JSON",
    ),
    case(
        "judge-prompts-no-field",
        judge(),
        files(**{"prompts.jsonl": '{"question": "hi"}\n'}),
        2,
        "prompts.jsonl:1 has no text 'prompt' field",
    ),
    case("judge-prompts-empty", judge(), files(**{"prompts.jsonl": "\n"}), 2, "has no rows"),
    case(
        "judge-prompts-duplicate-id",
        judge(),
        files(**{"prompts.jsonl": '{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n'}),
        2,
        "the id '1' appears twice",
    ),
    case("judge-bad-spec", judge(judge_spec="gpt-4"), files(), 2, "use openai:MODEL@http://HOST:PORT/v1 or gguf:"),
    case(
        "judge-gguf-missing", judge(judge_spec="gguf:{tmp}/judge.gguf"), files(), 2, "{tmp}/judge.gguf does not exist"
    ),
    case("judge-bad-mode", judge("--mode", "elo"), files(), 2, "--mode 'elo': use pairwise or single"),
    case("judge-bad-format", judge("--judge-format", "xml"), files(), 2, "--judge-format 'xml': use text or json"),
    case("judge-reference-unknown", judge("--reference", "zzz"), files(), 2, "--reference 'zzz' is not among --models"),
    case(
        "judge-reference-single",
        judge("--mode", "single", "--reference", "a"),
        files(),
        2,
        "applies to --mode pairwise",
    ),
    case("judge-bad-top-p", judge("--top-p", "1.5"), files(), 2, "--top-p 1.5: must be above 0 and at most 1"),
    case("judge-bad-temperature", judge("--temperature", "-1"), files(), 2, "--temperature -1.0: must be 0"),
    case("judge-bad-retries", judge("--retries", "-1"), files(), 2, "--retries must be 0 or more"),
    case("judge-plot-not-png", judge("--plot", "{tmp}/chart.jpg"), files(), 2, "the file must end in .png"),
    case(
        "judge-plot-exists",
        judge("--plot", "{tmp}/c.png"),
        files(**{"c.png": b"x"}),
        2,
        "c.png already exists; pass --force",
    ),
    case(
        "judge-key-unset",
        judge("--api-key-env", "NO_SUCH_KEY_VAR"),
        files(),
        2,
        "NO_SUCH_KEY_VAR: that variable is not set",
    ),
    case(
        "judge-output-busy",
        judge(),
        files(**{"run/settings.json": "{}"}),
        2,
        "already holds a run; pass --resume to continue it, --force to start again",
    ),
    case("judge-resume-nothing", judge("--resume"), files(), 2, "--resume: {tmp}/run holds no earlier run"),
    case("judge-resume-and-force", judge("--resume", "--force"), files(), 2, "--resume and --force contradict"),
    case(
        "judge-resume-not-a-run",
        judge("--resume"),
        files(**{"run/notes.txt": "mine"}),
        2,
        "has no settings.json, so it is not a judge run",
    ),
    case("judge-output-is-file", judge(), files(run="a file"), 2, "output directory {tmp}/run is a file"),
    case("judge-concurrency-zero", judge("--concurrency", "0"), files(), 2, "--concurrency 0: must be at least 1"),
    case(
        "judge-mt-bench-no-judge-prompts",
        mt_bench(),
        files(**MT_FILES),
        2,
        "holds MT-Bench questions: give FastChat's judge prompts with --judge-prompts",
    ),
    case(
        "judge-mt-bench-judge-prompt-missing",
        mt_bench("--judge-prompts", "{tmp}/few.jsonl"),
        files(**MT_FILES, **{"few.jsonl": (MT_BENCH / "judge_prompts.jsonl").read_text().splitlines()[0] + "\n"}),
        2,
        "{tmp}/few.jsonl has no 'pair-math-v1' prompt",
    ),
    case(
        "judge-mt-bench-judge-prompt-field",
        mt_bench("--judge-prompts", "{tmp}/odd.jsonl"),
        files(**MT_FILES, **{"odd.jsonl": MT_PROMPTS.replace("{answer_a}", "{answer_c}")}),
        2,
        "'pair-math-v1' uses {answer_c}, which MT-Bench does not fill in",
    ),
    case(
        "judge-mt-bench-no-reference",
        mt_bench("--judge-prompts", f"{MT_BENCH}/judge_prompts.jsonl"),
        files(**{"q.jsonl": MT_QUESTIONS.replace(', "reference": ["42", "84"]', "")}),
        2,
        "MT-Bench question 2 (math) is judged against a reference answer and has none",
    ),
    case(
        "judge-mt-bench-one-turn-outputs",
        mt_bench("--judge-prompts", f"{MT_BENCH}/judge_prompts.jsonl", models="{tmp}/a,{tmp}/out.json"),
        files(**MT_FILES, **{"out.json": '[{"instruction": "x", "output": "y"}]'}),
        2,
        "holds single-turn outputs; MT-Bench needs each model's two turns",
    ),
    case(
        "judge-judge-prompts-not-mt-bench",
        judge("--judge-prompts", f"{MT_BENCH}/judge_prompts.jsonl"),
        files(),
        2,
        "--judge-prompts and --reference-answers apply to MT-Bench questions only",
    ),
    case(
        "judge-outputs-missing-instruction",
        judge(models="{tmp}/a,{tmp}/out.json"),
        files(**{"out.json": '[{"instruction": "question 0", "output": "y", "generator": "g"}]'}),
        2,
        "{tmp}/out.json has no output for 2 of the 3 instructions (first: 'question 1')",
    ),
    case(
        "judge-outputs-no-output",
        judge(models="{tmp}/a,{tmp}/out.json"),
        files(**{"out.json": '[{"instruction": "question 0"}]'}),
        2,
        "{tmp}/out.json row 1 has no text 'output'",
    ),
    case(
        "judge-alpaca-no-instruction",
        judge(),
        files(**{"prompts.jsonl": '[{"instruction": "a"}, {"dataset": "x"}]'}),
        2,
        "prompts.jsonl:2 has no text 'instruction' field",
    ),
]


def test_the_cases_cover_the_command() -> None:
    check_case_ids(CASES, ("judge",), at_least=20)


@pytest.mark.parametrize("bad", CASES)
def test_bad_input_is_refused(bad: Any, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    check_refused(bad, tmp_path, tiny_model_dir, monkeypatch)


def test_an_unreachable_judge_is_reported_before_any_answer(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = f"openai:judge@http://127.0.0.1:{closed_port()}/v1"
    bad = case("judge-unreachable", judge(judge_spec=spec), files(), 2, "cannot be reached").values[0]
    check_refused(bad, tmp_path, tiny_model_dir, monkeypatch)


def test_a_resume_with_other_sampling_is_refused(tmp_path: Path) -> None:
    from bad_input import runner, snapshot

    from discopop_cli.cli import app
    from discopop_cli.eval.judge.answers import Sampling
    from discopop_cli.eval.judge.prompts import load_prompts, prompts_digest

    tmp = tmp_path / "work"
    for name, content in files().items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    settings = {
        "prompts": prompts_digest(load_prompts(str(tmp / "prompts.jsonl"))),
        "sampling": Sampling(temperature=0.0).as_dict(),  # the earlier run was greedy; this one samples
        "models": {"a": str((tmp / "a").resolve()), "b": str((tmp / "b.gguf").resolve())},
    }
    (tmp / "run").mkdir()
    (tmp / "run" / "settings.json").write_text(json.dumps(settings))
    before = snapshot(tmp)
    result = runner.invoke(app, [arg.replace("{tmp}", str(tmp)) for arg in judge("--resume")])
    assert result.exit_code == 2, result.output
    assert "--resume: sampling differ from the run in" in " ".join(result.output.split())
    assert snapshot(tmp) == before


def test_help_loads_no_heavy_library() -> None:
    probe = (
        "import sys\nfrom discopop_cli.cli import app\n"
        "try:\n    app(['eval', 'judge', '--help'], prog_name='discopop')\nexcept SystemExit:\n    pass\n"
        "heavy = ('torch', 'transformers', 'numpy', 'llama_cpp', 'matplotlib', 'urllib.request')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert run.stdout.strip().splitlines()[-1] == "[]"
    assert "--judge" in run.stdout and "--resume" in run.stdout
