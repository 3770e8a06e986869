"""The Typer definitions of `discopop eval` (prefs, tasks, judge)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from discopop_cli.core.errors import UserError
from discopop_cli.core.options import examples

PREFS_EXAMPLES = (
    "discopop eval prefs build/smollm2-135m outputs/smollm2-concise --recipe recipes/smollm2-concise.yaml",
    "discopop eval prefs outputs/tiny-aligned --ref outputs/tiny-sft --data recipes/data/tiny-preferences.jsonl",
    "discopop eval prefs outputs/tiny-aligned --data recipes/data/tiny-preferences.jsonl --json --no-save",
)
TASKS_EXAMPLES = (
    "discopop eval tasks outputs/tiny-aligned --tasks discopop_capitals --include-path tests/eval/tasks",
    "discopop eval tasks outputs/tiny-aligned-gguf/tiny-aligned-Q4_K_M.gguf --tasks gsm8k --limit 20",
)
JUDGE_EXAMPLES = (
    "discopop eval judge --models outputs/tiny-aligned,outputs/tiny-sft --judge gguf:judge.gguf",
    "discopop eval judge --models outputs/discopop,outputs/dpo,outputs/sft --reference sft "
    "--judge openai:judge@http://127.0.0.1:8080/v1 --judge-format json --plot judge.png",
    "discopop eval judge --models outputs/discopop,outputs/sft --mode single "
    "--judge openai:judge@http://127.0.0.1:8080/v1 --resume",
    "discopop eval judge --models outputs/discopop,outputs/dpo --mode single --prompts mt_bench/question.jsonl "
    "--judge-prompts judge_prompts.jsonl --judge openai:gpt-4@https://api.openai.com/v1 -o outputs/mt-bench",
)

app = typer.Typer(
    name="eval",
    help="Evaluate models: preference accuracy on held-out pairs (prefs), benchmark tasks (tasks), an LLM judge (judge).",
    epilog=examples(PREFS_EXAMPLES[0], TASKS_EXAMPLES[0], JUDGE_EXAMPLES[0]),
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
)
_SAMPLING = "Answer sampling (default: the seed model page's)"
_JUDGING = "Judge"
_MT_BENCH = "MT-Bench (FastChat's files)"

DtypeOption = Annotated[
    str, typer.Option("--dtype", help="auto (float32 on CPU, bfloat16 on a GPU), float32, bfloat16 or float16.")
]
NoSaveOption = Annotated[
    bool, typer.Option("--no-save", help="Do not write eval_results.json and the card's model-index.")
]


@app.command("judge", epilog=examples(*JUDGE_EXAMPLES))
def eval_judge(
    models: Annotated[
        str,
        typer.Option(
            "--models",
            help="Comma-separated model folders, .gguf files or AlpacaEval outputs (.json); the last is the reference.",
        ),
    ],
    judge: Annotated[
        str,
        typer.Option("--judge", help="openai:MODEL@http://HOST:PORT/v1 or gguf:PATH.gguf.", rich_help_panel=_JUDGING),
    ],
    prompts: Annotated[
        str,
        typer.Option(
            "--prompts",
            help="mt-mini (shipped, 40 prompts), a JSONL file with a 'prompt' field, MT-Bench's question.jsonl "
            "(two turns each) or an AlpacaEval set (JSON with 'instruction').",
        ),
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
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Default 128; 1024 (FastChat's) for MT-Bench.", rich_help_panel=_SAMPLING)
    ] = None,
    seed: Annotated[int, typer.Option(help="Each prompt's seed derives from it.", rich_help_panel=_SAMPLING)] = 42,
    judge_max_tokens: Annotated[int, typer.Option(help="Longest judge reply.", rich_help_panel=_JUDGING)] = 512,
    judge_format: Annotated[
        str, typer.Option(help="text ([[A]] marks) or json (structured output).", rich_help_panel=_JUDGING)
    ] = "text",
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for one judge reply.", rich_help_panel=_JUDGING)
    ] = 120.0,
    retries: Annotated[int, typer.Option(help="Retries of a failed judgement.", rich_help_panel=_JUDGING)] = 2,
    concurrency: Annotated[
        int, typer.Option(help="Judge requests in flight at once (openai: judges).", rich_help_panel=_JUDGING)
    ] = 4,
    alpaca_eval: Annotated[
        bool,
        typer.Option(
            "--alpaca-eval",
            help="Also run alpaca_eval's own annotator and metrics on the answers (needs the alpaca_eval extra).",
            rich_help_panel=_JUDGING,
        ),
    ] = False,
    judge_prompts: Annotated[
        Path | None,
        typer.Option(help="MT-Bench: FastChat's judge_prompts.jsonl.", rich_help_panel=_MT_BENCH),
    ] = None,
    reference_answers: Annotated[
        Path | None,
        typer.Option(
            help="MT-Bench: FastChat's reference_answer/gpt-4.jsonl (else each question's 'reference').",
            rich_help_panel=_MT_BENCH,
        ),
    ] = None,
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
        JudgeOptions(
            models,
            prompts,
            settings,
            mode,
            reference,
            sampling,
            output_dir,
            resume,
            force,
            as_json,
            plot,
            judge_prompts=judge_prompts,
            reference_answers=reference_answers,
            concurrency=concurrency,
            alpaca_eval=alpaca_eval,
        )
    )


@app.command("prefs", epilog=examples(*PREFS_EXAMPLES))
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


@app.command("tasks", epilog=examples(*TASKS_EXAMPLES))
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
