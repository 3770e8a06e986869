"""The Typer definition of `discopop merge`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from discopop_cli.core.options import ForceOption, examples

app = typer.Typer(rich_markup_mode="rich", add_completion=False)


@app.command(
    "merge",
    epilog=examples(
        "discopop merge outputs/tiny-align-lora --output outputs/tiny-aligned --force",
        "discopop merge outputs/smollm2-concise-lora -o outputs/smollm2-concise --dtype bfloat16",
        "discopop merge my-adapter --base build/smollm2-135m -o outputs/merged --max-shard-size 500MB",
    ),
)
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
