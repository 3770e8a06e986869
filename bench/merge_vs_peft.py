"""Peak memory and wall time of `discopop merge` against peft's `merge_and_unload` + `save_pretrained`.

    python bench/merge_vs_peft.py [--workdir DIR] [--runs 3] [--layers 4] [--hidden 2048] [--dtype bfloat16]

Offline and self-contained: it builds a randomly initialised Llama-architecture model (about 620 MB in bfloat16 with
the defaults, in 200 MB shards) and a LoRA adapter with non-zero B on every projection, then runs each merge in its
own subprocess, alternating, and reads each one's peak RSS from the kernel (`wait4`'s ru_maxrss); figures are
medians. A third subprocess that only imports torch, transformers and peft gives the interpreter baseline both pay.
Last, the two merged models are compared tensor by tensor. `make bench` runs this through bench/run.py.

This parent process imports nothing heavy on purpose: a child's ru_maxrss starts from the parent's peak.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from measure import PYTHON, VENV_BIN, Row, Sample, Settings, alternate, measure, med_rss, med_seconds

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2**20


# ---------------------------------------------------------------------------------------------------------------
# Subcommands run in child processes.


def build(workdir: Path, layers: int, hidden: int, intermediate: int, vocab: int, dtype: str, rank: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 128,
        num_key_value_heads=max(1, hidden // 512),
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(workdir / "base", max_shard_size="200MB")
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.02)  # peft starts B at zero; a real adapter has moved off it
    peft_model.peft_config["default"].base_model_name_or_path = str(workdir / "base")
    peft_model.save_pretrained(workdir / "adapter")


def peft_merge(base: Path, adapter: Path, output: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)  # the checkpoint's own dtype
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(output)


def baseline() -> None:
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401


def compare(ours: Path, theirs: Path, base: Path) -> None:
    """Largest difference between the two merged checkpoints, and how many tensors moved off the base."""
    from safetensors import safe_open

    def locate(folder: Path) -> dict[str, Path]:
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            return {k: folder / v for k, v in json.loads(index.read_text())["weight_map"].items()}
        with safe_open(folder / "model.safetensors", framework="pt") as handle:
            return {k: folder / "model.safetensors" for k in handle.keys()}  # noqa: SIM118

    def read(files: dict[str, Path], name: str):
        with safe_open(files[name], framework="pt") as handle:
            return handle.get_tensor(name)

    left, right, original = locate(ours), locate(theirs), locate(base)
    if set(left) != set(right):
        print(f"tensor names differ: {sorted(set(left) ^ set(right))[:5]}")
    worst, worst_name, differing, total, moved = 0.0, "", 0, 0, 0
    for name in sorted(set(left) & set(right)):
        x, y = read(left, name), read(right, name)
        if x.dtype != y.dtype or x.shape != y.shape:
            print(f"{name}: {x.dtype}{tuple(x.shape)} vs {y.dtype}{tuple(y.shape)}")
        diff = (x.float() - y.float()).abs()
        differing += int((diff > 0).sum())
        total += diff.numel()
        if diff.max().item() > worst:
            worst, worst_name = diff.max().item(), name
        moved += int(name in original and not read(original, name).equal(x))
    print(f"outputs: {len(left)} tensors, {moved} of them changed from the base by the merge")
    print(f"max |discopop - peft| = {worst:.3g} {worst_name}; {differing / max(total, 1):.4%} of elements differ")


# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Sizes:
    layers: int = 4
    hidden: int = 2048
    intermediate: int = 5632
    vocab: int = 32000
    dtype: str = "bfloat16"
    rank: int = 16

    def flags(self) -> list[str]:
        return [f"--{k}={v}" for k, v in vars(self).items()]


@dataclass
class Result:
    ours: list[Sample]
    peft: list[Sample]
    imports: Sample
    comparison: str
    base_mb: float


def run_all(workdir: Path, sizes: Sizes, runs: int) -> Result:
    """Build the model and adapter once (kept in `workdir`), then the alternating merges and the comparison."""
    me = [PYTHON, str(Path(__file__).resolve()), *sizes.flags()]
    base, adapter = workdir / "base", workdir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        print(f"building a random Llama-architecture model and a rank-{sizes.rank} adapter in {workdir} ...")
        measure([*me, "--child", "build", str(workdir)])
    ours_out, peft_out = workdir / "merged-discopop", workdir / "merged-peft"
    discopop = [str(VENV_BIN / "discopop"), "merge", str(adapter), "--output", str(ours_out), "--base", str(base)]

    def peft() -> Sample:
        shutil.rmtree(peft_out, ignore_errors=True)
        return measure([*me, "--child", "peft", str(base), str(adapter), str(peft_out)])

    samples = alternate({"ours": lambda: measure([*discopop, "--force"]), "peft": peft}, runs)
    imports = measure([*me, "--child", "baseline"])
    comparison = measure([*me, "--child", "compare", str(ours_out), str(peft_out), str(base)]).stdout.strip()
    return Result(samples["ours"], samples["peft"], imports, comparison, folder_mb(base))


def rows(settings: Settings) -> list[Row]:
    sizes = Sizes(layers=2, hidden=1024, intermediate=2816, vocab=8000) if settings.quick else Sizes()
    workdir = settings.workdir / f"merge-{sizes.layers}x{sizes.hidden}"
    result = run_all(workdir, sizes, settings.runs)
    shards = len(list((workdir / "base").glob("*.safetensors")))
    task = f"merge: `discopop merge` vs peft `merge_and_unload` + `save_pretrained`, {result.base_mb:,.0f} MiB in {shards} shards"
    identical = "outputs identical" if "max |discopop - peft| = 0 " in result.comparison else result.comparison
    rss_note = f"{identical}; imports alone {result.imports.rss_mib:,.0f} MiB"
    return [
        Row(task, "wall time", med_seconds(result.ours), med_seconds(result.peft), None, "s"),
        Row(task, "peak RSS", med_rss(result.ours), med_rss(result.peft), 0.6, "MiB", rss_note),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="Where models go (default: a temporary folder, removed after).")
    parser.add_argument("--runs", type=int, default=3, help="Merges of each kind, alternating (medians reported).")
    for name, default in vars(Sizes()).items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = Sizes(args.layers, args.hidden, args.intermediate, args.vocab, args.dtype, args.rank)

    if args.child:
        task, *paths = args.child
        if task == "build":
            build(Path(paths[0]), *vars(sizes).values())
        elif task == "peft":
            peft_merge(*map(Path, paths))
        elif task == "baseline":
            baseline()
        elif task == "compare":
            compare(*map(Path, paths))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="merge-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run_all(workdir, sizes, args.runs)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"base: {result.base_mb:,.0f} MB of safetensors ({sizes.dtype})")
    print(result.comparison)
    print()
    idle = result.imports.rss_mib
    print(f"{'medians of ' + str(args.runs):30}{'wall s':>10}{'peak RSS MiB':>15}{'above imports':>15}")
    for label, samples in [("discopop merge", result.ours), ("peft merge_and_unload + save", result.peft)]:
        print(f"{label:30}{med_seconds(samples):>10.1f}{med_rss(samples):>15,.0f}{med_rss(samples) - idle:>15,.0f}")
    print(f"{'imports only (torch, peft)':30}{result.imports.seconds:>10.1f}{idle:>15,.0f}{'-':>15}")
    ours, theirs = med_rss(result.ours), med_rss(result.peft)
    print()
    print(f"peak RSS, discopop / peft:                {ours / theirs:.2f}x")
    print(f"peak RSS above imports, discopop / peft:  {(ours - idle) / max(theirs - idle, 1):.2f}x")
    print(f"wall time, discopop / peft:               {med_seconds(result.ours) / med_seconds(result.peft):.2f}x")


if __name__ == "__main__":
    main()
