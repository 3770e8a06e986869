"""The command line itself: every `discopop ... --help` answers without importing the heavy libraries, and ends
with examples that work."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from discopop_cli.cli import app, command_paths
from discopop_cli.core.options import examples_of

HEAVY = ("torch", "transformers", "trl", "datasets", "peft", "accelerate", "gguf", "llama_cpp", "numpy")
REPO = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys
from discopop_cli.cli import app
try:
    app(sys.argv[1:], prog_name="discopop")
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": sorted(m for m in %r if m in sys.modules)}))
"""


def click_command(path: tuple[str, ...]):
    command = typer.main.get_command(app)
    for word in path:
        command = command.get_command(None, word)
    return command


def all_examples() -> list[tuple[tuple[str, ...], str]]:
    return [(path, line) for path in [(), *command_paths()] for line in examples_of(click_command(path).epilog)]


def test_every_command_is_listed() -> None:
    expected = {("align",), ("sft",), ("merge",), ("export",), ("chat",), ("losses",), ("eval", "prefs")}
    assert expected | {("eval", "tasks"), ("eval", "judge"), ("discover", "run")} <= set(command_paths())


def test_every_help_is_light() -> None:
    for args in ([], *(list(path) for path in command_paths())):
        run = subprocess.run(
            [sys.executable, "-c", PROBE % (HEAVY,), *args, "--help"], capture_output=True, text=True, check=True
        )
        *help_text, last = run.stdout.strip().splitlines()
        result = json.loads(last)
        assert result == {"code": 0, "heavy": []}, (args, result)
        assert "Usage: discopop" in "\n".join(help_text), args
        assert "Examples" in "\n".join(help_text), args


@pytest.mark.parametrize("path", [(), *command_paths()], ids=lambda path: " ".join(path) or "discopop")
def test_every_help_ends_with_two_to_four_examples_of_itself(path: tuple[str, ...]) -> None:
    lines = examples_of(click_command(path).epilog)
    assert 2 <= len(lines) <= 4, (path, lines)
    for line in lines:
        words = shlex.split(line)
        assert words[0] == "discopop" and tuple(words[1 : 1 + len(path)]) == path, line


@pytest.fixture(scope="module")
def example_root(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository's recipes beside the tiny model where `make demo` builds it (build/tiny-gemma)."""
    root = tmp_path_factory.mktemp("checkout")
    shutil.copytree(REPO / "recipes", root / "recipes")
    (root / "tests").symlink_to(REPO / "tests")
    (root / "build").mkdir()
    (root / "build" / "tiny-gemma").symlink_to(tiny_model_dir)
    return root


def resolve(words: list[str]):
    """The command a command line reaches, and where its own arguments start (`discover RECIPE` means `discover run`)."""
    command, used = typer.main.get_command(app), 0
    while hasattr(command, "commands") and used < len(words):
        sub = command.get_command(None, words[used])
        if sub is None and "run" in command.commands:
            sub, used = command.get_command(None, "run"), used - 1
        if sub is None:
            break
        command, used = sub, used + 1
    return command, used


@pytest.mark.parametrize(("path", "line"), all_examples(), ids=lambda value: value if isinstance(value, str) else "")
def test_every_example_runs(
    path: tuple[str, ...], line: str, example_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An example with --dry-run runs for real (in a checkout as `make demo` leaves it); the others are parsed by the
    command itself, every option and argument checked, and the repository files they name exist."""
    monkeypatch.chdir(example_root)
    words = shlex.split(line)[1:]
    for word in words:
        if word.startswith(("recipes/", "tests/")):
            assert (REPO / word).exists(), f"{line}: {word} is not in the repository"
    if "--dry-run" in words:
        result = CliRunner().invoke(app, words)
        assert result.exit_code == 0, f"{line}\n{result.output}"
        return
    command, start = resolve(words)
    assert not hasattr(command, "commands"), f"{line} names no command"
    command.make_context(" ".join(words[:start]), words[start:], resilient_parsing=False)
