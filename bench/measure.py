"""What every benchmark shares: run a command in its own process, read its wall time and peak RSS, take medians.

Only the standard library is imported here (and by the runner): a child's ru_maxrss starts from the peak of the
process that spawned it, so the parent must stay small.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
VENV_BIN = Path(sys.executable).parent


@dataclass
class Sample:
    """One child process: wall seconds, peak resident set in MiB, what it printed on stdout, and figures read from
    its outputs (e.g. the trainer's own train_runtime)."""

    seconds: float
    rss_mib: float
    stdout: str = ""
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Row:
    """One line of the results table. `ratio` is ours / reference; `target` is the highest ratio that passes."""

    task: str
    metric: str
    ours: float
    reference: float
    target: float | None = None
    unit: str = ""
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.reference if self.reference else float("nan")

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        return "met" if self.ratio <= self.target else "MISSED"


@dataclass
class Settings:
    """How hard the runner works: `runs` samples per command (alternating ours/reference), `quick` shrinks sizes."""

    runs: int = 3
    quick: bool = False
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "discopop-bench")

    @property
    def startup_runs(self) -> int:
        """Each start-up run is short, so a few more cost little and steady the median."""
        return max(self.runs, 5)


def bench_env() -> dict[str, str]:
    """Offline, and with bytecode caching on (as on a user's machine) even where the shell turns it off."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {
        **environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(ROOT),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def measure(command: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> Sample:
    """Run `command` to completion in its own process (`env`: variables to add); fail loudly (with its stderr) if it
    fails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        environment = bench_env() | (env or {})
        process = subprocess.Popen(list(command), stdout=out, stderr=err, env=environment, cwd=cwd or ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            sys.stderr.write(err.read().decode(errors="replace")[-4000:])
            raise SystemExit(f"benchmark command failed: {' '.join(map(str, command))}")
        out.seek(0)
        return Sample(seconds, usage.ru_maxrss / 1024, out.read().decode(errors="replace"))  # KiB on Linux


def alternate(commands: dict[str, Callable[[], Sample]], runs: int) -> dict[str, list[Sample]]:
    """Run each command `runs` times, interleaved and in reversed order every other round (ABBA), so that drift
    in the machine's load falls on all of them alike."""
    samples: dict[str, list[Sample]] = {name: [] for name in commands}
    names = list(commands)
    for round_ in range(runs):
        for name in names if round_ % 2 == 0 else reversed(names):
            samples[name].append(commands[name]())
    return samples


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def med_seconds(samples: Sequence[Sample]) -> float:
    return median([s.seconds for s in samples])


def med_rss(samples: Sequence[Sample]) -> float:
    return median([s.rss_mib for s in samples])


def med_extra(samples: Sequence[Sample], key: str) -> float:
    return median([s.extra[key] for s in samples])


def machine() -> dict[str, str]:
    """CPU model, cores, memory, OS and the versions that matter, for the results file."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 2**20:.0f} GiB"
                break
    except OSError:
        pass
    from importlib import metadata

    versions = []
    for package in ("torch", "trl", "transformers", "peft", "gguf", "llama-cpp-python"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        "versions": ", ".join(versions),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "load": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
