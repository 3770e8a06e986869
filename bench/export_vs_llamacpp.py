"""Benchmark: `discopop export --gguf` against llama.cpp's own converter on the same model.

Builds a random-weight Gemma of a few hundred MB offline (bf16 safetensors, the seed's architecture, the tiny
model's SentencePiece + ChatML tokenizer), then converts it to F16 GGUF both ways, each in its own subprocess,
and reports wall time and peak RSS (from wait4's rusage) with their ratios. With llama-cpp-python installed it also
compares the Q4_K_M pipelines: `discopop export --quant q4_k_m` against llama.cpp's converter followed by its
quantizer. It then checks that both F16 files hold the same tensor data.

llama.cpp's converter (`convert_hf_to_gguf.py` with its `conversion` package and `gguf-py`) ships in the
llama-cpp-python source distribution, under vendor/llama.cpp. Point --llama-cpp at that folder, or let the script
fetch the sdist of the installed llama-cpp-python version with pip into --cache. It is run as it is, never copied.

    python bench/export_vs_llamacpp.py [--layers 8] [--llama-cpp DIR] [--cache DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    label: str
    seconds: float
    peak_rss_mb: float


def measure(label: str, command: list[str]) -> Run:
    """Wall time and peak resident memory of one child process (ru_maxrss is in KiB on Linux)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-4000:])
            raise SystemExit(f"{label} failed: {' '.join(command)}")
    return Run(label, seconds, usage.ru_maxrss / 1024)


def build_model(folder: Path, layers: int) -> Path:
    """A Gemma with hidden 1024, MLP 4096 and `layers` blocks, stored in bf16 (about 30 MB per block).

    Called in a child process (--build-model): a fork of a process that holds torch and a model would count
    that memory in the measured children's peak RSS.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    from discopop_cli.tiny import build_tiny_model

    logging.disable_progress_bar()

    model_dir = build_tiny_model(
        folder / "gemma",
        hidden_size=1024,
        intermediate_size=4096,
        num_layers=layers,
        num_heads=8,
        head_dim=128,
        num_kv_heads=1,
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    model.save_pretrained(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    size = sum(path.stat().st_size for path in model_dir.glob("*.safetensors"))
    print(f"model: gemma, {layers} layers, hidden {config['hidden_size']}, {size / 1e6:.0f} MB bf16 safetensors")
    return model_dir


def llama_cpp_source(given: Path | None, cache: Path) -> Path:
    """vendor/llama.cpp of the llama-cpp-python sdist: the given folder, or fetched with pip and unpacked."""
    if given is not None:
        folder = given / "vendor" / "llama.cpp" if (given / "vendor" / "llama.cpp").is_dir() else given
        if not (folder / "convert_hf_to_gguf.py").is_file():
            raise SystemExit(f"{folder} has no convert_hf_to_gguf.py")
        return folder
    version = metadata.version("llama-cpp-python")
    unpacked = cache / f"llama_cpp_python-{version}"
    if not (unpacked / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"fetching the llama-cpp-python {version} sdist with pip into {cache} (once)")
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(cache)]
        subprocess.run([*pip, f"llama-cpp-python=={version}"], check=True, stdout=subprocess.DEVNULL)
        with tarfile.open(cache / f"llama_cpp_python-{version}.tar.gz") as archive:
            archive.extractall(cache, filter="data")
    return unpacked / "vendor" / "llama.cpp"


def same_tensors(ours: Path, theirs: Path) -> bool:
    """Both files hold the same tensors: names, types, shapes and bytes."""
    from gguf import GGUFReader

    def tensors(path: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
        return {
            t.name: (t.tensor_type.name, tuple(int(d) for d in t.shape), bytes(t.data))
            for t in GGUFReader(path).tensors
        }

    mine, reference = tensors(ours), tensors(theirs)
    if mine.keys() != reference.keys():
        print(f"  tensor names differ: {sorted(mine.keys() ^ reference.keys())}")
        return False
    differing = [name for name in mine if mine[name] != reference[name]]
    for name in differing[:5]:
        print(f"  {name}: ours {mine[name][:2]}, llama.cpp {reference[name][:2]}")
    return not differing


def report(pairs: list[tuple[Run, Run]]) -> None:
    print(f"\n{'':<34}{'seconds':>9}{'peak RSS MB':>13}")
    for ours, theirs in pairs:
        for run in (ours, theirs):
            print(f"{run.label:<34}{run.seconds:>9.1f}{run.peak_rss_mb:>13.0f}")
        print(
            f"{'  ratio discopop / llama.cpp':<34}{ours.seconds / theirs.seconds:>9.2f}"
            f"{ours.peak_rss_mb / theirs.peak_rss_mb:>13.2f}\n"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8, help="Gemma blocks (about 30 MB of bf16 each; default 8).")
    parser.add_argument("--llama-cpp", type=Path, help="The unpacked llama-cpp-python sdist (or its vendor/llama.cpp).")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "discopop-bench")
    parser.add_argument("--keep", action="store_true", help="Keep the model and GGUF files (printed at the end).")
    parser.add_argument("--build-model", type=Path, help=argparse.SUPPRESS)  # the child that builds the model
    args = parser.parse_args()
    if args.build_model:
        build_model(args.build_model, args.layers)
        return

    work = Path(tempfile.mkdtemp(prefix="discopop-bench-"))
    try:
        source = llama_cpp_source(args.llama_cpp, args.cache)
        subprocess.run([sys.executable, __file__, "--build-model", str(work), "--layers", str(args.layers)], check=True)
        model_dir = work / "gemma"
        discopop = [sys.executable, "-m", "discopop_cli.cli", "export", str(model_dir), "--gguf", "--force"]
        converter = [sys.executable, str(source / "convert_hf_to_gguf.py"), str(model_dir)]

        ours_f16 = work / "ours-f16.gguf"
        theirs_f16 = work / "llamacpp-f16.gguf"
        pairs = [
            (
                measure("discopop export --quant f16", [*discopop, "--quant", "f16", "-o", str(ours_f16)]),
                measure("convert_hf_to_gguf.py --outtype f16", [*converter, "--outtype", "f16", "--outfile", str(theirs_f16)]),
            )
        ]  # fmt: skip
        try:
            import llama_cpp  # noqa: F401

            has_quantizer = True
        except ImportError:
            has_quantizer = False
            print("llama-cpp-python is not installed: skipping the Q4_K_M comparison")
        if has_quantizer:
            quantize = (
                "import ctypes, sys, llama_cpp; p = llama_cpp.llama_model_quantize_default_params(); "
                "p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M; "
                "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))"
            )
            theirs_q4 = work / "llamacpp-q4_k_m.gguf"
            ours_q4 = measure(
                "discopop export --quant q4_k_m", [*discopop, "--quant", "q4_k_m", "-o", str(work / "q4" / "o.gguf")]
            )
            convert = measure(
                "  convert_hf_to_gguf.py (f16)", [*converter, "--outtype", "f16", "--outfile", str(theirs_f16)]
            )
            quant = measure("  llama_model_quantize", [sys.executable, "-c", quantize, str(theirs_f16), str(theirs_q4)])
            combined = Run(
                "convert + quantize (llama.cpp)",
                convert.seconds + quant.seconds,
                max(convert.peak_rss_mb, quant.peak_rss_mb),
            )
            pairs.append((ours_q4, combined))  # fmt: skip
        report(pairs)
        print(
            f"F16 tensor data identical to llama.cpp's converter: {'yes' if same_tensors(ours_f16, theirs_f16) else 'NO'}"
        )
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
