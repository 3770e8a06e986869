"""Wall time of `discopop eval prefs` against a plain TRL `DPOTrainer.evaluate()` on the same models and pairs.

    python bench/eval_prefs_vs_trl.py [--workdir DIR] [--runs 3] [--pairs 128] [--layers 6] [--hidden 512]

Offline and self-contained: two random Gemma-architecture models sharing the tiny ChatML tokenizer (a policy and a
reference, different seeds) and the shipped preference pairs repeated to `--pairs`. Each command runs in its own
process, alternating (ABBA), from start-up to the printed numbers; the figures are medians. The reference is what
a TRL user writes: `DPOTrainer(model, ref_model, eval_dataset)` then `evaluate()` (with a one-row train set, which
DPOTrainer requires). Last, the two runs' metrics are compared. `make bench` runs this through bench/run.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from measure import PYTHON, ROOT, VENV_BIN, Row, Sample, Settings, alternate, measure, med_seconds

from discopop_cli.eval.prefs import TRL_METRICS

BETA = 0.1
METRICS = TRL_METRICS  # the names both sides report


@dataclass
class Sizes:
    pairs: int = 128
    layers: int = 6
    hidden: int = 512

    def flags(self) -> list[str]:
        return ["--pairs", str(self.pairs), "--layers", str(self.layers), "--hidden", str(self.hidden)]


def build(workdir: Path, sizes: Sizes) -> None:
    from discopop_cli.demo.tiny import build_tiny_model

    for name, seed in (("ref", 0), ("policy", 1)):
        build_tiny_model(
            workdir / name,
            hidden_size=sizes.hidden,
            intermediate_size=sizes.hidden * 3,
            num_layers=sizes.layers,
            num_heads=8,
            num_kv_heads=2,
            head_dim=sizes.hidden // 8,
            seed=seed,
        )
    rows = (ROOT / "recipes/data/tiny-preferences.jsonl").read_text(encoding="utf-8").splitlines()
    lines = [rows[i % len(rows)] for i in range(sizes.pairs)]
    (workdir / "pairs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def trl_evaluate(workdir: Path) -> None:
    """What a TRL user writes to get the same numbers."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    rows = load_dataset("json", data_files=str(workdir / "pairs.jsonl"), split="train")
    config = DPOConfig(
        output_dir=str(workdir / "trl-out"),
        beta=BETA,
        per_device_eval_batch_size=8,
        report_to="none",
        use_cpu=True,
        bf16=False,
    )
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(workdir / "policy"),
        ref_model=AutoModelForCausalLM.from_pretrained(workdir / "ref"),
        args=config,
        train_dataset=rows.select(range(1)),
        eval_dataset=rows,
        processing_class=AutoTokenizer.from_pretrained(workdir / "policy"),
    )
    metrics = trainer.evaluate()
    print(json.dumps({key: metrics[f"eval_{key}"] for key in METRICS}))


def run_all(workdir: Path, sizes: Sizes, runs: int) -> tuple[list[Sample], list[Sample], float]:
    me = [PYTHON, str(Path(__file__).resolve()), *sizes.flags()]
    if not (workdir / "pairs.jsonl").is_file():
        print(f"building two random {sizes.layers}-layer models and {sizes.pairs} pairs in {workdir} ...")
        measure([*me, "--child", "build", str(workdir)])
    ours = [str(VENV_BIN / "discopop"), "eval", "prefs", str(workdir / "policy"), "--ref", str(workdir / "ref")]
    ours += ["--data", str(workdir / "pairs.jsonl"), "--beta", str(BETA), "--dtype", "float32", "--json", "--no-save"]
    samples = alternate(
        {"ours": lambda: measure(ours), "trl": lambda: measure([*me, "--child", "trl", str(workdir)])}, runs
    )
    got = json.loads(samples["ours"][-1].stdout)["models"][str(workdir / "policy")]
    expected = json.loads(samples["trl"][-1].stdout.strip().splitlines()[-1])
    difference = max(abs(got[key] - expected[key]) for key in METRICS)
    return samples["ours"], samples["trl"], difference


def rows(settings: Settings) -> list[Row]:
    sizes = Sizes(pairs=32, layers=2, hidden=256) if settings.quick else Sizes()
    workdir = settings.workdir / f"eval-prefs-{sizes.layers}x{sizes.hidden}-{sizes.pairs}"
    ours, trl, difference = run_all(workdir, sizes, settings.runs)
    task = f"eval prefs: `discopop eval prefs` vs TRL `DPOTrainer.evaluate()`, {sizes.pairs} pairs, policy + reference"
    return [Row(task, "wall time", med_seconds(ours), med_seconds(trl), 1.05, "s", f"max |Δmetric| {difference:.1e}")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="Where models go (default: a temporary folder, removed after).")
    parser.add_argument("--runs", type=int, default=3, help="Runs of each command, alternating (medians reported).")
    for name, default in vars(Sizes()).items():
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = Sizes(args.pairs, args.layers, args.hidden)
    if args.child:
        task, path = args.child
        (build if task == "build" else lambda w, _s: trl_evaluate(w))(Path(path), sizes)
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="eval-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        ours, trl, difference = run_all(workdir, sizes, args.runs)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    ratio = med_seconds(ours) / med_seconds(trl)
    print(
        f"discopop eval prefs: {med_seconds(ours):.2f} s (median of {args.runs}): {[round(s.seconds, 2) for s in ours]}"
    )
    print(
        f"TRL evaluate():      {med_seconds(trl):.2f} s (median of {args.runs}): {[round(s.seconds, 2) for s in trl]}"
    )
    print(f"max |discopop - TRL| over {', '.join(METRICS)}: {difference:.2e}")
    print(f"ratio (ours / TRL): {ratio:.3f} (target <= 1.05: {'met' if ratio <= 1.05 else 'MISSED'})")


if __name__ == "__main__":
    main()
