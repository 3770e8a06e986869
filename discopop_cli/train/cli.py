"""The Typer definitions of `discopop sft` and `discopop align`: they take the same arguments.

Nothing heavy is imported here; the commands load TRL and torch when they run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from discopop_cli.core.options import ForceOption, SetOption, examples

if TYPE_CHECKING:
    from discopop_cli.train.launch import LaunchOptions

UnsetOption = Annotated[
    list[str] | None,
    typer.Option("--unset", help="Remove a recipe key (dotted keys for nesting), e.g. dataset_mixer. Repeatable."),
]
OutputDirOption = Annotated[
    Path | None,
    typer.Option("--output-dir", "-o", help="Where the trained model goes (overrides the recipe)."),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Validate and print the resolved recipe; train and write nothing.")
]
ResumeOption = Annotated[
    bool,
    typer.Option("--resume", help="Continue the run in the output directory from its last complete checkpoint."),
]
SkipBadRowsOption = Annotated[
    bool,
    typer.Option(
        "--skip-bad-rows", help="Leave out data rows that lack a field or hold the wrong type, and report them."
    ),
]
MaxBadRowsOption = Annotated[
    str | None,
    typer.Option(
        "--max-bad-rows", help="With --skip-bad-rows: refuse a data file with more bad rows than N or P% (5%)."
    ),
]

_SCALE = "Scaling out (accelerate)"
AccelerateConfigOption = Annotated[
    str | None,
    typer.Option(
        "--accelerate-config",
        help="Re-launch under `accelerate launch` with a bundled config (ddp, fsdp, zero3) or your YAML.",
        rich_help_panel=_SCALE,
    ),
]
NumProcessesOption = Annotated[
    int | None,
    typer.Option("--num-processes", help="Processes on all machines together (e.g. GPUs).", rich_help_panel=_SCALE),
]
NumMachinesOption = Annotated[int, typer.Option("--num-machines", help="Machines taking part.", rich_help_panel=_SCALE)]
MachineRankOption = Annotated[
    int, typer.Option("--machine-rank", help="This machine's rank, 0 for the main one.", rich_help_panel=_SCALE)
]
MainIpOption = Annotated[
    str | None, typer.Option("--main-process-ip", help="Address of machine rank 0.", rich_help_panel=_SCALE)
]
MainPortOption = Annotated[
    int | None, typer.Option("--main-process-port", help="Port on machine rank 0.", rich_help_panel=_SCALE)
]
GlobalBatchOption = Annotated[
    int | None,
    typer.Option(
        "--global-batch-size",
        help="Set gradient accumulation so per-device x processes x accumulation equals this.",
        rich_help_panel=_SCALE,
    ),
]

ALIGN_EXAMPLES = examples(
    "discopop align recipes/tiny-align-lora.yaml --force",
    "discopop align recipes/zephyr-7b-gemma.yaml --dry-run",
    "discopop align recipes/tiny-align.yaml --set loss_type=aqfl --set max_steps=8 -o outputs/aqfl --dry-run",
    "discopop align recipes/zephyr-7b-gemma.yaml --accelerate-config zero3 --num-processes 8 --dry-run",
)
SFT_EXAMPLES = examples(
    "discopop sft recipes/tiny-sft.yaml --force",
    "discopop sft recipes/zephyr-7b-gemma-sft.yaml --dry-run",
    "discopop sft recipes/zephyr-7b-gemma-sft.yaml --accelerate-config zero3 --num-processes 4 --dry-run",
    "discopop sft recipes/zephyr-7b-gemma-sft.yaml --unset decontaminate_humaneval --global-batch-size 64 --dry-run",
)


def _run(
    command: str,
    recipe: Path,
    overrides: list[str],
    output_dir: Path | None,
    dry_run: bool,
    force: bool,
    resume: bool,
    options: LaunchOptions,
    bad_rows: tuple[bool, str | None] = (False, None),
    unset: list[str] | None = None,
) -> None:
    """Run sft/align here, or re-run it under `accelerate launch` when a config is given."""
    from discopop_cli.data.checks import BadRowPolicy
    from discopop_cli.train.launch import bad_row_args, child_args, launch

    options.validate(dry_run=dry_run)
    policy = BadRowPolicy.from_options(*bad_rows)
    if options.wants_launch and not dry_run:
        child = child_args(recipe, overrides, output_dir, force, options.global_batch_size, resume, unset or [])
        child += bad_row_args(*bad_rows)
        code = launch(command, child, options)
        if code:
            raise typer.Exit(code)
        return
    if command == "align":
        from discopop_cli.train.align import run_align as run
    else:
        from discopop_cli.train.sft import run_sft as run
    run(
        recipe,
        overrides=overrides,
        output_dir=output_dir,
        dry_run=dry_run,
        force=force,
        resume=resume,
        launch=options,
        bad_rows=policy,
        unset=unset or [],
    )


def _training_app(name: str, summary: str, epilog: str) -> typer.Typer:
    """`discopop align` and `discopop sft` take the same arguments; one definition serves both."""
    app = typer.Typer(rich_markup_mode="rich", add_completion=False)

    @app.command(name, help=summary, epilog=epilog)
    def command(
        recipe: Annotated[Path, typer.Argument(metavar="RECIPE", help="Recipe YAML (alignment-handbook style).")],
        set_: SetOption = None,
        unset: UnsetOption = None,
        output_dir: OutputDirOption = None,
        dry_run: DryRunOption = False,
        force: ForceOption = False,
        resume: ResumeOption = False,
        skip_bad_rows: SkipBadRowsOption = False,
        max_bad_rows: MaxBadRowsOption = None,
        accelerate_config: AccelerateConfigOption = None,
        num_processes: NumProcessesOption = None,
        num_machines: NumMachinesOption = 1,
        machine_rank: MachineRankOption = 0,
        main_process_ip: MainIpOption = None,
        main_process_port: MainPortOption = None,
        global_batch_size: GlobalBatchOption = None,
    ) -> None:
        from discopop_cli.train.launch import LaunchOptions

        options = LaunchOptions(
            accelerate_config,
            num_processes,
            num_machines,
            machine_rank,
            main_process_ip,
            main_process_port,
            global_batch_size,
        )
        _run(
            name, recipe, set_ or [], output_dir, dry_run, force, resume, options, (skip_bad_rows, max_bad_rows), unset
        )

    return app


align = _training_app(
    "align", "Preference-optimise a model with the DiscoPOP loss family through TRL's DPOTrainer.", ALIGN_EXAMPLES
)
sft = _training_app(
    "sft",
    "Supervised fine-tuning through TRL's SFTTrainer; chat-template tokens the vocabulary lacks are added.",
    SFT_EXAMPLES,
)
