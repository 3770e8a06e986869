"""The property checks, run as a script in a fresh, isolated interpreter (`python -I probe.py`) by `sandbox`.

It reads one JSON request on stdin, imports torch, locks itself down (an audit hook refusing files, sockets,
processes, ctypes and new imports; builtins cut to a handful; one thread), defines the candidate's function
and calls it on fixed inputs. It answers with one line on stdout: the request's nonce, then a JSON verdict.
This file imports nothing from discopop_cli: the child must not load the project (or anything else) to run.
"""

from __future__ import annotations

import json
import math
import sys
import types

_REFUSED_PREFIXES = (
    *("open", "socket.", "subprocess.", "os.", "shutil.", "ctypes.", "import", "compile", "exec", "sys._getframe"),
    *("builtins.input", "code.", "pty.", "fcntl.", "mmap.", "urllib.", "http.", "ftplib.", "smtplib.", "webbrowser."),
    *(
        "glob.",
        "pathlib.",
        "tempfile.",
        "resource.",
        "signal.",
        "sys.settrace",
        "sys.setprofile",
        "marshal.",
        "pickle.",
    ),
    *("winreg.", "msvcrt.", "object.__setattr__", "object.__delattr__", "function.__new__", "code.__new__"),
)
_locked = False


def _audit(event: str, args: tuple) -> None:
    if _locked and event.startswith(_REFUSED_PREFIXES):
        raise PermissionError(f"blocked by the discover sandbox: {event}")


def _modules() -> types.SimpleNamespace:
    """The one `import` a candidate may run: torch, torch.nn, torch.nn.functional or math, already loaded."""
    import torch
    import torch.nn.functional

    modules = {"torch": torch, "torch.nn": torch.nn, "torch.nn.functional": torch.nn.functional, "math": math}

    def safe_import(name: str, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002, B006
        if level or name not in modules:
            raise ImportError(f"import of {name} is not allowed")
        return modules[name] if fromlist else modules[name.split(".")[0]]

    return types.SimpleNamespace(safe_import=safe_import, torch=torch)


def _inputs(torch, batch: int, seed: int, kind: str, beta: float) -> list:
    generator = torch.Generator().manual_seed(seed)
    if kind == "random":
        values = [-(torch.rand(batch, generator=generator) * 200 + 5) for _ in range(4)]
    elif kind == "equal":  # chosen and rejected alike: the margin is 0
        same = -(torch.rand(batch, generator=generator) * 50 + 5)
        values = [same.clone() for _ in range(4)]
    elif kind in ("winning", "losing"):  # |beta * d| = 50: far past any margin a real batch shows
        sign = 1.0 if kind == "winning" else -1.0
        base = -(torch.rand(batch, generator=generator) * 50 + 100)
        values = [base + sign * 25 / beta, base - sign * 25 / beta, base.clone(), base.clone()]
    else:  # "long": log-probabilities of very long completions, moderate margins
        base = -(torch.rand(batch, generator=generator) * 1000 + 9000)
        values = [base + torch.randn(batch, generator=generator) * 20 for _ in range(4)]
    return [v.float().requires_grad_(True) for v in values]


def _call(fn, paper_form: bool, beta: float, values: list):
    if paper_form:
        return fn(types.SimpleNamespace(beta=beta), *values)
    return fn(*values, beta=beta)


def _check_case(torch, fn, request: dict, kind: str, batch: int) -> dict:
    beta = float(request["beta"])
    values = _inputs(torch, batch, 1234, kind, beta)
    out = _call(fn, request["paper_form"], beta, values)
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"returns {type(out).__name__}, not a tensor of shape [{batch}]")
    if tuple(out.shape) != (batch,):
        raise ValueError(f"returns shape {list(out.shape)} for a batch of {batch}; one loss per pair, shape [{batch}]")
    if not out.dtype.is_floating_point:
        raise ValueError(f"returns {out.dtype}, not a floating-point tensor")
    if not bool(torch.isfinite(out).all()):
        shown = ", ".join(f"{v:.4g}" for v in out.detach()[:4].tolist())
        raise ValueError(f"returns non-finite values on {kind} inputs (first four: {shown})")
    if not out.requires_grad:
        raise ValueError(f"carries no gradient to the policy log-probabilities on {kind} inputs")
    grads = torch.autograd.grad(out.sum(), values[:2], allow_unused=True)
    if any(g is None for g in grads):
        raise ValueError(f"carries no gradient to the policy log-probabilities on {kind} inputs")
    for g in grads:
        if not bool(torch.isfinite(g).all()):
            raise ValueError(f"has non-finite gradients on {kind} inputs")
    return {
        "kind": kind,
        "out": out.detach().tolist(),
        "d_chosen": grads[0].sum().item(),
        "d_rejected": grads[1].sum().item(),
    }


def _checks(torch, fn, request: dict) -> dict:
    results = [_check_case(torch, fn, request, kind, batch) for kind, batch in request["cases"]]
    random = results[0]
    if random["d_chosen"] == 0 and random["d_rejected"] == 0:
        raise ValueError("carries no gradient to the policy log-probabilities on random inputs (it is flat)")
    if not random["d_chosen"] < 0:
        raise ValueError("its gradient pushes the chosen log-probabilities down on random inputs (dL/d chosen >= 0)")
    if not random["d_rejected"] > 0:
        raise ValueError("its gradient pushes the rejected log-probabilities up on random inputs (dL/d rejected <= 0)")
    again = _check_case(torch, fn, request, *request["cases"][0])
    if again["out"] != random["out"]:
        raise ValueError("gives different values for the same inputs (it must be deterministic)")
    return {"fingerprint": random["out"], "gradient": [random["d_chosen"], random["d_rejected"]]}


def _limit(limits: dict) -> None:
    """Hard limits, lowered before anything of the request runs; an unprivileged process cannot raise them again."""
    import resource
    import signal

    cpu = int(limits["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_AS, (int(limits["memory_bytes"]),) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(limits["open_files"]),) * 2)
    # Past the file-size limit a write fails (EFBIG) instead of killing the process with SIGXFSZ.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _no_file_writes() -> None:
    """File size 0, once torch is loaded (its import probes for a usable temporary directory by writing to it)."""
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def main() -> None:
    global _locked
    request = json.loads(sys.stdin.readline())
    _limit(request["limits"])
    nonce = request["nonce"]
    sys.addaudithook(_audit)
    loaded = _modules()
    torch = loaded.torch
    torch.set_num_threads(1)
    _no_file_writes()
    code = compile(request["code"], "<candidate>", "exec")
    safe_builtins = {
        **{name: getattr(__builtins__, name, None) for name in ("abs", "min", "max", "float", "bool", "round", "sum")},
        "__import__": loaded.safe_import,
        "True": True,
        "False": False,
        "None": None,
    }
    namespace = {"__builtins__": safe_builtins, "__name__": "candidate"}
    verdict: dict
    try:
        exec(code, namespace)  # the one exec: the source passed the static allow-list first
        _locked = True
        fn = namespace[request["function"]]
        verdict = {"ok": True, **_checks(torch, fn, request)}
    except MemoryError:
        verdict = {"ok": False, "reason": "ran out of memory (memory limit)"}
    except RecursionError:
        verdict = {"ok": False, "reason": "recursion too deep"}
    except Exception as exc:  # the candidate's own failure is the verdict, not a crash of the probe
        message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        verdict = {
            "ok": False,
            "reason": message if isinstance(exc, ValueError) else f"{type(exc).__name__}: {message}",
        }
    line = nonce + json.dumps(verdict, default=str)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
