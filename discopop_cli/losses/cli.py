"""The Typer definition of `discopop losses`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from discopop_cli.core.options import JsonOption, examples

app = typer.Typer(rich_markup_mode="rich", add_completion=False)


@app.command(
    "losses",
    epilog=examples(
        "discopop losses",
        "discopop losses --json",
        "discopop losses discopop aqfl --plot outputs/losses.png --force",
    ),
)
def losses(
    names: Annotated[
        list[str] | None, typer.Argument(metavar="[NAMES]...", help="Losses to plot (default: every registered loss).")
    ] = None,
    as_json: JsonOption = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Draw each loss and its derivative against beta*d to this PNG."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing plot file.")] = False,
) -> None:
    """List the registered preference losses: name, formula, parameters."""
    from discopop_cli.losses.command import run_losses

    run_losses(names or [], as_json=as_json, plot=plot, force=force)
