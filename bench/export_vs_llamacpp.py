"""Benchmark: `discopop export --gguf` against llama.cpp's own converter on the same model.

Builds a random-weight Gemma of a few hundred MB offline (bf16 safetensors, the seed's architecture, the tiny
model's SentencePiece + ChatML tokenizer), then converts it to F16 GGUF both ways, each in its own subprocess,
and reports wall time and peak RSS (from wait4's rusage) with their ratios. With llama-cpp-python installed it also
compares the Q4_K_M pipelines: `discopop export --quant q4_k_m` against llama.cpp's converter followed by its
quantizer. Commands alternate, `--runs` times each, and figures are medians. It then checks that both F16 files
hold the same tensor data. `make bench` runs this through bench/run.py.

llama.cpp's converter (`convert_hf_to_gguf.py` with its `conversion` package and `gguf-py`) ships in the
llama-cpp-python source distribution, under vendor/llama.cpp. Point --llama-cpp at that folder, or let the script
fetch the sdist of the installed llama-cpp-python version with pip into --cache. It is run as it is, never copied.

    python bench/export_vs_llamacpp.py [--layers 8] [--runs 3] [--llama-cpp DIR] [--cache DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

from measure import PYTHON, ROOT, VENV_BIN, Row, Sample, Settings, alternate, measure, med_rss, med_seconds

QUANTIZE = (
    "import ctypes, sys, llama_cpp; p = llama_cpp.llama_model_quantize_default_params(); "
    "p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M; "
    "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))"
)
"""llama.cpp's quantizer through llama-cpp-python's binding of `llama_model_quantize`: the f16 GGUF to Q4_K_M."""
LABELS = {
    "ours_f16": "discopop export --quant f16",
    "llamacpp_f16": "convert_hf_to_gguf.py --outtype f16",
    "ours_q4": "discopop export --quant q4_k_m",
    "llamacpp_q4": "convert (f16) + quantize (llama.cpp)",
}


def build_model(folder: Path, layers: int) -> Path:
    """A Gemma with hidden 1024, MLP 4096 and `layers` blocks, stored in bf16 (about 30 MB per block).

    Called in a child process (--build-model): a fork of a process that holds torch and a model would count
    that memory in the measured children's peak RSS.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    from discopop_cli.demo.tiny import build_tiny_model

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


def combined(convert: Sample, quantize: Sample) -> Sample:
    """llama.cpp's two steps as one pipeline: times add up, the peak is the larger of the two."""
    return Sample(convert.seconds + quantize.seconds, max(convert.rss_mib, quantize.rss_mib))


def run_all(work: Path, source: Path, layers: int, runs: int) -> tuple[dict[str, list[Sample]], bool]:
    """Build the model once (kept in `work`), then the alternating conversions; returns the samples and whether
    the two F16 files hold the same tensor data."""
    model_dir = work / "gemma"
    if not (model_dir / "config.json").is_file():
        measure([PYTHON, str(Path(__file__).resolve()), "--build-model", str(work), "--layers", str(layers)])
    discopop = [str(VENV_BIN / "discopop"), "export", str(model_dir), "--gguf", "--force"]
    converter = [PYTHON, str(source / "convert_hf_to_gguf.py"), str(model_dir), "--outtype", "f16"]
    ours_f16, theirs_f16, theirs_q4 = work / "ours-f16.gguf", work / "llamacpp-f16.gguf", work / "llamacpp-q4.gguf"
    samples = alternate(
        {
            "ours_f16": lambda: measure([*discopop, "--quant", "f16", "-o", str(ours_f16)]),
            "llamacpp_f16": lambda: measure([*converter, "--outfile", str(theirs_f16)]),
            "ours_q4": lambda: measure([*discopop, "--quant", "q4_k_m", "-o", str(work / "ours-q4_k_m.gguf")]),
            "llamacpp_quantize": lambda: measure([PYTHON, "-c", QUANTIZE, str(theirs_f16), str(theirs_q4)]),
        },
        runs,
    )
    steps = zip(samples["llamacpp_f16"], samples["llamacpp_quantize"], strict=True)
    samples["llamacpp_q4"] = [combined(*pair) for pair in steps]
    # In a child too: reading both files here would raise this process's peak, which later children inherit.
    compared = measure([PYTHON, str(Path(__file__).resolve()), "--compare", str(ours_f16), str(theirs_f16)])
    return samples, compared.stdout.strip().endswith("identical")


def rows(settings: Settings) -> list[Row]:
    layers = 2 if settings.quick else 8
    source = llama_cpp_source(None, Path.home() / ".cache" / "discopop-bench")
    samples, identical = run_all(settings.workdir / f"export-{layers}", source, layers, settings.runs)
    f16 = "export f16: `discopop export --quant f16` vs llama.cpp's `convert_hf_to_gguf.py --outtype f16`"
    q4 = "export q4_k_m: `discopop export --quant q4_k_m` vs llama.cpp's convert to f16, then quantize"
    step = "export q4_k_m: the same vs llama.cpp's quantize step alone (from its f16 file)"
    same = "F16 tensor data identical" if identical else "F16 tensor data DIFFERS"
    result = []
    for task, ours, theirs, target, note in [
        (f16, "ours_f16", "llamacpp_f16", 1.0, same),
        (q4, "ours_q4", "llamacpp_q4", 1.0, ""),
        (step, "ours_q4", "llamacpp_quantize", None, ""),
    ]:
        a, b = samples[ours], samples[theirs]
        result.append(Row(task, "wall time", med_seconds(a), med_seconds(b), target, "s", note))
        result.append(Row(task, "peak RSS", med_rss(a), med_rss(b), target, "MiB"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8, help="Gemma blocks (about 30 MB of bf16 each; default 8).")
    parser.add_argument("--runs", type=int, default=3, help="Runs of each command, alternating (medians reported).")
    parser.add_argument("--llama-cpp", type=Path, help="The unpacked llama-cpp-python sdist (or its vendor/llama.cpp).")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "discopop-bench")
    parser.add_argument("--keep", action="store_true", help="Keep the model and GGUF files (printed at the end).")
    parser.add_argument("--build-model", type=Path, help=argparse.SUPPRESS)  # the child that builds the model
    parser.add_argument("--compare", nargs=2, type=Path, help=argparse.SUPPRESS)  # the child that compares
    args = parser.parse_args()
    if args.build_model:
        build_model(args.build_model, args.layers)
        return
    if args.compare:
        print("identical" if same_tensors(*args.compare) else "different")
        return

    work = Path(tempfile.mkdtemp(prefix="discopop-bench-"))
    try:
        samples, identical = run_all(work, llama_cpp_source(args.llama_cpp, args.cache), args.layers, args.runs)
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'medians of ' + str(args.runs):<36}{'seconds':>9}{'peak RSS MiB':>14}")
    for ours, theirs in [("ours_f16", "llamacpp_f16"), ("ours_q4", "llamacpp_q4")]:
        for name in (ours, theirs):
            print(f"{LABELS[name]:<36}{med_seconds(samples[name]):>9.1f}{med_rss(samples[name]):>14.0f}")
        time_ratio = med_seconds(samples[ours]) / med_seconds(samples[theirs])
        print(
            f"{'  ratio discopop / llama.cpp':<36}{time_ratio:>9.2f}{med_rss(samples[ours]) / med_rss(samples[theirs]):>14.2f}\n"
        )
    print(f"F16 tensor data identical to llama.cpp's converter: {'yes' if identical else 'NO'}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
