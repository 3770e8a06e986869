"""Shared rich consoles: results go to stdout, notices and errors to stderr."""

import contextlib
import os
import sys

from rich.console import Console
from rich.markup import escape

from discopop_cli.core.faults import one_line

out = Console()
err = Console(stderr=True)


def is_main_rank() -> bool:
    # Under `accelerate launch` every rank runs the same code; one copy of each line is enough.
    return os.environ.get("RANK", "0") == "0"


def notice(message: str) -> None:
    """One line telling the user something was decided on their behalf."""
    if not is_main_rank():
        return
    err.print(f"[cyan]notice:[/] {escape(one_line(message, 1000))}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    if not is_main_rank():
        return
    err.print(f"[yellow]warning:[/] {escape(one_line(message, 1000))}", highlight=False, soft_wrap=True)


def error_line(message: str) -> None:
    """The one red line a failed command ends with (the traceback only under --debug)."""
    # A progress bar the failure cut short would otherwise have the error line glued to its end.
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        with contextlib.suppress(Exception):
            bar.close()
    err.print(f"[bold red]error:[/] {escape(one_line(message))}", highlight=False, soft_wrap=True)
