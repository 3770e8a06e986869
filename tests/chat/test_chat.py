"""`discopop chat`: a GGUF through llama.cpp and a model folder through transformers, one turn or a session."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bad_input import DIR, PICKLED_MODEL, TINY, case, check_case_ids, check_refused
from typer.testing import CliRunner

from discopop_cli.cli import app

CUT_NOTICE = "before the model ended its turn"


def discopop(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: its own process, stdout and stderr apart."""
    command = [sys.executable, "-m", "discopop_cli.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def llama_gguf(llama_bpe_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("llama-gguf") / "llama-f32.gguf"
    result = CliRunner().invoke(app, ["export", str(llama_bpe_dir), "--gguf", "--quant", "f32", "-o", str(path)])
    assert result.exit_code == 0, result.output
    return path


def transformers_greedy(model_dir: Path, messages: list[dict[str, str]], max_new_tokens: int) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    generated = model.generate(**prompt, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(generated[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)


def test_both_engines_answer_like_transformers_generate(llama_bpe_dir: Path, llama_gguf: Path) -> None:
    """The GGUF's embedded template in llama.cpp, and the folder in transformers, give transformers' greedy reply."""
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 7 plus 5?"}]
    expected = transformers_greedy(llama_bpe_dir, messages, 12)
    assert expected.strip()
    for model in (llama_gguf, llama_bpe_dir):
        run = discopop(
            "chat",
            model,
            "-p",
            "What is 7 plus 5?",
            "--system",
            "Answer briefly.",
            "--temperature",
            "0",
            "--max-tokens",
            "12",
        )
        assert run.returncode == 0, run.stderr
        # Same tokens; transformers shows a split UTF-8 sequence as U+FFFD where llama-cpp-python drops its bytes.
        assert run.stdout.replace("\ufffd", "") == expected.replace("\ufffd", "") + "\n", model
        # The random model never ends its turn: cut at --max-tokens, and said so.
        assert f"--max-tokens 12 {CUT_NOTICE}" in run.stderr


def test_a_reply_stops_at_the_end_of_turn(smollm2_gguf: Path) -> None:
    """SmolLM2 ends its turn with <|im_end|>: the reply stops there, the marker is not printed, no cut notice."""
    run = discopop("chat", smollm2_gguf, "--prompt", "What is 2 plus 2?", "--temperature", "0", "--max-tokens", "200")
    assert run.returncode == 0, run.stderr
    assert "4" in run.stdout and "<|im_end|>" not in run.stdout and "<|im_start|>" not in run.stdout
    assert CUT_NOTICE not in run.stderr
    assert len(run.stdout.split()) < 60


def read_until(fd: int, marker: bytes, seconds: float = 120) -> bytes:
    seen = b""
    deadline = time.monotonic() + seconds
    while marker not in seen:
        assert time.monotonic() < deadline, f"no {marker!r} after {seconds} s: {seen!r}"
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_an_interactive_session_in_a_terminal(smollm2_gguf: Path) -> None:
    """Two turns typed at the prompt, then end of input (Ctrl-D): each reply streamed, then the prompt again."""
    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "discopop_cli.cli", "chat", str(smollm2_gguf), "--temperature", "0"]
    child = subprocess.Popen(command, stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    try:
        greeting = read_until(leader, b">>> ")
        assert b"/bye" in greeting  # a terminal is told how to leave
        os.write(leader, b"Say hello.\n")
        first = read_until(leader, b">>> ").decode("utf-8", "replace")
        os.write(leader, b"What is 2 plus 2?\n")
        second = read_until(leader, b">>> ").decode("utf-8", "replace")
        os.write(leader, b"\x04")  # end of input
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()
        os.close(leader)
    assert "Hello" in first and "<|im_end|>" not in first
    assert "4" in second and "<|im_end|>" not in second
    assert CUT_NOTICE not in first + second


CASES = [
    case("chat-missing-model", ["chat", "{tmp}/nothing.gguf", "-p", "hi"], {}, 2, "{tmp}/nothing.gguf is not a file"),
    case(
        "chat-not-a-gguf",
        ["chat", "{tmp}/model.gguf", "-p", "hi"],
        {"model.gguf": "not a GGUF"},
        2,
        "{tmp}/model.gguf is not a GGUF llama.cpp can read",
    ),
    case("chat-not-a-model", ["chat", "{tmp}/model", "-p", "hi"], {"model": DIR}, 2, "has no config.json"),
    case(
        "chat-pickled-weights",
        ["chat", "{tmp}/model", "-p", "hi"],
        {"model": TINY, **PICKLED_MODEL},
        2,
        "has no .safetensors weights (pickled weights are never loaded)",
    ),
    case(
        "chat-top-p", ["chat", "{tmp}/model", "-p", "hi", "--top-p", "2"], {"model": TINY}, 2, "--top-p 2.0 is outside"
    ),
    case(
        "chat-negative-temperature",
        ["chat", "{tmp}/model", "-p", "hi", "--temperature", "-1"],
        {"model": TINY},
        2,
        "--temperature -1.0 is below 0",
    ),
]


def test_case_ids() -> None:
    check_case_ids(CASES, ("chat",))


@pytest.mark.parametrize("bad", CASES)
def test_bad_input(bad, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_refused(bad, tmp_path, tiny_model_dir, monkeypatch)
