"""`discopop losses`: list the registered preference losses, as a table or JSON, or plot them to a PNG."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from discopop_cli.core.errors import UserError

if TYPE_CHECKING:
    from discopop_cli.losses import LossSpec

PLOT_BETA = 0.05
PLOT_X_RANGE = (-6.0, 6.0)
PLOT_POINTS = 241
NOTATION = "x = beta * d,  d = (pc - pr) - (rc - rr),  sig = logistic sigmoid"


def run_losses(names: list[str], *, as_json: bool, plot: Path | None, force: bool) -> None:
    """List every registered loss, or with `plot` draw the named ones (default: all) to a PNG."""
    from discopop_cli.losses import get_spec, list_losses

    if plot is None:
        if names:
            raise UserError(
                f"loss names ({', '.join(names)}) only apply with --plot FILE.png; "
                "drop them to list every loss, or add --plot."
            )
        specs = list_losses()
        if as_json:
            _print_json(specs)
        else:
            _print_table(specs)
        return
    if as_json:
        raise UserError("--json and --plot are separate modes; use one of them.")
    specs = [get_spec(name) for name in dict.fromkeys(names)] if names else list_losses()
    _check_plot_path(plot, force=force)
    _write_plot(specs, plot)
    from discopop_cli.core.console import out

    out.print(f"wrote the plot of {len(specs)} losses to {plot}", highlight=False, soft_wrap=True)


def _format_params(params: dict[str, float]) -> str:
    return "\n".join(f"{key}={value:g}" for key, value in params.items()) or "-"


def _print_json(specs: list[LossSpec]) -> None:
    rows = [
        {
            "name": spec.name,
            "aliases": list(spec.aliases),
            "long_name": spec.long_name,
            "formula": spec.formula,
            "params": dict(spec.params),
        }
        for spec in specs
    ]
    sys.stdout.write(json.dumps(rows, indent=2) + "\n")


def _print_table(specs: list[LossSpec]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from discopop_cli.core.console import out

    table = Table(title="Preference losses", caption=NOTATION, show_lines=True)
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("aliases", no_wrap=True)
    table.add_column("long name")
    table.add_column("formula")
    table.add_column("parameters", no_wrap=True)
    for spec in specs:
        table.add_row(
            escape(spec.name),
            escape(", ".join(spec.aliases) or "-"),
            escape(spec.long_name),
            escape(spec.formula or "-"),
            escape(_format_params(spec.params)),
        )
    out.print(table)


def _check_plot_path(plot: Path, *, force: bool) -> None:
    if plot.suffix.lower() != ".png":
        raise UserError(f"--plot {plot}: the file must end in .png; give a name like losses.png.")
    if plot.is_dir():
        raise UserError(f"--plot {plot} is a directory; give a file name ending in .png.")
    from discopop_cli.core.outputs import check_destination

    check_destination(plot, force=force, what="--plot file")


def _curves(spec: LossSpec, xs: list[float]) -> tuple[list[float], list[float]]:
    """Loss and dL/dx at each x, each point evaluated as a single pair (pc = x / beta, pr = rc = rr = 0)."""
    import torch

    values: list[float] = []
    slopes: list[float] = []
    zero = torch.zeros(1, dtype=torch.float64)
    for x_value in xs:
        x = torch.tensor([x_value], dtype=torch.float64, requires_grad=True)
        loss = spec.fn(x / PLOT_BETA, zero, zero, zero, beta=PLOT_BETA).sum()
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
        values.append(loss.item())
        slopes.append(float(grad) if grad is not None else 0.0)
    return values, slopes


def _write_plot(specs: list[LossSpec], plot: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lo, hi = PLOT_X_RANGE
    xs = [lo + (hi - lo) * i / (PLOT_POINTS - 1) for i in range(PLOT_POINTS)]
    fig = Figure(figsize=(13, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_slope = fig.subplots(1, 2)
    styles = ["-", "--", "-.", ":"]
    for i, spec in enumerate(specs):
        values, slopes = _curves(spec, xs)
        style = styles[(i // 10) % len(styles)]
        ax_loss.plot(xs, values, style, label=spec.name)
        ax_slope.plot(xs, slopes, style, label=spec.name)
    for ax, ylabel in ((ax_loss, "loss L"), (ax_slope, "dL/dx (autograd)")):
        ax.set_yscale("symlog", linthresh=1.0)
        ax.axvline(0.0, color="0.7", linewidth=0.8)
        ax.axhline(0.0, color="0.7", linewidth=0.8)
        ax.set_xlabel("x = beta * d")
        ax.set_ylabel(ylabel + " (symlog scale)")
        ax.grid(True, alpha=0.3)
    ax_loss.set_title("loss")
    ax_slope.set_title("derivative")
    ax_slope.legend(loc="best", fontsize="small")
    fig.suptitle(
        f"Preference losses against x = beta * d (beta = {PLOT_BETA:g}, default parameters)\n"
        "each point is a single pair (pc = d, pr = rc = rr = 0): batch statistics use the n = 1 rule "
        "(std = var = 0)",
        fontsize="medium",
    )
    from discopop_cli.core.outputs import png_metadata, staged_file

    with staged_file(plot) as partial:
        fig.savefig(partial, format="png", dpi=110, metadata=png_metadata())
