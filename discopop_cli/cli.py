"""The `discopop` command line: parses arguments and dispatches to one module per command.

Nothing heavy is imported here: torch, TRL and transformers load inside the command that needs them,
so `discopop --help` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from discopop_cli import __version__
from discopop_cli.core.errors import UserError

if TYPE_CHECKING:
    from discopop_cli.train.launch import LaunchOptions


class _Group(TyperGroup):
    """Turns a UserError into one red line on stderr and exit code 2; `--debug` shows the traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            if _debug:
                raise
            from rich.markup import escape

            from discopop_cli.core.console import err

            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=exc.exit_code) from None


app = typer.Typer(
    cls=_Group,
    name="discopop",
    help="Reproduce and extend DiscoPOP-aligned chat models with TRL.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_debug = False


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


SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe key: KEY=VALUE (YAML-typed, dotted keys for nesting). Repeatable."),
]
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
ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing output directory.")]
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


def _train_command(
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
    from discopop_cli.train import launch

    options.validate(dry_run=dry_run)
    policy = BadRowPolicy.from_options(*bad_rows)
    if options.wants_launch and not dry_run:
        child = launch.child_args(recipe, overrides, output_dir, force, options.global_batch_size, resume, unset or [])
        child += launch.bad_row_args(*bad_rows)
        code = launch.launch(command, child, options)
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


def _training_command(name: str, summary: str) -> None:
    """`discopop align` and `discopop sft` take the same arguments; one definition serves both."""

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
        _train_command(
            name, recipe, set_ or [], output_dir, dry_run, force, resume, options, (skip_bad_rows, max_bad_rows), unset
        )

    command.__doc__ = summary
    app.command(name)(command)


_training_command("align", "Preference-optimise a model with the DiscoPOP loss family through TRL's DPOTrainer.")
_training_command(
    "sft", "Supervised fine-tuning through TRL's SFTTrainer; chat-template tokens the vocabulary lacks are added."
)


@app.command()
def losses(
    names: Annotated[
        list[str] | None, typer.Argument(metavar="[NAMES]...", help="Losses to plot (default: every registered loss).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Draw each loss and its derivative against beta*d to this PNG."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing plot file.")] = False,
) -> None:
    """List the registered preference losses: name, formula, parameters."""
    from discopop_cli.losses.command import run_losses

    run_losses(names or [], as_json=as_json, plot=plot, force=force)


@app.command()
def merge(
    adapter: Annotated[
        Path,
        typer.Argument(
            metavar="ADAPTER_DIR", help="LoRA adapter folder (adapter_config.json, adapter_model.safetensors)."
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where the merged model goes.")],
    base: Annotated[
        str | None,
        typer.Option("--base", help="Base model folder or Hub id (default: the adapter's base_model_name_or_path)."),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option("--dtype", help="bfloat16, float16 or float32 (default: each tensor's dtype in the base)."),
    ] = None,
    max_shard_size: Annotated[
        str, typer.Option("--max-shard-size", help="Largest safetensors file to write, e.g. 5GB or 500MB.")
    ] = "5GB",
    force: ForceOption = False,
) -> None:
    """Fold a LoRA adapter into its base model, streaming tensor by tensor, into a plain transformers model."""
    from discopop_cli.merge.command import run_merge

    run_merge(adapter, output=output, base=base, dtype=dtype, force=force, max_shard_size=max_shard_size)


@app.command()
def export(
    model_dir: Annotated[
        Path, typer.Argument(metavar="MODEL_DIR", help="A saved model folder (config.json, safetensors, tokenizer).")
    ],
    gguf: Annotated[bool, typer.Option("--gguf", help="Export to GGUF for llama.cpp and Ollama.")] = False,
    quant: Annotated[
        str,
        typer.Option(
            "--quant",
            help="f32, f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0 (numpy); "
            "q6_k, q5_k_m, q5_k_s, q4_k_m, q4_k_s, q3_k_l, q3_k_m, q3_k_s, q2_k (llama.cpp: the \\[gguf] extra).",
        ),
    ] = "q4_k_m",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="The .gguf file (default: MODEL_DIR-gguf/NAME-QUANT.gguf)."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Model name (default: the folder's name).")] = None,
    system: Annotated[str | None, typer.Option("--system", help="Default system prompt for the Modelfile.")] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Compare llama.cpp with transformers on chat prompts; fail on mismatch.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing GGUF and Modelfile.")] = False,
) -> None:
    """Convert a model to one GGUF file with a Modelfile for Ollama (and the Gemma NOTICE where it applies)."""
    from discopop_cli.export.command import run_export

    run_export(model_dir, gguf=gguf, quant=quant, output=output, name=name, system=system, verify=verify, force=force)


class _DiscoverGroup(TyperGroup):
    """`discopop discover RECIPE ...` runs the loop; `discover report DIR` and `discover export DIR` are the others."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


discover_app = typer.Typer(
    cls=_DiscoverGroup,
    help="The paper's loss-discovery loop: propose, check in a sandbox, train, score, archive.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(discover_app, name="discover")


@discover_app.command("run")
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


@discover_app.command("report")
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


@discover_app.command("export")
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


eval_app = typer.Typer(
    name="eval",
    help="Evaluate models: preference accuracy on held-out pairs (prefs), benchmark tasks (tasks), an LLM judge (judge).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(eval_app, name="eval")
_SAMPLING = "Answer sampling (default: the seed model page's)"
_JUDGING = "Judge"


@eval_app.command("judge")
def eval_judge(
    models: Annotated[
        str, typer.Option("--models", help="Comma-separated model folders or .gguf files; the last is the reference.")
    ],
    judge: Annotated[
        str,
        typer.Option("--judge", help="openai:MODEL@http://HOST:PORT/v1 or gguf:PATH.gguf.", rich_help_panel=_JUDGING),
    ],
    prompts: Annotated[
        str, typer.Option("--prompts", help="A JSONL file with a 'prompt' field, or mt-mini (shipped, 40 prompts).")
    ] = "mt-mini",
    mode: Annotated[
        str, typer.Option("--mode", help="pairwise (both orders) or single (1-10 grades).", rich_help_panel=_JUDGING)
    ] = "pairwise",
    reference: Annotated[
        str | None, typer.Option("--reference", help="The model the others are compared with (default: the last).")
    ] = None,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", help="Run folder: answers, judgements, results.json.")
    ] = Path("outputs/judge"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --output-dir; redo nothing.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Start the run in --output-dir again from nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON instead of tables.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Draw a bar chart with intervals to this PNG.")] = None,
    temperature: Annotated[float, typer.Option(help="0 for greedy.", rich_help_panel=_SAMPLING)] = 0.7,
    top_k: Annotated[int, typer.Option(help="0 turns it off.", rich_help_panel=_SAMPLING)] = 50,
    top_p: Annotated[float, typer.Option(rich_help_panel=_SAMPLING)] = 0.95,
    max_new_tokens: Annotated[int, typer.Option(rich_help_panel=_SAMPLING)] = 128,
    seed: Annotated[int, typer.Option(help="Each prompt's seed derives from it.", rich_help_panel=_SAMPLING)] = 42,
    judge_max_tokens: Annotated[int, typer.Option(help="Longest judge reply.", rich_help_panel=_JUDGING)] = 512,
    judge_format: Annotated[
        str, typer.Option(help="text ([[A]] marks) or json (structured output).", rich_help_panel=_JUDGING)
    ] = "text",
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for one judge reply.", rich_help_panel=_JUDGING)
    ] = 120.0,
    retries: Annotated[int, typer.Option(help="Retries of a failed judgement.", rich_help_panel=_JUDGING)] = 2,
    api_key_env: Annotated[
        str | None,
        typer.Option(help="Variable holding the API key (default: OPENAI_API_KEY when set).", rich_help_panel=_JUDGING),
    ] = None,
) -> None:
    """Answer a prompt set with each model and judge the answers: win rates (plain and length-controlled) or grades."""
    from discopop_cli.eval.judge.answers import Sampling
    from discopop_cli.eval.judge.command import JudgeOptions, run_judge
    from discopop_cli.eval.judge.judges import JudgeSettings

    if judge_format not in ("text", "json"):
        raise UserError(f"--judge-format {judge_format!r}: use text or json")
    settings = JudgeSettings(
        judge, judge_max_tokens, timeout, retries, as_json=judge_format == "json", api_key_env=api_key_env
    )
    sampling = Sampling(temperature, top_k, top_p, max_new_tokens, seed)
    run_judge(
        JudgeOptions(models, prompts, settings, mode, reference, sampling, output_dir, resume, force, as_json, plot)
    )


DtypeOption = Annotated[
    str, typer.Option("--dtype", help="auto (float32 on CPU, bfloat16 on a GPU), float32, bfloat16 or float16.")
]
NoSaveOption = Annotated[
    bool, typer.Option("--no-save", help="Do not write eval_results.json and the card's model-index.")
]


@eval_app.command("prefs")
def eval_prefs(
    models: Annotated[
        list[str], typer.Argument(metavar="MODEL...", help="Model folders (or Hub ids) to score side by side.")
    ],
    data: Annotated[
        list[str] | None,
        typer.Option("--data", help="Preference pairs: a local file or folder, or a Hub id. Repeat to concatenate."),
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="Split of --data (default: train for a file, test otherwise).")
    ] = None,
    ref: Annotated[
        str | None,
        typer.Option("--ref", help="Reference model for TRL's rewards/* (default with --recipe: its model)."),
    ] = None,
    recipe: Annotated[
        Path | None,
        typer.Option("--recipe", help="An align recipe: its held-out split, beta, max_length, chat template, model."),
    ] = None,
    beta: Annotated[
        float | None, typer.Option("--beta", help="Reward scale (default: the recipe's, else 0.1).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pairs per batch (TRL's eval batch size).")] = 8,
    dtype: DtypeOption = "auto",
    max_length: Annotated[
        int | None, typer.Option("--max-length", help="Tokens per sequence (default: the recipe's, else 1024).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the numbers as JSON instead of a table.")] = False,
    no_save: NoSaveOption = False,
) -> None:
    """Preference metrics on held-out pairs: TRL's rewards/* against a reference, and reference-free accuracies."""
    from discopop_cli.eval.prefs import run_prefs

    run_prefs(
        models,
        data=data or [],
        split=split,
        ref=ref,
        recipe=recipe,
        beta=beta,
        batch_size=batch_size,
        dtype=dtype,
        max_length=max_length,
        as_json=as_json,
        save=not no_save,
    )


@eval_app.command("tasks")
def eval_tasks(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="A model folder, a Hub id, or a .gguf file.")],
    tasks: Annotated[str, typer.Option("--tasks", help="lm-evaluation-harness task names, comma-separated.")],
    include_path: Annotated[
        Path | None, typer.Option("--include-path", help="A folder of your own task YAML files.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Score only the first N examples per task.")] = None,
    num_fewshot: Annotated[int | None, typer.Option("--num-fewshot", help="Few-shot examples per prompt.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Requests per batch.")] = 8,
    dtype: DtypeOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON instead of a table.")] = False,
    no_save: NoSaveOption = False,
) -> None:
    """Benchmark tasks through lm-evaluation-harness (the \\[eval] extra), offline on local tasks; a GGUF via llama.cpp."""
    from discopop_cli.eval.tasks import run_tasks

    run_tasks(
        model,
        tasks=tasks,
        include_path=include_path,
        limit=limit,
        num_fewshot=num_fewshot,
        batch_size=batch_size,
        dtype=dtype,
        as_json=as_json,
        save=not no_save,
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()


def command_paths() -> list[tuple[str, ...]]:
    """Every command and sub-command as the words a user types: ("align",), ("eval",), ("eval", "prefs"), ...

    The help tests and bench/startup.py walk this, so a new command is covered the day it is registered.
    """
    import typer.main

    def walk(group: Any, words: tuple[str, ...]) -> list[tuple[str, ...]]:
        found: list[tuple[str, ...]] = []
        for name, command in sorted(group.commands.items()):
            found.append((*words, name))
            if hasattr(command, "commands"):
                found.extend(walk(command, (*words, name)))
        return found

    return walk(typer.main.get_command(app), ())
