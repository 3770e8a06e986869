"""Peak memory and wall time of `discopop merge` against peft's `merge_and_unload` + `save_pretrained`.

    python bench/merge_vs_peft.py [--workdir DIR] [--layers 4] [--hidden 2048] [--dtype bfloat16]

Offline and self-contained: it builds a randomly initialised Llama-architecture model (about 620 MB in bfloat16 with
the defaults, in shards) and a LoRA adapter with non-zero B on every projection, then runs each merge in its own
subprocess, side by side in one run, and reads each one's peak RSS from the kernel (`wait4`'s ru_maxrss). A third
subprocess that only imports torch, transformers and peft gives the interpreter baseline both pay. Last, the two
merged models are compared tensor by tensor.

This parent process imports nothing heavy on purpose: a child's ru_maxrss starts from the parent's peak.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def run_measured(command: list[str]) -> tuple[float, float]:
    """Run a command to completion; return (wall seconds, peak RSS in MiB) of that process alone."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(command)}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="Where models go (default: a temporary folder, removed after).")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        task, *paths = args.child
        if task == "build":
            build(Path(paths[0]), args.layers, args.hidden, args.intermediate, args.vocab, args.dtype, args.rank)
        elif task == "peft":
            peft_merge(*map(Path, paths))
        elif task == "baseline":
            baseline()
        elif task == "compare":
            compare(*map(Path, paths))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="merge-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, str(Path(__file__).resolve())]
    sizes = ["--layers", str(args.layers), "--hidden", str(args.hidden), "--intermediate", str(args.intermediate)]
    sizes += ["--vocab", str(args.vocab), "--dtype", args.dtype, "--rank", str(args.rank)]
    try:
        if not (workdir / "adapter" / "adapter_config.json").is_file():
            print(f"building a random Llama-architecture model and a rank-{args.rank} LoRA adapter in {workdir} ...")
            run_measured([*me, *sizes, "--child", "build", str(workdir)])
        base, adapter = workdir / "base", workdir / "adapter"
        print(f"base: {folder_mb(base):,.0f} MB of safetensors ({args.dtype}); adapter: {folder_mb(adapter):,.1f} MB")

        ours_out, peft_out = workdir / "merged-discopop", workdir / "merged-peft"
        shutil.rmtree(peft_out, ignore_errors=True)
        discopop = [sys.executable, "-m", "discopop_cli.cli", "merge", str(adapter), "--output", str(ours_out)]
        ours = run_measured([*discopop, "--base", str(base), "--force"])
        theirs = run_measured([*me, "--child", "peft", str(base), str(adapter), str(peft_out)])
        idle = run_measured([*me, "--child", "baseline"])
        run_measured([*me, "--child", "compare", str(ours_out), str(peft_out), str(base)])
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"{'':30}{'wall s':>10}{'peak RSS MiB':>15}{'above imports':>15}")
    for label, (seconds, rss) in [("discopop merge", ours), ("peft merge_and_unload + save", theirs)]:
        print(f"{label:30}{seconds:>10.1f}{rss:>15,.0f}{rss - idle[1]:>15,.0f}")
    print(f"{'imports only (torch, peft)':30}{idle[0]:>10.1f}{idle[1]:>15,.0f}{'-':>15}")
    print()
    print(f"peak RSS, peft / discopop:                {theirs[1] / ours[1]:.2f}x")
    print(f"peak RSS above imports, peft / discopop:  {(theirs[1] - idle[1]) / max(ours[1] - idle[1], 1):.2f}x")
    print(f"wall time, peft / discopop:               {theirs[0] / ours[0]:.2f}x")


if __name__ == "__main__":
    main()
