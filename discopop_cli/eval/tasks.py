"""`discopop eval tasks MODEL --tasks T[,T...]`: benchmark tasks through lm-evaluation-harness.

lm-eval is the `eval` extra (`pip install 'discopop-cli[eval]'`). A model folder or Hub id runs through lm-eval's
`hf` backend. A `.gguf` file runs through its `gguf` backend, talking to a llama.cpp server (llama-cpp-python's, the
`gguf` extra) that this command starts on 127.0.0.1 and stops afterwards; there only generation tasks run, and
log-likelihood tasks (multiple choice, perplexity) are refused with the reason (see gguf_lm.py).
`--include-path` adds a folder of your own task YAML files, which run offline when their data is local.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from discopop_cli.core.console import notice, out
from discopop_cli.core.errors import RunFailure, UserError, first_line
from discopop_cli.core.suggest import suggest
from discopop_cli.eval import models

INSTALL_HINT = "pip install 'discopop-cli[eval]' (or: pip install lm-eval)"
_SERVER_START_S = 180


def task_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UserError("--tasks names no task; give lm-eval task names, e.g. --tasks hellaswag,arc_easy")
    return names


def check_lm_eval() -> None:
    import importlib.util

    if importlib.util.find_spec("lm_eval") is None:
        raise UserError(f"eval tasks needs lm-evaluation-harness; run: {INSTALL_HINT}")


def check_model_arg(model: str) -> bool:
    """True for a GGUF file; a model folder is checked like eval prefs checks one."""
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"GGUF file {model} not found; fix the path (discopop export writes MODEL-gguf/*.gguf)")
        import importlib.util

        if importlib.util.find_spec("llama_cpp") is None:
            raise UserError("a GGUF runs through llama.cpp; run: pip install 'discopop-cli[gguf,server]'")
        return True
    models.check_model(model)
    return False


def task_manager(names: list[str], include_path: Path | None) -> Any:
    """lm-eval's task index, refusing unknown names; only the local folder is indexed when it has every task."""
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        if not include_path.is_dir():
            raise UserError(f"--include-path {include_path} is not a folder; point it at a folder of task YAML files")
        local = TaskManager(include_path=str(include_path), include_defaults=False)
        if all(name in local.all_tasks for name in names):
            return local
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    known = set(manager.all_tasks)
    for name in names:
        if name not in known:
            raise UserError(
                f"unknown lm-eval task '{name}'{suggest(name, known)}; `lm-eval ls tasks` lists them"
                + ("" if include_path else ", and --include-path adds a folder of your own")
            )
    return manager


@contextlib.contextmanager
def llama_server(gguf: Path) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on a free local port, for as long as the block runs."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--n_ctx", "2048", "--logits_all", "true", "--verbose", "false"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until_serving(server, port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def _wait_until_serving(server: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + _SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            reason = (server.stderr.read() if server.stderr else "").strip().splitlines()
            raise RunFailure(f"the llama.cpp server stopped at start: {reason[-1] if reason else 'no message'}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.5)
    raise RunFailure(f"the llama.cpp server did not answer within {_SERVER_START_S} s")


def _scores(raw: dict[str, Any], names: list[str]) -> dict[str, dict[str, Any]]:
    """Per task: its metrics (lm-eval's `acc,none` read as `acc`), sample count and dataset."""
    found = {}
    for task, values in raw.get("results", {}).items():
        metrics, stderr = {}, {}
        for key, value in values.items():
            metric, _, filter_name = key.partition(",")
            if metric in ("alias", "sample_len") or not isinstance(value, int | float):
                continue
            name = metric if filter_name in ("none", "") else f"{metric} ({filter_name})"
            if metric.endswith("_stderr"):
                stderr[name.replace("_stderr", "", 1)] = float(value)
            else:
                metrics[name] = float(value)
        config = raw.get("configs", {}).get(task, {})
        samples = raw.get("n-samples", {}).get(task, {})
        found[task] = {
            "metrics": metrics,
            "stderr": stderr,
            "samples": samples.get("effective"),
            "dataset": config.get("dataset_path"),
            "split": config.get("test_split") or config.get("validation_split"),
        }
    missing = [name for name in names if name not in found]
    if missing and not found:
        raise RunFailure(f"lm-eval returned no results for {', '.join(missing)}")
    return found


def _evaluate(model: str, is_gguf: bool, names: list[str], manager: Any, options: dict[str, Any]) -> dict:
    from lm_eval import simple_evaluate

    from discopop_cli.eval.logps import device, resolve_dtype

    common = {"tasks": names, "task_manager": manager, "limit": options["limit"], "log_samples": False}
    common |= {"num_fewshot": options["num_fewshot"], "verbosity": "ERROR"}
    try:
        if is_gguf:
            from discopop_cli.eval.gguf_lm import gguf_lm

            with llama_server(Path(model)) as url:
                return simple_evaluate(model=gguf_lm(url), **common)
        dtype = str(resolve_dtype(options["dtype"])).removeprefix("torch.")
        args = {"pretrained": model, "dtype": dtype, "trust_remote_code": False}
        return simple_evaluate(
            model="hf", model_args=args, batch_size=options["batch_size"], device=str(device()), **common
        )
    except NotImplementedError as exc:
        raise UserError(
            f"lm-eval's {'GGUF' if is_gguf else 'hf'} backend cannot run {', '.join(names)}: {first_line(exc)}"
        ) from None


def run_tasks(
    model: str,
    *,
    tasks: str,
    include_path: Path | None,
    limit: int | None,
    num_fewshot: int | None,
    batch_size: int,
    dtype: str,
    as_json: bool,
    save: bool,
) -> None:
    import json

    from discopop_cli.eval import results as saved
    from discopop_cli.eval.logps import resolve_dtype

    names = task_names(tasks)
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    resolve_dtype(dtype)
    check_lm_eval()
    is_gguf = check_model_arg(model)
    if save:
        saved.check_can_save([model])
    manager = task_manager(names, include_path)
    options = {"limit": limit, "num_fewshot": num_fewshot, "batch_size": batch_size, "dtype": dtype}
    scores = _scores(_evaluate(model, is_gguf, names, manager, options) or {}, names)
    if as_json:
        out.print_json(json.dumps({"model": model, "tasks": scores}))
    else:
        _print_table(model, scores)
    if save:
        setting = {"backend": "gguf (llama.cpp)" if is_gguf else "hf", "limit": limit, "num_fewshot": num_fewshot}
        written = saved.save_tasks(model, scores, setting)
        if written is not None and not as_json:
            notice(f"results kept in {written} (eval_results.json, README.md model-index)")


def _print_table(model: str, scores: dict[str, dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=f"{model}: lm-evaluation-harness")
    for column in ("task", "metric", "value", "stderr", "samples"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for task, values in scores.items():
        for metric, value in values["metrics"].items():
            error = values["stderr"].get(metric)
            shown = f"{error:.4f}" if isinstance(error, float) else ""
            table.add_row(task, metric, f"{value:.4f}", shown, str(values.get("samples") or ""))
    out.print(table)
