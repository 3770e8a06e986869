"""What the `eval judge` tests share: a real HTTP judge server that misbehaves on purpose, and running the command.

`ScriptedJudge` is an OpenAI-compatible server (http.server on 127.0.0.1, a port of its own) whose reply to each
chat completion is decided by a Python function of the question and the two answers shown: a verdict, an HTTP
error, a reply that is no verdict, or a reply that comes too late. It records every request it gets.
`LlamaServer` is the real one: `python -m llama_cpp.server` in a child process.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from discopop_cli.cli import app

_SHOWN = re.compile(
    r"\[Question\]\n(?P<q>.*?)\n\n\[Answer of (?:assistant A|the assistant)\]\n(?P<a>.*?)\n\[End of (?:A|answer)\]"
    r"(?:\n\n\[Answer of assistant B\]\n(?P<b>.*?)\n\[End of B\])?",
    re.DOTALL,
)


@dataclass
class Request:
    question: str
    first: str
    second: str | None
    authorization: str | None
    body: dict[str, Any]


@dataclass
class Reply:
    status: int = 200
    content: str = "[[A]]"
    delay: float = 0.0


@dataclass
class ScriptedJudge:
    decide: Callable[[Request, int], Reply]  # (request, how many times this question+order was asked before)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                content = body["messages"][-1]["content"]
                shown = _SHOWN.search(content)
                # A judge prompt of another layout (MT-Bench's, from a judge_prompts.jsonl): the question is all of it.
                q, a, b = (shown["q"], shown["a"], shown["b"]) if shown else (content, "", None)
                request = Request(q, a, b, self.headers.get("Authorization"), body)
                seen = sum(1 for r in judge.requests if (r.question, r.first, r.second) == (q, a, b))
                judge.requests.append(request)
                reply = judge.decide(request, seen)
                time.sleep(reply.delay)
                if reply.status != 200:
                    self._send(reply.status, {"error": {"message": f"scripted failure {reply.status}"}})
                    return
                message = {"role": "assistant", "content": reply.content}
                self._send(200, {"object": "chat.completion", "choices": [{"index": 0, "message": message}]})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting: what a timeout looks like from here

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def spec(self) -> str:
        return f"openai:scripted@{self.url}"

    def asked(self, question: str) -> int:
        return sum(1 for r in self.requests if r.question == question)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_prompts(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """(id, category, prompt) rows as a JSONL prompt file."""
    path.write_text("".join(json.dumps({"id": i, "category": c, "prompt": p}) + "\n" for i, c, p in rows))
    return path


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, ["eval", "judge", *args], env={"COLUMNS": "200", **(env or {})})


def judgement_lines(run_dir: Path) -> list[dict[str, Any]]:
    files = sorted((run_dir / "judgements").glob("*.jsonl"))
    assert len(files) == 1, files
    return [json.loads(line) for line in files[0].read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LlamaServer:
    """`python -m llama_cpp.server` in a child process; its access log goes to a file, to count the requests."""

    def __init__(self, model: Path, port: int, log: Path) -> None:
        self.port, self.log = port, log
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1"]
        command += ["--port", str(port), "--n_ctx", "2048", "--model_alias", "smollm2"]
        # One thread for prompts too: on a busy 2-core machine, llama.cpp's second spinning thread slows prompt
        # processing tenfold.
        command += ["--n_threads", "1", "--n_threads_batch", "1"]
        with open(log, "ab") as handle:
            self.process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")

    @property
    def spec(self) -> str:
        return f"openai:smollm2@http://127.0.0.1:{self.port}/v1"

    def completions(self) -> int:
        return self.log.read_text().count('"POST /v1/chat/completions HTTP/1.1" 200')

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
