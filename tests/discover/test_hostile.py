"""Hostile candidates: each is refused with its reason, none reaches training, the machine and the archive stay
intact. First through `discopop discover` itself (the static allow-list, then the sandbox), then straight into the
sandbox with the static check bypassed, to show the second wall holds on its own."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from discover_helpers import MARGIN, SIGNATURE, discover_recipe, write_candidates
from typer.testing import CliRunner

from discopop_cli.cli import app
from discopop_cli.discover import sandbox

runner = CliRunner()

HEAD = f"import torch\nimport torch.nn.functional as F\n\n\ndef loss({SIGNATURE}):\n"
PAPER_HEAD = "import torch\n\n\ndef loss(self, pc, pr, rc, rr):\n"


def body(*lines: str) -> str:
    return HEAD + "".join(f"    {line}\n" for line in lines)


# name -> (source, stage, a piece of the reason). VICTIM is a file the candidates go after; PWNED one they try to make.
HOSTILE: dict[str, tuple[str, str, str]] = {
    "read_file": (
        body("open('VICTIM').read()", "return policy_chosen_logps"),
        "static",
        "`open` is not defined or not allowed",
    ),
    "write_file": (
        body("open('PWNED', 'w').write('x')", "return policy_chosen_logps"),
        "static",
        "`open` is not defined or not allowed",
    ),
    "import_os": (
        "import os\n" + body("os.remove('VICTIM')", "return policy_chosen_logps"),
        "static",
        "import of `os`",
    ),
    "import_inside": (body("import subprocess", "return policy_chosen_logps"), "static", "import of `subprocess`"),
    "from_os": ("from os import system\n" + body("return policy_chosen_logps"), "static", "import of `os`"),
    "import_socket": ("import socket\n" + body("return policy_chosen_logps"), "static", "import of `socket`"),
    "dunder_import": (
        body("__import__('os').system('touch PWNED')", "return policy_chosen_logps"),
        "static",
        "names starting with `_`",
    ),
    "subclasses_escape": (
        body("for c in ().__class__.__base__.__subclasses__(): pass", "return policy_chosen_logps"),
        "static",
        "For is not allowed",
    ),
    "dunder_attribute": (
        body("g = policy_chosen_logps.__class__", "return policy_chosen_logps"),
        "static",
        "names starting with `_`",
    ),
    "globals_builtins": (
        body("globals()['open']('PWNED', 'w')", "return policy_chosen_logps"),
        "static",
        "`globals` is not defined or not allowed",
    ),
    "exec_string": (
        body("exec('import os')", "return policy_chosen_logps"),
        "static",
        "`exec` is not defined or not allowed",
    ),
    "eval_string": (body("return eval('policy_chosen_logps')"), "static", "`eval` is not defined or not allowed"),
    "getattr_trick": (
        body("return getattr(torch, 'lo' + 'ad')('VICTIM')"),
        "static",
        "`getattr` is not defined or not allowed",
    ),
    "torch_save": (
        body("torch.save(policy_chosen_logps, 'PWNED')", "return policy_chosen_logps"),
        "static",
        "`torch.save` is not on the allow-list",
    ),
    "torch_load": (body("return torch.load('VICTIM')"), "static", "`torch.load` is not on the allow-list"),
    "torch_hub": (
        body("torch.hub.load('x/y', 'z')", "return policy_chosen_logps"),
        "static",
        "`torch.hub.load` is not on the allow-list",
    ),
    "tensor_data": (
        body("policy_chosen_logps.data.zero_()", "return policy_chosen_logps"),
        "static",
        "`.data` is not on the allow-list",
    ),
    "numpy_escape": (
        body("return torch.tensor(policy_chosen_logps.numpy())"),
        "static",
        "`.numpy` is not on the allow-list",
    ),
    "infinite_loop": (body("while True:", "    pass", "return policy_chosen_logps"), "static", "While is not allowed"),
    "recursion": (
        body("return loss(policy_chosen_logps, policy_rejected_logps, 0, 0, beta=beta)"),
        "static",
        "`loss` is not defined or not allowed",
    ),
    "lambda": (body("f = lambda x: x", "return policy_chosen_logps"), "static", "Lambda is not allowed"),
    "list_bomb": (body("b = [0] * 1000000 * 1000000", "return policy_chosen_logps"), "static", "arithmetic on lists"),
    "try_except": (
        body("try:", "    pass", "except Exception:", "    pass", "return policy_chosen_logps"),
        "static",
        "Try is not allowed",
    ),
    "self_dict": (PAPER_HEAD + "    return self.__dict__\n", "static", "names starting with `_`"),
    "two_functions": (body("return policy_chosen_logps") + "\n\ndef other():\n    return 1\n", "static", "exactly one"),
    "class_def": ("class Loss:\n    pass\n\n\n" + body("return policy_chosen_logps"), "static", "module level"),
    "syntax_error": (body("return (policy_chosen_logps"), "static", "does not parse"),
    "print_breakpoint": (
        body("breakpoint()", "return policy_chosen_logps"),
        "static",
        "`breakpoint` is not defined or not allowed",
    ),
    # Past the allow-list, into the sandbox: the properties a loss must have, and the limits on what it may spend.
    "memory_bomb": (
        body(
            "a = policy_chosen_logps.unsqueeze(0) * policy_chosen_logps.unsqueeze(1)",
            "b = a.flatten().unsqueeze(0) * a.flatten().unsqueeze(1)",
            "c = b.flatten().unsqueeze(0) * b.flatten().unsqueeze(1)",
            "return c.sum() * policy_chosen_logps",
        ),
        "sandbox",
        "memory limit",
    ),
    "cpu_bomb": (body("n = (999999 ** 999999) ** 999999", "return policy_chosen_logps * n"), "sandbox", "limit"),
    "nan_output": (body("return torch.log(policy_chosen_logps)"), "sandbox", "non-finite values"),
    "inf_output": (body(f"return torch.exp(-beta * ({MARGIN}) * 100)"), "sandbox", "non-finite"),
    "wrong_shape_scalar": (body(f"return -F.logsigmoid(beta * ({MARGIN})).mean()"), "sandbox", "returns shape []"),
    "wrong_shape_matrix": (
        body("return policy_chosen_logps.unsqueeze(0) - policy_rejected_logps.unsqueeze(1)"),
        "sandbox",
        "returns shape [16, 16]",
    ),
    "returns_float": (body("return 1.0"), "sandbox", "returns float, not a tensor"),
    "gradient_free_detach": (body(f"return -F.logsigmoid(beta * ({MARGIN})).detach()"), "sandbox", "no gradient"),
    "gradient_free_constant": (body("return torch.zeros_like(policy_chosen_logps)"), "sandbox", "no gradient"),
    "reference_only": (
        body("return -F.logsigmoid(reference_chosen_logps - reference_rejected_logps)"),
        "sandbox",
        "no gradient",
    ),
    "wrong_direction": (body(f"return F.logsigmoid(beta * ({MARGIN}))"), "sandbox", "pushes the chosen"),
    "runtime_error": (body("return torch.cat(policy_chosen_logps)"), "sandbox", "TypeError"),
}


def test_hostile_candidates_are_refused_and_never_trained(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    pwned = tmp_path / "pwned"
    sources = {
        f"{i:02d}_{name}.py": source.replace("VICTIM", str(victim)).replace("PWNED", str(pwned))
        for i, (name, (source, _, _)) in enumerate(HOSTILE.items())
    }
    inbox = write_candidates(tmp_path / "inbox", sources)
    recipe = discover_recipe(tmp_path, tiny_model_dir, tiny_dataset_path)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["discover", str(recipe), "--proposer", f"dir:{inbox}", "--generations", "100", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "none scored" in result.output

    entries = [json.loads(line) for line in (out / "archive.jsonl").read_text().splitlines()]
    assert len(entries) == len(HOSTILE) >= 25
    for entry, (name, (_, stage, reason)) in zip(entries, HOSTILE.items(), strict=True):
        assert entry["origin"].endswith(f"_{name}.py")
        assert (entry["status"], entry["stage"]) == ("rejected", stage), (name, entry["reason"])
        assert reason in entry["reason"], (name, entry["reason"])
    # Nothing was trained, nothing was written but the archive and the run's settings, and the victim is intact.
    assert sorted(p.name for p in out.iterdir()) == [".discopop-output.json", "archive.jsonl", "discover.json"]
    assert victim.read_text() == "keep me\n" and not pwned.exists()
    after = sorted(str(p) for p in tmp_path.rglob("*") if not str(p).startswith(str(out)))
    assert after == before


# The sandbox on its own: code that never passed the allow-list still cannot reach files, processes or the network.
ESCAPES = {
    "os_system_via_subclasses": (
        "def loss(pc, pr, rc, rr, *, beta):\n"
        "    for c in ().__class__.__base__.__subclasses__():\n"
        "        if c.__name__ == '_wrap_close':\n"
        "            c.__init__.__globals__['system']('touch PWNED')\n"
        "    return pc\n",
        "blocked by the discover sandbox: os.system",
    ),
    "torch_save_writes": (
        "import torch\ndef loss(pc, pr, rc, rr, *, beta):\n    torch.save(pc, 'PWNED')\n    return pc\n",
        "blocked",
    ),
    "torch_load_reads": (
        "import torch\ndef loss(pc, pr, rc, rr, *, beta):\n    return torch.load('VICTIM')\n",
        "blocked",
    ),
    "import_os": ("def loss(pc, pr, rc, rr, *, beta):\n    import os\n    return pc\n", "import of os is not allowed"),
    "open_builtin": ("def loss(pc, pr, rc, rr, *, beta):\n    open('PWNED', 'w')\n    return pc\n", "NameError"),
    "socket_via_globals": (
        "def loss(pc, pr, rc, rr, *, beta):\n"
        "    for c in ().__class__.__base__.__subclasses__():\n"
        "        if c.__name__ == '_wrap_close':\n"
        "            c.__init__.__globals__['sys'].modules['socket'].create_connection(('127.0.0.1', 9))\n"
        "    return pc\n",
        "blocked",
    ),
}


@pytest.mark.parametrize("name", list(ESCAPES))
def test_the_sandbox_holds_without_the_allow_list(tmp_path: Path, name: str) -> None:
    victim = tmp_path / "victim.pt"
    victim.write_bytes(b"not a tensor")
    pwned = tmp_path / "pwned"
    code, reason = ESCAPES[name]
    code = code.replace("VICTIM", str(victim)).replace("PWNED", str(pwned))
    cwd = os.getcwd()
    verdict = sandbox.probe(code, "loss", paper_form=False, beta=0.1)
    assert not verdict.ok
    assert reason in verdict.reason, verdict.reason
    assert not pwned.exists() and victim.read_bytes() == b"not a tensor" and os.getcwd() == cwd


# The checks are not so strict that the paper's own losses, written plainly, fail them.
PAPER = {
    "discopop": """
        import torch
        import torch.nn.functional as F


        def lrml(pc, pr, rc, rr, *, beta, tau=0.05):
            x = beta * ((pc - pr) - (rc - rr))
            m = torch.sigmoid(x / tau)
            return (1 - m) * -F.logsigmoid(x) + m * torch.exp(-x)
        """,
    "pfl_paper_form": """
        import torch
        from torch.nn import functional as F


        def pfl(self, pc, pr, rc, rr):
            x = self.beta * ((pc - pr) - (rc - rr))
            return torch.where(pc > pr, -F.logsigmoid(x) / 2, 2 * torch.relu(1 - x))
        """,
    "aqfl_batch_statistics": """
        import math
        import torch
        import torch.nn.functional as F


        def aqfl(pc, pr, rc, rr, *, beta):
            z = beta * ((pc - pr) - (rc - rr)) / 0.05
            q0 = z.std() * torch.sigmoid(-z).mean()
            q = q0 + 0.05 * (torch.sigmoid(z.mean()) - q0)
            b = torch.sigmoid(0.1 * (z - q).abs())
            return b * -F.logsigmoid(z * 0.05) + (1 - b) * F.relu(1 - z * 0.05) + 0 * math.pi
        """,
}


@pytest.mark.parametrize("name", list(PAPER))
def test_the_papers_losses_pass_every_check(name: str) -> None:
    import textwrap

    from discopop_cli.discover.candidate import Candidate
    from discopop_cli.discover.validate import digest_of, validate

    candidate = Candidate(code=textwrap.dedent(PAPER[name]), origin=f"{name}.py")
    passed = validate(candidate, digest_of(candidate), [], beta=0.05, limits=sandbox.Limits())
    assert len(passed.fingerprint) == 16 and passed.gradient[0] < 0 < passed.gradient[1]
