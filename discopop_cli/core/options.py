"""What the commands' Typer definitions share: option types used by several commands, and help examples.

Only typer and rich are imported here, so a package's `cli` module stays light enough for `--help`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing output directory.")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe key: KEY=VALUE (YAML-typed, dotted keys for nesting). Repeatable."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
PlotOption = Annotated[Path | None, typer.Option("--plot", help="Where the PNG goes.")]


def examples(*command_lines: str) -> str:
    """A help epilog listing whole command lines, the way `hf`, `gh` and `uv` end their help.

    tests/test_cli.py reads them back (`examples_of`) and runs each one, so an example cannot rot.
    """
    lines = "\n".join(f"  $ {escape(line)}" for line in command_lines)
    return f"[bold]Examples[/]\n\n{lines}"


def examples_of(epilog: str | None) -> list[str]:
    """The command lines an `examples()` epilog holds, unescaped."""
    found = []
    for line in (epilog or "").splitlines():
        if line.startswith("  $ "):
            found.append(line[4:].replace("\\[", "["))
    return found
