"""Faults, for real: two runs into one folder, SIGKILL and Ctrl-C in the middle of writing (and inside llama.cpp's
quantizer), a stale lock, a full disk (a small tmpfs the test mounts, as root, as CI runs), a judge that answers
nothing. Each ends in one line (exit 130 for Ctrl-C), leaves no staging or lock behind once a later run has
cleaned up, and leaves every input byte-identical.

The killed and interrupted commands run as child processes held at a chosen point by tests/fault_hooks (see its
sitecustomize), so the signal lands mid-write every time, not by luck of timing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from bad_input import PAIRS, jsonl, lora_adapter, recipe, runner, snapshot

from discopop_cli.cli import app

HOOKS = Path(__file__).resolve().parent.parent / "fault_hooks"
LEFTOVERS = (".partial-", ".old-", ".intermediate-", ".replaced-", ".lock")


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if any(k in p.name for k in LEFTOVERS))


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


class Held:
    """A `discopop` child process held at `pause` (MODULE:ATTRIBUTE:before|after) until released or signalled."""

    def __init__(self, args: list[str], folder: Path, pause: str) -> None:
        self.ready, self.go = folder / ".test-ready", folder / ".test-go"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HOOKS), os.environ.get("PYTHONPATH", "")]),
            "DISCOPOP_TEST_PAUSE": pause,
            "DISCOPOP_TEST_READY": str(self.ready),
            "DISCOPOP_TEST_GO": str(self.go),
            "COLUMNS": "300",
        }
        command = [sys.executable, "-m", "discopop_cli", *map(str, args)]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_until_held(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.process.poll() is not None:
                pytest.fail(f"the command ended before the pause point: {self.process.communicate()}")
            assert time.monotonic() < deadline, "the command never reached its pause point"
            time.sleep(0.05)
        self.ready.unlink()

    def finish(self, timeout: float = 180) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err


def merge_inputs(tmp: Path, tiny_model_dir: Path) -> tuple[Path, Path]:
    base = shutil.copytree(tiny_model_dir, tmp / "base")
    lora_adapter(tmp / "adapter", base=str(base))
    return base, tmp / "adapter"


MERGE_WRITING = "discopop_cli.merge.safetensors_stream:ShardWriter.write:after"
EXPORT_WRITING = "discopop_cli.export.tensors:PlannedTensor.chunks:after"
QUANTIZING = "discopop_cli.export.quantize_child:report:before"  # inside llama.cpp's log callback


def test_merge_killed_mid_write_leaves_staging_a_rerun_removes(tmp_path: Path, tiny_model_dir: Path) -> None:
    base, adapter = merge_inputs(tmp_path, tiny_model_dir)
    inputs = snapshot(tmp_path)
    out = tmp_path / "merged"
    held = Held(["merge", adapter, "-o", out], tmp_path, MERGE_WRITING)
    held.wait_until_held()
    os.kill(held.process.pid, signal.SIGKILL)
    held.finish()
    pid = held.process.pid
    left = leftovers(tmp_path)
    assert left and all(name.startswith((f".merged.partial-{pid}-", ".merged.lock")) for name in left), left
    assert not out.exists()

    rerun = runner.invoke(app, ["merge", str(adapter), "-o", str(out)], env={"COLUMNS": "300"})
    flat = " ".join(rerun.output.split())
    assert rerun.exit_code == 0, rerun.output
    assert f"took over the lock of {out} from a run that is no longer running (pid {pid}, `discopop merge" in flat
    assert f"removed what 1 earlier run(s) left in {tmp_path} when they stopped (pid {pid}):" in flat
    assert " KB freed" in flat
    assert leftovers(tmp_path) == [] and (out / "model.safetensors").is_file()
    assert {k: v for k, v in snapshot(tmp_path).items() if k in inputs} == inputs  # inputs byte-identical


def test_merge_interrupted_mid_write_exits_130_leaving_nothing(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C is a KeyboardInterrupt at the next line of Python: here it comes after the first block is written."""
    from discopop_cli.merge.safetensors_stream import ShardWriter

    _, adapter = merge_inputs(tmp_path, tiny_model_dir)
    before = snapshot(tmp_path)
    write = ShardWriter.write

    def interrupted(self: ShardWriter, name: str, block: Any) -> None:
        write(self, name, block)
        assert any(p.name.startswith(".merged.partial-") for p in tmp_path.iterdir())  # mid-write indeed
        raise KeyboardInterrupt

    monkeypatch.setattr(ShardWriter, "write", interrupted)
    result = runner.invoke(app, ["merge", str(adapter), "-o", str(tmp_path / "merged")])
    assert result.exit_code == 130, result.output
    assert error_lines(result.output) == ["error: interrupted by Ctrl-C (SIGINT)"] and "Traceback" not in result.output
    assert snapshot(tmp_path) == before


@pytest.fixture(scope="module")
def export_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("export") / "model")


def test_export_killed_mid_write_leaves_staging_a_rerun_removes(tmp_path: Path, export_model: Path) -> None:
    model = shutil.copytree(export_model, tmp_path / "model")
    inputs = snapshot(tmp_path)
    held = Held(["export", model, "--gguf", "--quant", "f16"], tmp_path, EXPORT_WRITING)
    held.wait_until_held()
    os.kill(held.process.pid, signal.SIGKILL)
    held.finish()
    folder = tmp_path / "model-gguf"
    assert [p.name for p in folder.iterdir() if ".partial-" in p.name], "no staging file was being written"

    rerun = runner.invoke(app, ["export", str(model), "--gguf", "--quant", "f16"], env={"COLUMNS": "300"})
    flat = " ".join(rerun.output.split())
    assert rerun.exit_code == 0, rerun.output
    assert f"removed what 1 earlier run(s) left in {folder} when they stopped (pid {held.process.pid})" in flat
    assert leftovers(tmp_path) == [] and (folder / "model-F16.gguf").is_file()
    assert {k: v for k, v in snapshot(tmp_path).items() if k in inputs} == inputs


STOPS = {
    signal.SIGINT: (130, "error: interrupted by Ctrl-C (SIGINT)"),
    signal.SIGTERM: (143, "error: stopped by SIGTERM"),  # kill, a scheduler's time limit: the same clean-up
}


@pytest.mark.parametrize("signum", list(STOPS), ids=["SIGINT", "SIGTERM"])
def test_a_stop_inside_llama_cpps_quantizer_leaves_nothing(tmp_path: Path, export_model: Path, signum: int) -> None:
    """llama.cpp reports through a ctypes callback, which drops a KeyboardInterrupt: the quantizer now runs in a
    child, held here inside that callback, and Ctrl-C (or SIGTERM) to the command stops both at once."""
    model = shutil.copytree(export_model, tmp_path / "model")
    before = snapshot(tmp_path)
    held = Held(["export", model, "--gguf", "--quant", "q4_k_m"], tmp_path, QUANTIZING)
    held.wait_until_held()
    started = time.monotonic()
    held.process.send_signal(signum)
    code, _, err = held.finish(timeout=60)
    exit_code, line = STOPS[signum]
    assert code == exit_code, err
    assert time.monotonic() - started < 20  # honoured at once, not after the quantizer finished on its own
    assert error_lines(err) == [line] and "Traceback" not in err
    assert snapshot(tmp_path) == before
    children = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p).count(str(tmp_path))]
    assert children == [], "the quantizer outlived the export"


def test_sigterm_mid_merge_exits_143_leaving_nothing(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Python's default for SIGTERM is to die where it stands, leaving the staging folder and the lock behind."""
    _, adapter = merge_inputs(tmp_path, tiny_model_dir)
    before = snapshot(tmp_path)
    held = Held(["merge", adapter, "-o", tmp_path / "merged"], tmp_path, MERGE_WRITING)
    held.wait_until_held()
    assert any(p.name.startswith(".merged.partial-") for p in tmp_path.iterdir())  # mid-write indeed
    held.process.send_signal(signal.SIGTERM)
    code, _, err = held.finish(timeout=60)
    assert code == 143, err
    assert error_lines(err) == ["error: stopped by SIGTERM"] and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_sigterm_still_ends_forked_workers_at_once(capfd: pytest.CaptureFixture[str]) -> None:
    """A dataset's map workers are forked; their pool stops idle ones with SIGTERM, which must not become a
    traceback per worker."""
    import multiprocessing

    from discopop_cli.core import faults

    previous = signal.getsignal(signal.SIGTERM)
    try:
        faults.raise_on_sigterm()
        worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
        worker.start()
        time.sleep(0.2)
        worker.terminate()
        worker.join(10)
        assert worker.exitcode == -signal.SIGTERM
        assert "Terminated" not in capfd.readouterr().err
        with pytest.raises(faults.Terminated):  # while this process raises it
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def align_recipe(folder: Path, model: Path, **changes: Any) -> Path:
    """bad_input's recipe on a real model and the four shipped-form pairs: one DiscoPOP step, written to DIR/out."""
    (folder / "pairs.jsonl").write_text(jsonl(PAIRS), encoding="utf-8")
    text = recipe("pairs.jsonl", model_name_or_path=str(model), loss_type="discopop", max_length=64, **changes)
    path = folder / "recipe.yaml"
    path.write_text(text.replace("{tmp}", str(folder)), encoding="utf-8")
    return path


def test_two_aligns_into_one_folder_the_second_is_refused_naming_the_first(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    recipe = align_recipe(tmp_path, tiny_model_dir, learning_rate=1e-3)
    first = Held(["align", recipe], tmp_path, "discopop_cli.train.run_directory:publish:before")
    first.wait_until_held()  # trained, about to move its model into place, holding the folder's lock
    before = snapshot(tmp_path)

    second = runner.invoke(app, ["align", str(recipe), "--set", "learning_rate=0.5", "--force"])
    assert second.exit_code == 2, second.output
    errors = error_lines(second.output)
    assert len(errors) == 1 and "Traceback" not in second.output
    flat = " ".join(second.output.split())
    assert (
        f"{tmp_path / 'out'} is being written by another discopop run (pid {first.process.pid}, `discopop align" in flat
    )
    assert snapshot(tmp_path) == before  # the second run wrote nothing

    first.go.touch()
    code, out, err = first.finish()
    assert code == 0, err
    assert yaml.safe_load((tmp_path / "out" / "recipe.yaml").read_text())["learning_rate"] == 1e-3  # the first's
    assert leftovers(tmp_path) == []


def test_a_run_holding_the_lock_is_named_and_nothing_is_touched(tmp_path: Path, tiny_model_dir: Path) -> None:
    from discopop_cli.core.locks import output_lock

    _, adapter = merge_inputs(tmp_path, tiny_model_dir)
    out = tmp_path / "merged"
    with output_lock(out, "merge"):
        before = snapshot(tmp_path)
        result = runner.invoke(app, ["merge", str(adapter), "-o", str(out)], env={"COLUMNS": "300"})
        assert snapshot(tmp_path) == before
    assert result.exit_code == 2
    assert error_lines(result.output) == [
        f"error: {out} is being written by another discopop run (pid {os.getpid()}, `discopop merge`, started "
        + error_lines(result.output)[0].split("started ")[1]
    ]
    assert leftovers(tmp_path) == []


def test_a_stale_lock_and_dead_runs_staging_are_taken_over(tmp_path: Path, tiny_model_dir: Path) -> None:
    _, adapter = merge_inputs(tmp_path, tiny_model_dir)
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid belongs to no process now
    out = tmp_path / "merged"
    (tmp_path / ".merged.lock").write_text(json.dumps({"pid": dead.pid, "command": "discopop merge a", "started": "t"}))
    staging = tmp_path / f".merged.partial-{dead.pid}-abc123"
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"\0" * 250_000)
    result = runner.invoke(app, ["merge", str(adapter), "-o", str(out)], env={"COLUMNS": "300"})
    flat = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert f"notice: took over the lock of {out} from a run that is no longer running (pid {dead.pid}" in flat
    assert f"(pid {dead.pid}): 250.0 KB freed" in flat
    assert leftovers(tmp_path) == []


def space(line: str, lead: str) -> tuple[float, float]:
    """(needed, free) in KB from a 'not enough space' line."""
    match = re.search(re.escape(lead) + r"([\d.]+) KB and ([\d.]+) KB is free", line)
    assert match, line
    return float(match.group(1)), float(match.group(2))


# ---- a full disk ---------------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mount a tmpfs of N KB (the tests run as root, as CI does); a failure to mount fails the test, never skips."""
    mounted: list[Path] = []

    def mount(kilobytes: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(point)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.fail(
                f"cannot mount a {kilobytes} KB tmpfs at {point} (needs root, as CI runs): {done.stderr.strip()}"
            )
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=True)


def test_merge_onto_a_full_disk_is_one_line(tmp_path: Path, tiny_model_dir: Path, small_disk: Any) -> None:
    _, adapter = merge_inputs(tmp_path, tiny_model_dir)
    disk = small_disk(64)
    before = snapshot(tmp_path)
    result = runner.invoke(app, ["merge", str(adapter), "-o", str(disk / "merged")], env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    (line,) = error_lines(result.output)
    needed, free = space(line, f"not enough space in {disk} for the merged model: it needs about ")
    assert needed > 400 and free <= 65.6 and "free some space or choose another path" in line, line
    assert snapshot(tmp_path) == before and list(disk.iterdir()) == []


def test_export_onto_a_full_disk_is_one_line(tmp_path: Path, export_model: Path, small_disk: Any) -> None:
    model = shutil.copytree(export_model, tmp_path / "model")
    disk = small_disk(64)
    before = snapshot(tmp_path)
    args = ["export", str(model), "--gguf", "--quant", "f32", "-o", str(disk / "tiny.gguf")]
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    (line,) = error_lines(result.output)
    needed, free = space(line, f"not enough space in {disk} for the GGUF: it needs about ")
    assert needed > 400 and free <= 65.6, line
    assert snapshot(tmp_path) == before and list(disk.iterdir()) == []


def test_align_filling_the_disk_while_saving_is_one_line(tmp_path: Path, tiny_model_dir: Path, small_disk: Any) -> None:
    """A LoRA adapter's size is not known before training: the disk fills while it is saved."""
    disk = small_disk(32)
    recipe = align_recipe(tmp_path, tiny_model_dir, output_dir=str(disk / "out"))
    recipe.write_text(recipe.read_text() + "use_peft: true\nlora_r: 64\nlora_target_modules: all-linear\n")
    before = snapshot(tmp_path)
    result = runner.invoke(app, ["align", str(recipe)], env={"COLUMNS": "300"})
    assert result.exit_code == 1, (result.output, result.exception)
    (line,) = error_lines(result.output)
    assert f"the disk filled up while writing the trained model in {disk / 'out'}: it needs more, " in line, line
    assert re.search(r"more, (\d+\.\d) KB was free; nothing was kept", line), line
    assert "Traceback" not in result.output
    assert snapshot(tmp_path) == before and list(disk.iterdir()) == []


# ---- a judge that answers nothing ----------------------------------------------------------------------------------


class EmptyJudge:
    """An HTTP server that answers every request with `{}`: reachable, and never a verdict."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _empty(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = _empty

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.spec = f"openai:empty@http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"results.json holds {name}, which is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_judge_that_answers_nothing_exits_1_with_strict_results(tmp_path: Path, tiny_model_dir: Path) -> None:
    from discopop_cli.demo.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other", seed=1)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(jsonl([{"id": "p1", "prompt": "2 + 2?"}, {"id": "p2", "prompt": "3 + 3?"}]))
    inputs = snapshot(tmp_path)
    judge = EmptyJudge()
    try:
        run = tmp_path / "run"
        args = ["eval", "judge", "--models", f"{other},{tiny_model_dir}", "--judge", judge.spec]
        args += ["--prompts", str(prompts), "-o", str(run), "--max-new-tokens", "4", "--retries", "0"]
        result = runner.invoke(app, args, env={"COLUMNS": "300"})
    finally:
        judge.close()
    assert result.exit_code == 1, result.output
    (line,) = error_lines(result.output)
    assert "the judge gave no verdict at all (4 failed; the last: the reply has no choices[0].message.content" in line
    results = _strict((run / "results.json").read_text())
    assert results["models"][0]["win_rate"]["value"] is None  # a rate over no verdicts: null, not NaN
    # What stays is what --resume needs (the answers, also in alpaca_eval's form, the failed calls, the settings), and
    # the inputs are untouched.
    assert sorted(p.name for p in run.iterdir()) == [
        ".discopop-output.json",
        "alpaca_eval",
        "answers",
        "judgements",
        "results.json",
        "settings.json",
    ]
    assert {k: v for k, v in snapshot(tmp_path).items() if k in inputs} == inputs
    assert leftovers(tmp_path) == []


def test_a_port_that_never_answers_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from bad_input import EMPTY_SAFETENSORS, Case, check_refused

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # takes connections, never reads or answers
        port = silent.getsockname()[1]
        models = {
            f"{m}/{f}": b for m in "ab" for f, b in (("config.json", "{}"), ("model.safetensors", EMPTY_SAFETENSORS))
        }
        bad = Case(
            ["eval", "judge", "--models", "{tmp}/a,{tmp}/b", "--judge", f"openai:j@http://127.0.0.1:{port}/v1"]
            + ["--prompts", "{tmp}/p.jsonl", "-o", "{tmp}/run", "--timeout", "1"],
            {**models, "p.jsonl": '{"prompt": "hi"}\n'},
            2,
            f"judge http://127.0.0.1:{port}/v1 took the connection but gave no HTTP answer (no reply within 1 s)",
        )
        check_refused(bad, tmp_path, Path("unused"), monkeypatch)


def test_ctrl_c_inside_a_ctypes_callback_is_lost_unless_noted(monkeypatch: pytest.MonkeyPatch) -> None:
    """What llama.cpp's log callback did to Ctrl-C, shown with libc's qsort calling a Python comparator: the
    KeyboardInterrupt raised inside the callback is dropped by ctypes, and c_call_interrupts raises it afterwards."""
    import ctypes

    from discopop_cli.core.faults import c_call_interrupts

    values = (ctypes.c_int * 64)(*range(64, 0, -1))
    compare_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))

    def sort() -> int:
        calls = 0

        def compare(a: Any, b: Any) -> int:
            nonlocal calls
            calls += 1
            if calls == 1:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives while C code runs the callbacks
            return a[0] - b[0]

        ctypes.CDLL(None).qsort(values, len(values), ctypes.sizeof(ctypes.c_int), compare_type(compare))
        return calls

    dropped: list[type] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda report: dropped.append(report.exc_type))
    calls = sort()  # no KeyboardInterrupt comes out: ctypes reported it as unraisable and went on
    assert dropped == [KeyboardInterrupt] and calls > 1
    with pytest.raises(KeyboardInterrupt), c_call_interrupts():
        sort()
