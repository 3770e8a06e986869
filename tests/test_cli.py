"""The command line itself: every `discopop ... --help` answers without importing the heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

from discopop_cli.cli import command_paths

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


def test_every_command_is_listed() -> None:
    assert {("align",), ("sft",), ("merge",), ("export",), ("losses",), ("eval", "prefs"), ("eval", "tasks")} <= set(
        command_paths()
    )


def test_every_help_is_light() -> None:
    for args in ([], *(list(path) for path in command_paths())):
        run = subprocess.run(
            [sys.executable, "-c", PROBE % (HEAVY,), *args, "--help"], capture_output=True, text=True, check=True
        )
        *help_text, last = run.stdout.strip().splitlines()
        result = json.loads(last)
        assert result == {"code": 0, "heavy": []}, (args, result)
        assert "Usage: discopop" in "\n".join(help_text), args
