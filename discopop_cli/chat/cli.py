"""The Typer definition of `discopop chat`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from discopop_cli.core.options import examples

app = typer.Typer(rich_markup_mode="rich", add_completion=False)
_SAMPLING = "Sampling (default: the model page's and its Modelfile's)"


@app.command(
    "chat",
    epilog=examples(
        "discopop chat outputs/tiny-aligned-gguf/tiny-aligned-Q4_K_M.gguf",
        "discopop chat outputs/tiny-aligned-gguf/tiny-aligned-Q4_K_M.gguf --prompt 'What is the capital of France?' "
        "--temperature 0",
        "discopop chat outputs/tiny-aligned --system 'Answer in one sentence.'",
    ),
)
def chat(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="A .gguf file (llama.cpp) or a model folder.")],
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="Answer this one message and exit (for scripts).")
    ] = None,
    system: Annotated[str | None, typer.Option("--system", help="A system message at the start of the chat.")] = None,
    temperature: Annotated[float, typer.Option(help="0 for greedy.", rich_help_panel=_SAMPLING)] = 0.7,
    top_k: Annotated[int, typer.Option(help="0 turns it off.", rich_help_panel=_SAMPLING)] = 50,
    top_p: Annotated[float, typer.Option(rich_help_panel=_SAMPLING)] = 0.95,
    repeat_penalty: Annotated[float, typer.Option(help="1 turns it off.", rich_help_panel=_SAMPLING)] = 1.0,
    max_tokens: Annotated[int, typer.Option(help="Longest reply, in tokens.", rich_help_panel=_SAMPLING)] = 512,
    seed: Annotated[int | None, typer.Option(help="Fix the sampling seed.", rich_help_panel=_SAMPLING)] = None,
    context: Annotated[int, typer.Option(help="Context length in tokens for a GGUF (0: the model's own).")] = 4096,
) -> None:
    """Chat with a model: streamed replies, the model's own chat template and stops; --prompt for one turn."""
    from discopop_cli.chat.command import run_chat
    from discopop_cli.chat.engines import Sampling

    sampling = Sampling(temperature, top_k, top_p, repeat_penalty, max_tokens, seed)
    run_chat(model, prompt=prompt, system=system, sampling=sampling, context=context)
