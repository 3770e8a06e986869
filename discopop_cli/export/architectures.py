"""What differs between the supported architectures: GGUF hyperparameters and tensor transforms.

Facts from llama.cpp (its loader and its converter, read, not copied):

- gemma: the RMSNorm weights are stored with 1 added (Hugging Face multiplies by `1 + w`, llama.cpp by `w`); the
  output head is always the token embedding; llama.cpp applies the `sqrt(hidden_size)` embedding scale itself.
- llama, mistral: llama.cpp rotates query/key pairs that are adjacent (GPT-J order) where Hugging Face rotates the
  two halves of each head, so the rows of q_proj/k_proj are reordered per head. `rope_type: llama3` becomes a
  `rope_freqs` tensor of per-dimension frequency factors.
- qwen2: rotates halves like Hugging Face (NEOX order), so nothing is reordered; q/k/v carry biases.
- gemma2, gemma3 (text): Gemma's norm offset on every norm (q/k norms too) and tied head; see `hparams`.
- qwen3, phi3: NEOX like qwen2; smollm3: llama's q/k reorder. Their extra keys and checks are in `hparams`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from discopop_cli.core.errors import UserError
from discopop_cli.export.hparams import add_extra_hyperparameters, head_dim, rope_parameters
from discopop_cli.export.tensors import ArrayTensor, PlannedTensor, RowTransform, SourceTensor, fits_blocks

_SKIPPED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers older checkpoints saved; llama.cpp recomputes them


@dataclass(frozen=True)
class Architecture:
    model_type: str  # config.json's model_type
    gguf_arch: str  # the gguf.MODEL_ARCH member name
    norm_offset: float = 0.0
    reorders_qk: bool = False
    always_tied: bool = False  # the output head is the token embedding, whatever the config says
    writes_vocab_size: bool = False


ARCHITECTURES = {
    "gemma": Architecture("gemma", "GEMMA", norm_offset=1.0, always_tied=True),
    "gemma2": Architecture("gemma2", "GEMMA2", norm_offset=1.0, always_tied=True),
    "gemma3_text": Architecture("gemma3_text", "GEMMA3", norm_offset=1.0, always_tied=True),
    "llama": Architecture("llama", "LLAMA", reorders_qk=True, writes_vocab_size=True),
    "mistral": Architecture("mistral", "LLAMA", reorders_qk=True, writes_vocab_size=True),
    "phi3": Architecture("phi3", "PHI3"),
    "qwen2": Architecture("qwen2", "QWEN2"),
    "qwen3": Architecture("qwen3", "QWEN3"),
    "smollm3": Architecture("smollm3", "SMOLLM3", reorders_qk=True),
}


def architecture_of(config: dict[str, Any], model_dir: object) -> Architecture:
    model_type = str(config.get("model_type", ""))
    arch = ARCHITECTURES.get(model_type)
    if arch is None:
        names = ", ".join(config.get("architectures") or []) or "unknown architecture"
        raise UserError(
            f"{model_dir} is a {model_type or '?'} model ({names}); "
            f"discopop export --gguf supports {', '.join(ARCHITECTURES)}"
        )
    return arch


def add_hyperparameters(writer: Any, arch: Architecture, config: dict[str, Any]) -> None:
    """The `{arch}.*` keys llama.cpp reads to build the graph."""
    import gguf

    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or config["num_attention_heads"]))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    if config.get("head_dim"):
        writer.add_key_length(int(config["head_dim"]))
        writer.add_value_length(int(config["head_dim"]))
    if arch.writes_vocab_size:
        writer.add_vocab_size(int(config["vocab_size"]))
        writer.add_rope_dimension_count(head_dim(config))

    rope = rope_parameters(config)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    rope_type = rope.get("rope_type") or "default"
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif rope_type == "llama3" and arch.reorders_qk:
        pass  # a rope_freqs tensor, see extra_tensors()
    elif rope_type != "default":
        raise UserError(f"RoPE scaling {rope_type!r} of this {arch.model_type} model is not supported by the exporter")
    add_extra_hyperparameters(writer, arch.model_type, config)


def _llama3_rope_factors(config: dict[str, Any]) -> np.ndarray:
    """Per-dimension frequency divisors of Llama 3.1's RoPE scaling (Meta's published formula)."""
    rope = rope_parameters(config)
    dim = head_dim(config)
    base = float(rope["rope_theta"])
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_context = float(rope.get("original_max_position_embeddings", 8192))
    factors = []
    for index in range(0, dim, 2):
        wavelength = 2 * math.pi * base ** (index / dim)
        if wavelength < old_context / high:
            factors.append(1.0)
        elif wavelength > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelength - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def _reorder_heads(head_size: int) -> RowTransform:
    """Within each head, interleave the two rotary halves: rows [a0..an, b0..bn] become [a0, b0, a1, b1, ...]."""

    def reorder(rows: np.ndarray, start: int) -> np.ndarray:
        heads = rows.shape[0] // head_size if rows.ndim > 1 else rows.size // head_size
        shaped = rows.reshape(heads, 2, head_size // 2, *rows.shape[1:])
        return shaped.swapaxes(1, 2).reshape(rows.shape)

    return reorder


def _add_offset(offset: float) -> RowTransform:
    return lambda rows, start: rows + np.float32(offset)


def plan_tensors(
    arch: Architecture,
    config: dict[str, Any],
    sources: dict[str, SourceTensor],
    weight_type: Callable[[str, SourceTensor | ArrayTensor], str],
) -> list[PlannedTensor]:
    """Every GGUF tensor in llama.cpp's order, with its type chosen by `weight_type(gguf_name, source)`.

    Norms and other 1-D tensors stay float32, as llama.cpp's kernels expect.
    """
    import gguf

    n_blocks = int(config["num_hidden_layers"])
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.gguf_arch], n_blocks)
    tied = arch.always_tied or bool(config.get("tie_word_embeddings", False))
    dim = head_dim(config)
    planned: list[PlannedTensor] = []
    for name, source in sources.items():
        if name.endswith(_SKIPPED_SUFFIXES) or (tied and name == "lm_head.weight"):
            continue
        gguf_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise UserError(f"tensor {name} has no GGUF counterpart in llama.cpp's {arch.gguf_arch.lower()} layout")
        transform: RowTransform | None = None
        row_group = 1
        if arch.norm_offset and gguf_name.endswith("_norm.weight"):
            transform = _add_offset(arch.norm_offset)
        if arch.reorders_qk and gguf_name.endswith(("attn_q.weight", "attn_k.weight", "attn_q.bias", "attn_k.bias")):
            transform, row_group = _reorder_heads(dim), dim
        planned.append(_typed(gguf_name, source, transform, row_group, weight_type))

    if arch.reorders_qk and (rope_parameters(config).get("rope_type") == "llama3"):
        factors = ArrayTensor("rope_freqs.weight", _llama3_rope_factors(config))
        planned.append(PlannedTensor("rope_freqs.weight", factors, "F32"))
    return sorted(planned, key=lambda tensor: _gguf_order(tensor.gguf_name))


def _typed(
    gguf_name: str,
    source: SourceTensor | ArrayTensor,
    transform: RowTransform | None,
    row_group: int,
    weight_type: Callable[[str, SourceTensor | ArrayTensor], str],
) -> PlannedTensor:
    if len(source.shape) <= 1 or gguf_name.endswith("_norm.weight"):
        ggml_type = "F32"
    else:
        ggml_type = weight_type(gguf_name, source)
        if ggml_type not in ("F32", "F16", "BF16") and not fits_blocks(source.shape, ggml_type):
            ggml_type = "F16"  # rows that don't split into whole blocks: llama.cpp's converter falls back alike
    return PlannedTensor(gguf_name, source, ggml_type, transform, row_group)


def _gguf_order(gguf_name: str) -> tuple[int, int, str]:
    """token_embd first, then blocks in numeric order, then the rest (output_norm, output, rope_freqs)."""
    parts = gguf_name.split(".")
    if parts[0] == "token_embd":
        return (0, 0, gguf_name)
    if parts[0] == "blk":
        return (1, int(parts[1]), gguf_name)
    return (2, 0, gguf_name)
