"""The `discopop` command line: each package defines its commands (`PACKAGE/cli.py`); this file assembles them.

A command's module is imported only when that command is asked for (or listed by `discopop --help`), and those
modules import only typer: torch, TRL and transformers load inside the command that runs, so `--help` stays fast.
"""

from __future__ import annotations

import importlib
import os
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from discopop_cli import __version__
from discopop_cli.core.errors import UserError
from discopop_cli.core.options import examples

# Command name -> (module, Typer app attribute), in the order of the pipeline; `discopop --help` lists them so.
COMMANDS: dict[str, tuple[str, str]] = {
    "sft": ("discopop_cli.train.cli", "sft"),
    "align": ("discopop_cli.train.cli", "align"),
    "merge": ("discopop_cli.merge.cli", "app"),
    "export": ("discopop_cli.export.cli", "app"),
    "chat": ("discopop_cli.chat.cli", "app"),
    "eval": ("discopop_cli.eval.cli", "app"),
    "losses": ("discopop_cli.losses.cli", "app"),
    "discover": ("discopop_cli.discover.cli", "app"),
}

_debug = False


class _Commands(TyperGroup):
    """Loads each command from its package on first use; turns what goes wrong into one line (see `invoke`)."""

    _loaded: dict[str, Any] = {}

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        if cmd_name not in self._loaded:
            module, attribute = COMMANDS[cmd_name]
            command = typer.main.get_command(getattr(importlib.import_module(module), attribute))
            command.name = cmd_name
            self._loaded[cmd_name] = command
        return self._loaded[cmd_name]

    def invoke(self, ctx: Any) -> Any:
        """A UserError becomes one red line and its exit code (2, or 1 for a failed run), a full disk one line too,
        Ctrl-C exit 130, SIGTERM exit 143; `--debug` shows the traceback."""
        from discopop_cli.core import faults
        from discopop_cli.core.console import error_line

        faults.raise_on_sigterm()
        try:
            return super().invoke(ctx)
        except UserError as exc:
            if _debug:
                raise
            error_line(str(exc))
            raise typer.Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            if _debug:
                raise
            error_line("interrupted by Ctrl-C (SIGINT)")
            raise typer.Exit(code=faults.INTERRUPTED_EXIT) from None
        except faults.Terminated:
            if _debug:
                raise
            error_line("stopped by SIGTERM")
            raise typer.Exit(code=faults.TERMINATED_EXIT) from None
        except OSError as exc:
            if _debug or not faults.is_disk_full(exc):
                raise
            where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
            error_line(f"the disk is full{where}; free some space or choose another output path")
            raise typer.Exit(code=1) from None


app = typer.Typer(
    cls=_Commands,
    name="discopop",
    help="Reproduce and extend DiscoPOP-aligned chat models with TRL.",
    epilog=examples(
        "discopop sft recipes/tiny-sft.yaml --force",
        "discopop align recipes/zephyr-7b-gemma.yaml --dry-run",
        "discopop export outputs/tiny-aligned --gguf --verify --force",
        "discopop chat outputs/tiny-aligned-gguf/tiny-aligned-Q4_K_M.gguf",
    ),
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"discopop-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    global _debug
    _debug = debug or os.environ.get("DISCOPOP_DEBUG") == "1"


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # before a command started (while parsing or importing): nothing to clean up
        raise SystemExit(130) from None


def command_paths() -> list[tuple[str, ...]]:
    """Every command and sub-command as the words a user types: ("align",), ("eval",), ("eval", "prefs"), ...

    The help tests and bench/startup.py walk this, so a new command is covered the day it is registered.
    """
    import typer.main

    def walk(group: Any, words: tuple[str, ...]) -> list[tuple[str, ...]]:
        found: list[tuple[str, ...]] = []
        for name in sorted(group.list_commands(None)):
            command = group.get_command(None, name)
            found.append((*words, name))
            if hasattr(command, "commands"):
                found.extend(walk(command, (*words, name)))
        return found

    return walk(typer.main.get_command(app), ())


if __name__ == "__main__":
    main()
