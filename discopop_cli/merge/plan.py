"""What `discopop merge` will write, worked out and checked before a single byte goes to disk.

A LoRA adapter saved by peft holds, per targeted module M (keys prefixed `base_model.model.`, stripped on reading):
`M.lora_A.weight` (r x in) and `M.lora_B.weight` (out x r) for linear layers, `M.lora_embedding_A` (r x vocab) and
`M.lora_embedding_B` (hidden x r) for embeddings, `M.lora_magnitude_vector` (out) for DoRA, `M.lora_B.bias` with
`lora_bias`, `M.token_adapter.trainable_tokens_delta` (rows) for `trainable_token_indices`, and whole tensors that
replace the base's: `modules_to_save`, resized embeddings (`M.weight`, `M.base_layer.weight`,
`M.token_adapter.base_layer.weight`). The merged weight is
`W + scale * B @ A` (transposed for fan_in_fan_out layers and embeddings), `scale = alpha / r`, or `alpha / sqrt(r)`
with rsLoRA, with r and alpha per module from `rank_pattern` / `alpha_pattern` (peft's first matching pattern).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from discopop_cli.core.errors import UserError

if TYPE_CHECKING:
    import torch

    from discopop_cli.merge.inputs import Adapter, BaseCheckpoint

_LORA_KEY = re.compile(r"(?P<module>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_B\.bias|lora_embedding_A|"
                       r"lora_embedding_B|lora_magnitude_vector|token_adapter\.trainable_tokens_delta)$")  # fmt: skip


@dataclass
class LoraDelta:
    """The low-rank update of one weight, computed a block of stored rows at a time, in float32."""

    module: str
    lora_A: torch.Tensor
    lora_B: torch.Tensor
    scale: float
    r: int
    alpha: float
    # Embeddings and fan_in_fan_out layers store W transposed (rows index A's columns): delta rows = (B @ A[:, rows]).T
    transposed: bool
    dora_magnitude: torch.Tensor | None = None

    def rows(self, start: int, end: int) -> torch.Tensor:
        if self.transposed:
            return (self.lora_B @ self.lora_A[:, start:end]).T.mul_(self.scale)
        return (self.lora_B[start:end] @ self.lora_A).mul_(self.scale)


@dataclass
class TensorPlan:
    """One output tensor: where its values come from and what the adapter changes in them."""

    name: str
    source: str  # the base tensor read, unless `replacement` is set
    shape: tuple[int, ...]
    dtype: torch.dtype
    replacement: torch.Tensor | None = None
    token_rows: tuple[torch.Tensor, torch.Tensor] | None = None  # (row indices, their new values)
    addend: torch.Tensor | None = None  # lora_bias: scale * lora_B.bias, added to the base bias
    delta: LoraDelta | None = None


@dataclass
class MergePlan:
    tensors: list[TensorPlan]
    config_updates: dict[str, Any] = field(default_factory=dict)
    deltas: list[LoraDelta] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    untied: list[str] = field(default_factory=list)
    vocab_resized: tuple[int, int] | None = None


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """peft's rank_pattern/alpha_pattern lookup: the first key that matches the end of the module's dotted name."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module):
            return patterns[key]
    return default


def build_plan(
    base: BaseCheckpoint,
    adapter: Adapter,
    *,
    out_dtype: torch.dtype | None,
    embeddings: dict[str, str],
    tied: bool,
    base_label: str,
) -> MergePlan:
    """Map every adapter tensor onto the base, check shapes, and list the output tensors.

    `embeddings` maps the output embedding's tensor name to the input embedding's (lm_head.weight ->
    model.embed_tokens.weight), `tied` says whether the base ties them; `out_dtype` None keeps stored dtypes.
    """
    plans = _base_tensors(base, out_dtype)
    pairs = {target: source for target, source in embeddings.items() if source in plans}
    # A tied output embedding missing from the file reads its source; it is written only if the adapter unties it.
    virtual = [target for target in pairs if tied and target not in plans]
    for target in virtual:
        source = plans[pairs[target]]
        plans[target] = TensorPlan(name=target, source=source.name, shape=source.shape, dtype=source.dtype)

    def plan_for(tensor: str, what: str) -> TensorPlan:
        if tensor not in plans:
            close = _closest(tensor, plans)
            hint = f" (closest: {close})" if close else ""
            raise UserError(
                f"the adapter {what} {tensor}, but {base_label} has no such tensor{hint}; "
                "the adapter was trained on a different base (pass the right one with --base)"
            )
        return plans[tensor]

    lora_parts = _attach_whole_tensors(adapter, plan_for, base_label)
    plan = MergePlan(tensors=[])
    # peft gives a tied output embedding the token rows of its input embedding, listed under the input's name only.
    tied_modules = {t.removesuffix(".weight"): s.removesuffix(".weight") for t, s in pairs.items()} if tied else {}
    for module, parts in sorted(lora_parts.items()):
        _plan_module(module, parts, adapter.config, plans, plan_for, plan, base_label, tied_modules)
    _check_vocabulary_resize(plans, base, plan)
    if tied:
        _settle_ties(plans, pairs, virtual, plan)

    plan.tensors = list(plans.values())
    plan.replaced = [p.name for p in plan.tensors if p.replacement is not None]
    if out_dtype is not None:
        plan.config_updates["dtype"] = str(out_dtype).removeprefix("torch.")
    return plan


def _base_tensors(base: BaseCheckpoint, out_dtype: torch.dtype | None) -> dict[str, TensorPlan]:
    """One plan per tensor of the base, in its stored dtype or `out_dtype` for floating-point ones."""
    from discopop_cli.merge.safetensors_stream import torch_dtype

    plans: dict[str, TensorPlan] = {}
    for name, (_, dtype_name, shape) in base.tensors.items():
        dtype = torch_dtype(dtype_name)
        if out_dtype is not None and dtype.is_floating_point:
            dtype = out_dtype
        plans[name] = TensorPlan(name=name, source=name, shape=shape, dtype=dtype)
    return plans


def _attach_whole_tensors(
    adapter: Adapter, plan_for: Callable[[str, str], TensorPlan], base_label: str
) -> dict[str, dict[str, torch.Tensor]]:
    """Put the tensors the adapter replaces whole into their plans; return its LoRA parts by module."""
    lora_parts: dict[str, dict[str, torch.Tensor]] = {}
    # A wrapper saved whole (modules_to_save on a resized embedding) holds M.weight and M.modules_to_save.weight,
    # the trained copy peft's forward uses, which goes last so it wins; M.original_module.weight is the unused base.
    for key, value in sorted(adapter.tensors.items(), key=lambda item: ".modules_to_save." in item[0]):
        match = _LORA_KEY.match(key)
        if match:
            lora_parts.setdefault(match["module"], {})[match["part"]] = value
            continue
        if ".original_module." in key:
            continue
        # Wrapped layers save their base (resized embeddings) under the wrapper's name.
        name = key.replace(".token_adapter.base_layer.", ".").replace(".base_layer.", ".")
        name = name.replace(".modules_to_save.", ".")
        if ".lora_" in name or "token_adapter." in name:
            raise UserError(f"the adapter holds {key}, a kind of LoRA tensor discopop merge does not know")
        target = plan_for(name, "replaces")
        if tuple(value.shape[1:]) != target.shape[1:]:
            raise UserError(
                f"the adapter's {key} is {tuple(value.shape)} but {base_label}'s is {target.shape}; "
                "the adapter was trained on a different base"
            )
        target.replacement = value
        target.shape = tuple(value.shape)
    return lora_parts


def _check_vocabulary_resize(plans: dict[str, TensorPlan], base: BaseCheckpoint, plan: MergePlan) -> None:
    """Whole tensors of another shape are allowed only as one consistent vocabulary resize, recorded in the plan."""
    resized = [p for p in plans.values() if p.replacement is not None and p.shape != base.tensors[p.source][2]]
    if not resized:
        return
    old_vocab, new_rows = _vocab_size(base.config), {p.shape[0] for p in resized}
    if old_vocab is None or len(new_rows) != 1 or any(base.tensors[p.source][2][0] != old_vocab for p in resized):
        names = ", ".join(p.name for p in resized)
        raise UserError(f"the adapter's {names} change shape in a way other than a vocabulary resize")
    plan.vocab_resized = (old_vocab, new_rows.pop())
    _set_vocab_size(plan.config_updates, base.config, plan.vocab_resized[1])


def _settle_ties(plans: dict[str, TensorPlan], pairs: dict[str, str], virtual: list[str], plan: MergePlan) -> None:
    """A tied output embedding stays tied when the adapter changed both sides alike, and is untied otherwise."""
    for target, source in pairs.items():
        if target not in plans:
            continue
        if _stays_tied(plans[source], plans[target]):
            if target in virtual:
                del plans[target]
            else:  # stored despite the tie: transformers re-ties it on load, so write the same values
                plans[target] = replace(plans[source], name=target)
        else:
            plan.untied.append(target)
            plan.config_updates["tie_word_embeddings"] = False
            if plans[target].token_rows is None:
                plans[target].token_rows = plans[source].token_rows  # peft mirrors token rows into the tied layer
    if plan.vocab_resized:
        for name in {*pairs, *pairs.values()} & plans.keys():
            if plans[name].shape[0] != plan.vocab_resized[1]:
                raise UserError(
                    f"the adapter resizes the vocabulary to {plan.vocab_resized[1]} but leaves {name} at "
                    f"{plans[name].shape[0]} rows; the merged model would not be consistent"
                )


def _plan_module(
    module: str,
    parts: dict[str, torch.Tensor],
    cfg: dict[str, Any],
    planned: dict[str, TensorPlan],
    plan_for: Callable[[str, str], TensorPlan],
    plan: MergePlan,
    base_label: str,
    tied_modules: dict[str, str],
) -> None:
    """Attach one module's LoRA factors (and DoRA magnitude, LoRA bias, token rows) to the tensors they change."""
    if "token_adapter.trainable_tokens_delta" in parts:
        _attach_token_rows(module, parts, cfg, plan_for, base_label, tied_modules)
    embedding = "lora_embedding_A" in parts
    a_key, b_key = ("lora_embedding_A", "lora_embedding_B") if embedding else ("lora_A.weight", "lora_B.weight")
    if a_key not in parts and b_key not in parts:
        return
    if a_key not in parts or b_key not in parts:
        raise UserError(f"the adapter has only one of {a_key}/{b_key} for {module}; it is incomplete")
    target = plan_for(f"{module}.weight", "targets")
    delta = _lora_delta(module, parts[a_key].float(), parts[b_key].float(), target, cfg, embedding, base_label)
    if "lora_magnitude_vector" in parts:
        if embedding:
            raise UserError(f"DoRA on the embedding {module} is not supported by discopop merge")
        delta.dora_magnitude = parts["lora_magnitude_vector"].float().reshape(-1)
        if delta.dora_magnitude.shape[0] != target.shape[0]:
            raise UserError(f"the adapter's DoRA magnitude for {module} does not fit {base_label}'s weight")
    target.delta = delta
    plan.deltas.append(delta)
    if "lora_B.bias" in parts:
        if f"{module}.bias" not in planned:
            raise UserError(
                f"the adapter has a LoRA bias (lora_bias) for {module}, whose layer in {base_label} has no bias; "
                "there is nothing to fold it into (peft cannot merge it either)"
            )
        bias = plan_for(f"{module}.bias", "adds a LoRA bias to")
        out_features = delta.lora_B.shape[0]
        if bias.shape != (out_features,):
            raise UserError(f"the adapter's lora_B.bias for {module} does not fit {base_label}'s bias")
        bias.addend = parts["lora_B.bias"].float() * delta.scale


def _attach_token_rows(
    module: str,
    parts: dict[str, torch.Tensor],
    cfg: dict[str, Any],
    plan_for: Callable[[str, str], TensorPlan],
    base_label: str,
    tied_modules: dict[str, str],
) -> None:
    """`trainable_token_indices`: the adapter's new values for some rows of an embedding."""
    import torch

    target = plan_for(f"{module}.weight", "changes token rows of")
    values = parts["token_adapter.trainable_tokens_delta"].float()
    indices = _token_indices(cfg.get("trainable_token_indices"), module, tied_modules.get(module))
    if len(indices) != values.shape[0] or max(indices, default=0) >= target.shape[0]:
        raise UserError(f"the adapter's trainable tokens for {module} do not fit {base_label}'s embedding")
    target.token_rows = (torch.tensor(indices), values)


def _lora_delta(
    module: str,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    target: TensorPlan,
    cfg: dict[str, Any],
    embedding: bool,
    base_label: str,
) -> LoraDelta:
    """The checked `scale * B @ A` for one module: shapes against the base, rank and alpha as peft reads them."""
    if len(target.shape) != 2 or lora_a.dim() != 2:
        raise UserError(f"{module} is not a 2-D weight (convolution or fused parameter); discopop merge cannot fold it")
    transposed = embedding or bool(cfg.get("fan_in_fan_out"))
    rows, cols = target.shape
    in_features, out_features = (rows, cols) if transposed else (cols, rows)
    r = lora_a.shape[0]
    if lora_b.dim() != 2 or lora_b.shape[1] != r:
        raise UserError(
            f"the adapter's LoRA for {module} is inconsistent: its lora_A has rank {r} but its lora_B has rank "
            f"{lora_b.shape[-1]} ({tuple(lora_b.shape)}); the adapter file is damaged, re-save it"
        )
    if lora_a.shape[1] != in_features or lora_b.shape != (out_features, r):
        raise UserError(
            f"the adapter's LoRA for {module} maps {lora_a.shape[1]} -> {lora_b.shape[0]} features but "
            f"{base_label}'s weight is {tuple(target.shape)}; the adapter was trained on a different base"
        )
    expected_r = _pattern_value(cfg.get("rank_pattern") or {}, module, cfg.get("r"))
    if expected_r is not None and int(expected_r) != r:
        raise UserError(f"adapter_config.json says r={expected_r} for {module} but its lora_A has rank {r}")
    alpha = float(_pattern_value(cfg.get("alpha_pattern") or {}, module, cfg.get("lora_alpha", 8)))
    scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    return LoraDelta(module, lora_a, lora_b, scale, r, alpha, transposed)


def _token_indices(config_value: Any, module: str, tied_to: str | None) -> list[int]:
    if isinstance(config_value, dict):
        for name in (module, tied_to):
            for key, indices in config_value.items():
                if name and (name == key or name.endswith(f".{key}")):
                    return list(indices)
        raise UserError(f"adapter_config.json lists no trainable_token_indices for {module}")
    if not config_value:
        raise UserError(f"the adapter has trainable token rows for {module} but no trainable_token_indices")
    return list(config_value)


def _stays_tied(source: TensorPlan, target: TensorPlan) -> bool:
    """Whether peft's forward pass still uses one matrix for both embeddings after this adapter.

    peft changes only the side an adapter tensor names, except trainable token rows, which it mirrors into the tied
    layer, and, with ensure_weight_tying, LoRA factors it shares between the two (saved on both sides).
    """
    import torch

    if any(p.delta and p.delta.dora_magnitude is not None for p in (source, target)):
        return False
    if target.token_rows is not None and not (
        source.token_rows is not None and all(map(torch.equal, source.token_rows, target.token_rows))
    ):
        return False
    if (source.replacement is None) != (target.replacement is None):
        return False
    if source.replacement is not None and not torch.equal(source.replacement, target.replacement):
        return False
    if source.delta is None or target.delta is None:
        return source.delta is None and target.delta is None
    a, b = source.delta, target.delta
    if a.transposed == b.transposed:
        return a.scale == b.scale and torch.equal(a.lora_A, b.lora_A) and torch.equal(a.lora_B, b.lora_B)
    # An embedding's (B @ A).T equals a linear layer's B' @ A' when B' = A.T and A' = B.T.
    return a.scale == b.scale and torch.equal(a.lora_A.T, b.lora_B) and torch.equal(a.lora_B.T, b.lora_A)


def _vocab_size(config: dict[str, Any]) -> int | None:
    return config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")


def _set_vocab_size(updates: dict[str, Any], config: dict[str, Any], size: int) -> None:
    if "vocab_size" in config or "text_config" not in config:
        updates["vocab_size"] = size
    else:
        updates["text_config.vocab_size"] = size


def _closest(name: str, names: dict[str, Any]) -> str | None:
    import difflib

    found = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return found[0] if found else None
