"""Running a candidate's property checks in a child process that can hurt nothing.

The child is a fresh interpreter in isolated mode (`-I`: no PYTHON* variables, no user site, not the current
directory on the path) started in an empty temporary directory with an emptied environment, under hard resource
limits it sets on itself before reading its request or importing torch (and cannot raise again): CPU seconds,
address space, file size 0 (no file can grow), no core dumps, few open files. Inside, probe.py adds an audit hook that refuses files, sockets, processes and imports once torch is
loaded, and gives the candidate five builtins. A wall-clock timeout catches what CPU time does not (sleeping).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PROBE = Path(__file__).with_name("probe.py")

# The cases each candidate is called on: (kind, batch size); the first one's outputs are its fingerprint.
CASES = (("random", 16), ("equal", 4), ("winning", 4), ("losing", 4), ("long", 8), ("random", 2))


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int = 10
    memory_bytes: int = 4 * 1024**3
    wall_seconds: float = 90.0
    open_files: int = 64


@dataclass
class Verdict:
    ok: bool
    reason: str = ""
    fingerprint: list[float] = field(default_factory=list)
    gradient: list[float] = field(default_factory=list)


def _environment() -> dict[str, str]:
    """Only what an interpreter needs to start: no credentials, proxies or Python settings reach the child."""
    keep = {"PATH": os.defpath, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return keep


def probe(code: str, function: str, *, paper_form: bool, beta: float, limits: Limits | None = None) -> Verdict:
    """Run the property checks on `code` in a locked-down child; the verdict says why it failed, if it did."""
    limits = limits or Limits()
    nonce = secrets.token_hex(16)
    request = {"nonce": nonce, "code": code, "function": function, "paper_form": paper_form, "beta": beta}
    request["cases"] = [list(case) for case in CASES]
    request["limits"] = {
        "cpu_seconds": limits.cpu_seconds,
        "memory_bytes": limits.memory_bytes,
        "open_files": limits.open_files,
    }
    with tempfile.TemporaryDirectory(prefix="discopop-probe-") as cwd:
        os.chmod(cwd, 0o500)  # not even an empty file may be created where it runs
        process = subprocess.Popen(
            [sys.executable, "-I", str(PROBE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=_environment(),
            start_new_session=True,  # its own process group, so a timeout ends everything it might have started
            close_fds=True,
        )
        try:
            stdout, stderr = process.communicate((json.dumps(request) + "\n").encode(), timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return Verdict(False, f"took longer than {limits.wall_seconds:.0f} s (wall-clock limit)")
        finally:
            os.chmod(cwd, 0o700)
            _kill_group(process)
    return _read_verdict(process.returncode, stdout, stderr, nonce, limits)


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _read_verdict(code: int, stdout: bytes | str, stderr: bytes | str, nonce: str, limits: Limits) -> Verdict:
    text = stdout.decode("utf-8", "replace") if isinstance(stdout, bytes) else stdout
    for line in text.splitlines():
        if line.startswith(nonce):
            data = json.loads(line[len(nonce) :])
            reason = str(data.get("reason", ""))
            if "can't allocate memory" in reason or "out of memory" in reason.lower():
                reason = "ran out of memory (memory limit)"
            return Verdict(bool(data.get("ok")), reason, data.get("fingerprint", []), data.get("gradient", []))
    if code in (-signal.SIGXCPU, -signal.SIGKILL) or code == 128 + signal.SIGXCPU:
        return Verdict(False, f"used more than {limits.cpu_seconds} s of CPU time (CPU limit)")
    if code < 0:
        return Verdict(False, f"the check process died from signal {signal.Signals(-code).name}")
    errors = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    last = (errors.strip().splitlines() or ["no output"])[-1][:300]
    if "MemoryError" in last or "can't allocate memory" in last:
        return Verdict(False, "ran out of memory (memory limit)")
    return Verdict(False, f"the check process exited with code {code}: {last}")
