"""Write the GGUF: metadata and tensor infos through `gguf.GGUFWriter`, then the tensor data streamed in chunks.

K-quants take one more step: the exporter writes an intermediate GGUF whose weights keep their stored precision
(f32, f16 or bf16, so nothing is rounded twice) and llama.cpp's quantizer makes the final file from it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from discopop_cli.core.errors import UserError
from discopop_cli.core.outputs import GGUF_KEY, tool_version
from discopop_cli.export.architectures import Architecture, add_hyperparameters, plan_tensors
from discopop_cli.export.modelfile import GEMMA_TERMS_URL
from discopop_cli.export.quants import QuantType
from discopop_cli.export.tensors import ArrayTensor, PlannedTensor, SourceTensor, write_tensor_data
from discopop_cli.export.vocab import Vocabulary

_LOW_BIT_NUMPY = ("Q4_0", "Q4_1", "Q5_0", "Q5_1")
_STORED_FLOATS = ("F32", "F16", "BF16")

Advance = Callable[[str, int, int], None]  # (stage, done, total): progress reports


def weight_type_chooser(quant: QuantType) -> Callable[[str, SourceTensor | ArrayTensor], str]:
    """The GGUF type of each 2-D weight for this --quant."""
    if quant.needs_llama_cpp:
        # The intermediate for llama.cpp's quantizer: each weight in the precision it is stored in.
        return lambda name, source: source.dtype if source.dtype in _STORED_FLOATS else "F32"
    numpy_type = quant.numpy_type
    assert numpy_type is not None

    def choose(name: str, source: SourceTensor | ArrayTensor) -> str:
        # Like llama.cpp's quantizer, keep the embedding/output head above 4-5 bits: they set every logit.
        if numpy_type in _LOW_BIT_NUMPY and name in ("token_embd.weight", "output.weight"):
            return "Q8_0"
        return numpy_type

    return choose


def plan(
    arch: Architecture, config: dict[str, Any], sources: dict[str, SourceTensor], quant: QuantType
) -> list[PlannedTensor]:
    return plan_tensors(arch, config, sources, weight_type_chooser(quant))


def write_gguf(
    path: Path,
    *,
    arch: Architecture,
    config: dict[str, Any],
    vocabulary: Vocabulary,
    planned: list[PlannedTensor],
    file_type: str,
    model_name: str,
    gemma: bool,
    advance: Advance,
) -> None:
    """Header, metadata, tensor infos, then every tensor's data in chunks (so memory stays near one chunk)."""
    import gguf

    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[arch.gguf_arch]])
    try:
        writer.add_type("model")
        # Among the first keys, where `discopop export --force` looks for it: this file is discopop's to replace.
        writer.add_string(GGUF_KEY, f"discopop-cli {tool_version()}")
        writer.add_name(model_name)
        if gemma:
            writer.add_license("gemma")
            writer.add_license_link(GEMMA_TERMS_URL)
        add_hyperparameters(writer, arch, config)
        writer.add_file_type(int(gguf.LlamaFileType[file_type]))
        if any(tensor.ggml_type not in _STORED_FLOATS for tensor in planned):
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        vocabulary.add_to(writer)
        for tensor in planned:
            writer.add_tensor_info(
                tensor.gguf_name,
                tensor.shape,
                np.dtype(np.float32),  # a placeholder: raw_dtype is what the header records
                tensor.nbytes(),
                raw_dtype=gguf.GGMLQuantizationType[tensor.ggml_type],
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        assert writer.fout is not None and len(writer.fout) == 1
        done = 0

        def tensor_written(tensor: PlannedTensor) -> None:
            nonlocal done
            done += 1
            advance("converting", done, len(planned))

        write_tensor_data(writer.fout[0], planned, writer.data_alignment, tensor_written)
    finally:
        writer.close()


def intermediate_file_type(planned: list[PlannedTensor]) -> str:
    """A file type describing the intermediate (llama.cpp's quantizer reads each tensor's own type anyway)."""
    first_weight = next((tensor.ggml_type for tensor in planned if len(tensor.shape) > 1), "F32")
    return {"F16": "MOSTLY_F16", "BF16": "MOSTLY_BF16"}.get(first_weight, "ALL_F32")


def quantize_with_llama_cpp(source: Path, destination: Path, quant: QuantType, advance: Advance) -> None:
    """llama.cpp's quantizer (llama_model_quantize) in a child process, its per-tensor log lines turned into progress.

    A child, so that Ctrl-C stops it (see quantize_child): this process only reads the child's progress lines."""
    assert quant.llama_cpp_ftype is not None
    command = [
        sys.executable,
        "-c",
        "import sys; from discopop_cli.export.quantize_child import main; sys.exit(1 if main(sys.argv[1:]) else 0)",
        str(source),
        str(destination),
        quant.llama_cpp_ftype,
    ]
    errors: list[str] = []
    # Its own session: a Ctrl-C in the terminal reaches this process only, which then stops the child.
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert child.stdout is not None
        for line in child.stdout:
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "step":
                done, total = rest.split()
                advance("quantizing", int(done), int(total))
            elif kind == "error":
                errors.append(rest)
        status = child.wait()
    except BaseException:
        child.kill()
        child.wait()
        raise
    if status != 0:
        detail = errors[-1] if errors else f"the quantizer exited with status {status}"
        raise UserError(f"llama.cpp could not quantize to {quant.label}: {detail}")
