"""Training a candidate that passed every check: `discopop align` on the recipe, in a child process.

The candidate becomes a module file in `DIR/candidates/ID/`, put on the child's PYTHONPATH and named as a
`module:function` loss, so it reaches the trainer the way any user loss does (losses/user.py). A child process
means a candidate that crashes the trainer, or leaks memory, takes only its own run with it; the child runs in its
own process group, without core dumps, and is killed with everything it started when it runs past its time.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from discopop_cli.core.errors import first_line


@dataclass(frozen=True)
class TrainedRun:
    ok: bool
    run_dir: Path
    seconds: float
    reason: str = ""


def module_name(candidate_id: str) -> str:
    return "discover_" + candidate_id.replace("-", "_")


def write_module(folder: Path, candidate_id: str, code: str) -> Path:
    target = folder / "candidates" / candidate_id
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{module_name(candidate_id)}.py"
    path.write_text(code if code.endswith("\n") else code + "\n", encoding="utf-8")
    return target


def _no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def train(
    recipe: Path,
    overrides: list[str],
    folder: Path,
    candidate_id: str,
    code: str,
    function: str,
    *,
    timeout: float,
) -> TrainedRun:
    started = time.monotonic()
    module_dir = write_module(folder, candidate_id, code)
    run_dir = folder / "runs" / candidate_id
    log = folder / "runs" / f"{candidate_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "discopop_cli", "align", str(recipe)]
    for override in overrides:
        command += ["--set", override]
    command += [
        *("--set", f"loss_type={module_name(candidate_id)}:{function}"),
        *("--set", "loss_weights="),
        *("--set", "loss_kwargs="),
        *("--output-dir", str(run_dir), "--force"),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(module_dir), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("DISCOPOP_DEBUG", None)
    with log.open("w", encoding="utf-8") as handle:
        child = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True, preexec_fn=_no_core_dumps
        )
        try:
            code_ = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # the group: accelerate or dataloader workers go with it
            child.wait()
            reason = f"training ran past --train-timeout {timeout:g} s and was stopped; raise it or shorten the recipe"
            return TrainedRun(False, run_dir, time.monotonic() - started, reason)
        except BaseException:
            # Ctrl-C reaches this process only (the child has a session of its own): stop the training with it.
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise
    seconds = time.monotonic() - started
    if code_ != 0:
        return TrainedRun(False, run_dir, seconds, _last_error(log, code_))
    return TrainedRun(True, run_dir, seconds)


def _last_error(log: Path, code: int) -> str:
    lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    detail = errors[-1] if errors else (lines[-1] if lines else "no output")
    return f"training exited with code {code}: {first_line(ValueError(detail))[:300]}"


def drop_weights(run_dir: Path) -> None:
    """After scoring, the weights go (unless --keep-models): the archive needs the numbers, not the models."""
    if not run_dir.is_dir():
        return
    for path in run_dir.iterdir():
        if path.suffix == ".safetensors" or path.name.startswith("checkpoint-"):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
