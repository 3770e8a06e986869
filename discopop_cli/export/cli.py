"""The Typer definition of `discopop export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from discopop_cli.core.options import examples

app = typer.Typer(rich_markup_mode="rich", add_completion=False)


@app.command(
    "export",
    epilog=examples(
        "discopop export outputs/tiny-aligned --gguf --verify --force",
        "discopop export outputs/tiny-aligned --gguf --quant q8_0 --system 'You are concise.'",
        "discopop export build/smollm2-135m --gguf --quant f16 -o outputs/smollm2-f16.gguf",
        "discopop export outputs/gemma3-270m-discopop --gguf --quant q4_k_m,q6_k,q8_0 --verify",
    ),
)
def export(
    model_dir: Annotated[
        Path, typer.Argument(metavar="MODEL_DIR", help="A saved model folder (config.json, safetensors, tokenizer).")
    ],
    gguf: Annotated[bool, typer.Option("--gguf", help="Export to GGUF for llama.cpp and Ollama.")] = False,
    quant: Annotated[
        list[str] | None,
        typer.Option(
            "--quant",
            help="f32, f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0 (numpy); "
            "q6_k, q5_k_m, q5_k_s, q4_k_m, q4_k_s, q3_k_l, q3_k_m, q3_k_s, q2_k (llama.cpp: the \\[gguf] extra). "
            "Several, comma-separated (q4_k_m,q8_0) or repeated (--quant q4_k_m --quant q8_0): one GGUF and "
            "Modelfile each, from one conversion. Default: q4_k_m.",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="The .gguf file, or a directory (default: MODEL_DIR-gguf/NAME-QUANT.gguf)."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Model name (default: the folder's name).")] = None,
    system: Annotated[str | None, typer.Option("--system", help="Default system prompt for the Modelfile.")] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Measure llama.cpp against transformers (KL, top-1, greedy); fail past the quant type's thresholds.",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing GGUF, Modelfile, LICENSE and NOTICE.")
    ] = False,
) -> None:
    """Convert a model to GGUF with a Modelfile for Ollama, its LICENSE (and the Gemma NOTICE where it applies)."""
    from discopop_cli.export.command import run_export

    quants = ",".join(quant) if quant else "q4_k_m"
    run_export(model_dir, gguf=gguf, quant=quants, output=output, name=name, system=system, verify=verify, force=force)
