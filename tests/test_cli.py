"""The command line itself: every `discopop ... --help` answers without importing the heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

import typer.main

from discopop_cli.cli import app

HEAVY = ("torch", "transformers", "trl", "datasets", "peft", "accelerate", "gguf", "llama_cpp", "numpy")

PROBE = """
import json, sys
from discopop_cli.cli import app
try:
    app(sys.argv[1:], prog_name="discopop")
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": sorted(m for m in %r if m in sys.modules)}))
"""


def command_names() -> list[str]:
    return sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def command_paths() -> list[list[str]]:
    """Every command, and every command of a sub-group (`eval prefs`), as the arguments that reach it."""
    paths = []
    for name, command in sorted(typer.main.get_command(app).commands.items()):  # type: ignore[attr-defined]
        paths.append([name])
        paths += [[name, sub] for sub in sorted(getattr(command, "commands", {}))]
    return paths


def test_every_command_is_listed() -> None:
    assert {"align", "sft", "merge", "export", "losses", "eval"} <= set(command_names())
    assert {("eval", "prefs"), ("eval", "tasks")} <= {tuple(p) for p in command_paths()}


def test_every_help_is_light() -> None:
    for args in ([], *command_paths()):
        run = subprocess.run(
            [sys.executable, "-c", PROBE % (HEAVY,), *args, "--help"], capture_output=True, text=True, check=True
        )
        *help_text, last = run.stdout.strip().splitlines()
        result = json.loads(last)
        assert result == {"code": 0, "heavy": []}, (args, result)
        assert "Usage: discopop" in "\n".join(help_text), args
