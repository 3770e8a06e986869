"""The Typer definitions of `discopop discover` (run, report, export)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from discopop_cli.core.options import SetOption, examples


class _DiscoverGroup(TyperGroup):
    """`discopop discover RECIPE ...` runs the loop; `discover report DIR` and `discover export DIR` are the others."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


RUN_EXAMPLES = (
    "discopop discover run recipes/tiny-align.yaml --proposer dir:my-candidates --out outputs/discover --generations 4",
    "discopop discover run recipes/tiny-align.yaml --proposer openai:smollm2@http://127.0.0.1:8080/v1 "
    "--out outputs/discover --generations 20 --set max_steps=8",
)
REPORT_EXAMPLES = ("discopop discover report outputs/discover", "discopop discover report outputs/discover --json")
EXPORT_EXAMPLES = (
    "discopop discover export outputs/discover --name my_loss",
    "discopop discover export outputs/discover --name my_loss --id 3 -o outputs/plugin-my-loss",
)

app = typer.Typer(
    cls=_DiscoverGroup,
    help="The paper's loss-discovery loop: propose, check in a sandbox, train, score, archive.",
    epilog=examples(RUN_EXAMPLES[0].replace(" run ", " ", 1), REPORT_EXAMPLES[0], EXPORT_EXAMPLES[0]),
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
)


@app.command("run", epilog=examples(*RUN_EXAMPLES))
def discover_run(
    recipe: Annotated[Path, typer.Argument(metavar="RECIPE", help="Align recipe to train each candidate with.")],
    proposer: Annotated[
        str, typer.Option("--proposer", help="dir:PATH (candidate .py files) or openai:MODEL@URL (a chat server).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the archive, candidates and runs.")],
    generations: Annotated[int, typer.Option("--generations", help="Candidates to try in all (one each).")] = 10,
    set_: SetOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out after its last candidate.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Delete --out and start over.")] = False,
    api_key_env: Annotated[
        str, typer.Option("--api-key-env", help="Environment variable holding the API key (openai: only).")
    ] = "OPENAI_API_KEY",
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature (openai: only).")] = 0.8,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Longest reply (openai: only).")] = 1024,
    keep_models: Annotated[
        bool, typer.Option("--keep-models", help="Keep each candidate's trained weights (default: numbers only).")
    ] = False,
    train_timeout: Annotated[
        float, typer.Option("--train-timeout", help="Seconds one candidate's training may take before it is stopped.")
    ] = 3600.0,
) -> None:
    """Propose losses, reject unsafe or broken ones, train and score the rest, archive every one."""
    from discopop_cli.discover.loop import run_discover

    run_discover(
        recipe,
        proposer_spec=proposer,
        generations=generations,
        out_dir=out_dir,
        overrides=set_ or [],
        resume=resume,
        force=force,
        api_key_env=api_key_env,
        temperature=temperature,
        max_tokens=max_tokens,
        keep_models=keep_models,
        train_timeout=train_timeout,
    )


@app.command("report", epilog=examples(*REPORT_EXAMPLES))
def discover_report(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="The --out folder of a discovery run.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the leaderboard as JSON.")] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Where the fitness-by-generation PNG goes (default DIR/fitness.png).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --plot file.")] = False,
) -> None:
    """The leaderboard of a discovery run, and a PNG of fitness by generation."""
    from discopop_cli.discover.report import run_report

    run_report(folder, as_json=as_json, plot=plot, force=force)


@app.command("export", epilog=examples(*EXPORT_EXAMPLES))
def discover_export(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="The --out folder of a discovery run.")],
    name: Annotated[str, typer.Option("--name", help="The loss name the plugin registers.")],
    candidate: Annotated[str | None, typer.Option("--id", help="A scored candidate's id (default: the best).")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The plugin package folder (default DIR/plugin-NAME).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing plugin folder.")] = False,
) -> None:
    """Write the best candidate as a loss plugin package that `align` can use by name once installed."""
    from discopop_cli.discover.export import run_export

    run_export(folder, name=name, candidate_id=candidate, output=output, force=force)
