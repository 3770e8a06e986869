"""Architecture-specific GGUF keys beyond the common ones, and the config checks that keep llama.cpp exact.

Facts from llama.cpp's loaders (read, not copied), where a config value has no GGUF key and llama.cpp assumes it:

- gemma2/gemma3: the query scale is 1/sqrt(head_dim) (1/sqrt(hidden/heads) for the 27B layer counts), so a config
  whose `query_pre_attn_scalar` says otherwise is refused. Which layers slide is written per layer from
  `layer_types`; gemma2 also soft-caps attention and final logits; gemma3's sliding layers have their own RoPE base.
- phi3: rotates halves (NEOX), q/k/v and gate/up come fused; the rotary dimension is head_dim x partial_rotary_factor.
- smollm3: every 4th layer has no RoPE, fixed in llama.cpp, so `no_rope_layers` must follow that pattern.
- qwen3: qwen2 without biases plus per-head q/k RMSNorms (plain weights, no offset).
"""

from __future__ import annotations

from typing import Any

from discopop_cli.core.errors import UserError

_GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3_text": 62}


def head_dim(config: dict[str, Any]) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def rope_parameters(config: dict[str, Any], layer_type: str = "full_attention") -> dict[str, Any]:
    """transformers 5's `rope_parameters` (one dict, or one per layer type), or `rope_theta` + `rope_scaling`."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    if isinstance(params.get(layer_type), dict):
        params = dict(params[layer_type])
    if "rope_type" not in params and "type" in params:
        params["rope_type"] = params["type"]
    default_theta = config.get("rope_local_base_freq") if layer_type == "sliding_attention" else None
    params.setdefault("rope_theta", default_theta or config.get("rope_theta", 10000.0))
    return params


def _sliding_layers(config: dict[str, Any]) -> list[bool] | None:
    layer_types = config.get("layer_types")
    if not layer_types:
        return None
    return [kind == "sliding_attention" for kind in layer_types]


def _check_gemma_query_scale(config: dict[str, Any], model_type: str) -> None:
    scalar = config.get("query_pre_attn_scalar")
    if scalar is None:
        return
    expected = head_dim(config)
    if int(config["num_hidden_layers"]) == _GEMMA_27B_LAYERS[model_type]:
        expected = int(config["hidden_size"]) // int(config["num_attention_heads"])
    if float(scalar) != float(expected):
        raise UserError(
            f"query_pre_attn_scalar {scalar} of this {model_type} model is not {expected}, the query scale llama.cpp "
            "applies to it; its GGUF would attend differently"
        )


def _gemma2(writer: Any, config: dict[str, Any]) -> None:
    _check_gemma_query_scale(config, "gemma2")
    for key, add in (
        ("attn_logit_softcapping", writer.add_attn_logit_softcapping),
        ("final_logit_softcapping", writer.add_final_logit_softcapping),
    ):
        if config.get(key) is not None:
            add(float(config[key]))
    if config.get("sliding_window"):
        writer.add_sliding_window(int(config["sliding_window"]))
    if (sliding := _sliding_layers(config)) is not None:
        writer.add_sliding_window_pattern(sliding)


def _gemma3(writer: Any, config: dict[str, Any]) -> None:
    _check_gemma_query_scale(config, "gemma3_text")
    if config.get("attn_logit_softcapping") is not None:
        raise UserError("attn_logit_softcapping is set on this gemma3 model; llama.cpp's gemma3 has no such cap")
    if config.get("final_logit_softcapping") is not None:
        writer.add_final_logit_softcapping(float(config["final_logit_softcapping"]))
    sliding = _sliding_layers(config)
    if config.get("sliding_window") and (sliding is None or any(sliding)):
        writer.add_sliding_window(int(config["sliding_window"]))
        if sliding is not None:
            writer.add_sliding_window_pattern(sliding)
        swa_rope = rope_parameters(config, "sliding_attention")
        if (swa_rope.get("rope_type") or "default") != "default":
            raise UserError("the sliding layers of this gemma3 model scale RoPE, which llama.cpp does not do")
        writer.add_rope_freq_base_swa(float(swa_rope["rope_theta"]))


def _phi3(writer: Any, config: dict[str, Any]) -> None:
    rope = rope_parameters(config)
    factor = float(rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0)))
    writer.add_rope_dimension_count(int(head_dim(config) * factor))
    original = config.get("original_max_position_embeddings") or rope.get("original_max_position_embeddings")
    writer.add_rope_scaling_orig_ctx_len(int(original or config["max_position_embeddings"]))
    if config.get("sliding_window"):
        writer.add_sliding_window(int(config["sliding_window"]))


def _smollm3(writer: Any, config: dict[str, Any]) -> None:
    layers = int(config["num_hidden_layers"])
    expected = [int((index + 1) % 4 != 0) for index in range(layers)]  # 1: the layer uses RoPE
    if list(config.get("no_rope_layers") or expected) != expected:
        raise UserError(
            "this smollm3 model skips RoPE on other layers than every 4th, which is all llama.cpp's smollm3 can do"
        )


EXTRAS = {"gemma2": _gemma2, "gemma3_text": _gemma3, "phi3": _phi3, "smollm3": _smollm3}


def add_extra_hyperparameters(writer: Any, model_type: str, config: dict[str, Any]) -> None:
    if model_type in EXTRAS:
        EXTRAS[model_type](writer, config)
