"""Shared rich consoles: results go to stdout, notices and errors to stderr."""

from rich.console import Console
from rich.markup import escape

out = Console()
err = Console(stderr=True)


def notice(message: str) -> None:
    """One line telling the user something was decided on their behalf."""
    err.print(f"[cyan]notice:[/] {escape(message)}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
