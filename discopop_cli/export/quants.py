"""The `--quant` types: what each is called, which GGUF file type it makes and who makes it.

Types that the `gguf` package quantizes in numpy are written directly. K-quants need llama.cpp's quantizer
(through `llama-cpp-python`, the `gguf` extra): the exporter writes a lossless intermediate GGUF and hands it over.
"""

from __future__ import annotations

from dataclasses import dataclass

from discopop_cli.core.errors import UserError

INSTALL_HINT = "pip install 'discopop-cli[gguf]'"
"""How to get llama-cpp-python (it compiles llama.cpp on install, about 5 minutes on 2 cores; pip caches it)."""


@dataclass(frozen=True)
class QuantType:
    name: str  # as typed after --quant, lower case
    file_type: str  # the gguf.LlamaFileType member name
    numpy_type: str | None  # the gguf.GGMLQuantizationType the weights get in numpy; None: llama.cpp quantizes
    llama_cpp_ftype: str | None = None  # the llama_cpp constant for llama_model_quantize

    @property
    def needs_llama_cpp(self) -> bool:
        return self.numpy_type is None

    @property
    def is_float(self) -> bool:
        """Float types must agree with transformers on the top-1 token at every position."""
        return self.name in ("f32", "f16", "bf16")

    @property
    def label(self) -> str:
        return self.name.upper()


_NUMPY = [
    QuantType("f32", "ALL_F32", "F32"),
    QuantType("f16", "MOSTLY_F16", "F16"),
    QuantType("bf16", "MOSTLY_BF16", "BF16"),
    QuantType("q8_0", "MOSTLY_Q8_0", "Q8_0"),
    QuantType("q5_1", "MOSTLY_Q5_1", "Q5_1"),
    QuantType("q5_0", "MOSTLY_Q5_0", "Q5_0"),
    QuantType("q4_1", "MOSTLY_Q4_1", "Q4_1"),
    QuantType("q4_0", "MOSTLY_Q4_0", "Q4_0"),
]
_LLAMA_CPP = [
    QuantType(name, f"MOSTLY_{name.upper()}", None, f"LLAMA_FTYPE_MOSTLY_{name.upper()}")
    for name in ("q6_k", "q5_k_m", "q5_k_s", "q4_k_m", "q4_k_s", "q3_k_l", "q3_k_m", "q3_k_s", "q2_k")
]
QUANT_TYPES: dict[str, QuantType] = {quant.name: quant for quant in _NUMPY + _LLAMA_CPP}
DEFAULT_QUANT = "q4_k_m"


def quant_type(name: str) -> QuantType:
    """Look a --quant value up, case-insensitively."""
    quant = QUANT_TYPES.get(name.strip().lower())
    if quant is None:
        raise UserError(f"unknown --quant {name!r}; choose one of {', '.join(QUANT_TYPES)}")
    return quant


def require_llama_cpp(purpose: str) -> None:
    """Fail with one line when llama-cpp-python is missing; `purpose` says what needed it."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        raise UserError(f"{purpose} needs llama-cpp-python, which is not installed; run: {INSTALL_HINT}") from None
