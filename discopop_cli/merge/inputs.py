"""The two inputs of `discopop merge`, read and vetted: the base checkpoint (headers only) and the LoRA adapter.

Both are refused here, before anything is planned or written, when no exact merge is possible: pickled weights,
quantized bases, non-LoRA adapters, and LoRA forms whose forward pass is not `W + scale * B @ A`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from discopop_cli.core.errors import UserError, first_line
from discopop_cli.core.json_files import read_json

if TYPE_CHECKING:
    import torch

PEFT_PREFIX = "base_model.model."
# peft inits that rewrite the base weights when the adapter is created: the adapter only holds the difference from
# that rewritten base, which a merge into the original cannot recover.
_BASE_REWRITING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")
# Config keys of LoRA forms whose forward pass is not W + scale * B @ A.
_UNSUPPORTED_KEYS = ("use_qalora", "layer_replication", "target_parameters")
_QUANTIZED_SUFFIXES = (
    ".qweight",
    ".qzeros",
    ".g_idx",
    ".absmax",
    ".quant_map",
    ".quant_state",
    ".SCB",
    ".weight_scale",
)


def _unreadable(path: Path, exc: Exception, what: str) -> UserError:
    return UserError(f"{path} is not a readable safetensors file ({first_line(exc)}); re-save the {what}")


@dataclass
class BaseCheckpoint:
    """A base model folder: its config and, for every tensor, the file holding it, its dtype and shape."""

    folder: Path
    config: dict[str, Any]
    tensors: dict[str, tuple[str, str, tuple[int, ...]]]


@dataclass
class Adapter:
    folder: Path
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]


def read_base(folder: Path) -> BaseCheckpoint:
    """Index the base's safetensors by name (headers only) and refuse bases it cannot merge into exactly."""
    from discopop_cli.core.weights import read_folder, safetensors_files

    config_path = folder / "config.json"
    if not config_path.is_file():
        raise UserError(f"base model {folder} has no config.json; is it a transformers model folder?")
    config = read_json(config_path, "base model")
    quantization = config.get("quantization_config") or (config.get("text_config") or {}).get("quantization_config")
    if quantization:
        method = quantization.get("quant_method", "unknown method") if isinstance(quantization, dict) else "?"
        raise UserError(
            f"base model {folder} is quantized ({method}); merging into quantized weights is not exact. "
            "Merge into the unquantized model the adapter was trained from (pass it with --base)."
        )
    if not safetensors_files(folder, "base model"):
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        found = f" (it has {', '.join(pickled)})" if pickled else ""
        raise UserError(
            f"base model {folder} has no safetensors weights{found}; discopop merge reads safetensors only, "
            "never pickled checkpoints. Convert it first, e.g. load it and save_pretrained(safe_serialization=True)."
        )
    tensors = {
        name: (info.file.name, info.dtype, info.shape) for name, info in read_folder(folder, "base model").items()
    }
    quantized = sorted(k for k in tensors if k.endswith(_QUANTIZED_SUFFIXES))
    if quantized:
        raise UserError(f"base model {folder} holds quantized weights ({quantized[0]}, ...); merging is not exact")
    return BaseCheckpoint(folder=folder, config=config, tensors=tensors)


def read_adapter(folder: Path) -> Adapter:
    from safetensors.torch import load_file

    from discopop_cli.core.weights import read_header

    if not folder.is_dir():
        raise UserError(f"adapter {folder} not found (expected a folder with adapter_config.json)")
    config_path = folder / "adapter_config.json"
    if not config_path.is_file():
        what = "a full model, not a LoRA adapter" if (folder / "config.json").is_file() else "not a peft adapter"
        raise UserError(f"{folder} has no adapter_config.json: it is {what}; nothing to merge")
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        pickled = (folder / "adapter_model.bin").is_file()
        raise UserError(
            f"{folder} has no adapter_model.safetensors"
            + ("; it has adapter_model.bin, and discopop merge reads safetensors only" if pickled else "")
        )
    config = read_json(config_path, "adapter")
    _check_adapter_config(config, folder)
    read_header(weights, "adapter")
    try:
        loaded = load_file(weights)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
        raise _unreadable(weights, exc, "adapter") from None
    tensors = {key.removeprefix(PEFT_PREFIX): value for key, value in loaded.items()}
    return Adapter(folder=folder, config=config, tensors=tensors)


def _check_adapter_config(config: dict[str, Any], folder: Path) -> None:
    if config.get("peft_type") != "LORA":
        raise UserError(f"{folder} is a {config.get('peft_type')} adapter; discopop merge folds LoRA adapters only")
    init = str(config.get("init_lora_weights", True)).lower()
    if init.startswith(_BASE_REWRITING_INITS):
        raise UserError(
            f"{folder} was initialised with init_lora_weights={init}, which rewrites the base weights; merge it "
            "into that rewritten base with peft, or save it converted (path_initial_model_for_weight_conversion)"
        )
    variants = [key for key in _UNSUPPORTED_KEYS if config.get(key)]
    variants += [name for name in _peft_variant_fields() if config.get(name)]
    if init in _peft_init_variants():
        variants.append(f"init_lora_weights={init}")
    if variants:
        raise UserError(
            f"{folder} uses {', '.join(variants)}, whose forward pass is not W + scale * B @ A; "
            "discopop merge cannot fold it exactly (merge it with peft's merge_and_unload)"
        )
    if config.get("use_dora") and config.get("fan_in_fan_out"):
        raise UserError(f"{folder} combines DoRA with fan_in_fan_out, which discopop merge does not support")


def _peft_variant_fields() -> list[str]:
    """LoraConfig fields that switch to another forward pass (peft tags them), except DoRA, which is merged."""
    from peft import LoraConfig

    return [f.name for f in fields(LoraConfig) if f.metadata.get("is_lora_variant") and f.name != "use_dora"]


def _peft_init_variants() -> list[str]:
    from peft import LoraConfig

    init = next(f for f in fields(LoraConfig) if f.name == "init_lora_weights")
    return [str(option).lower() for option in init.metadata.get("lora_variants", [])]


def _model_types(config: dict[str, Any]) -> set[str]:
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    return {str(t) for t in (config.get("model_type"), text.get("model_type")) if t}


def _trained_on(adapter: Adapter) -> tuple[set[str], str] | None:
    """The model types of the base the adapter was trained on, and where that was read; None when unknown.

    peft records the base's class (auto_mapping) for adapters without a task type, and the base's path always: a
    recorded base that is a local folder says its model_type in its config.json."""
    import transformers

    auto = adapter.config.get("auto_mapping")
    if isinstance(auto, dict) and auto.get("base_model_class"):
        names = transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        found = {kind for kind, cls in names.items() if cls == auto["base_model_class"]}
        if found:
            return found, f"its base class {auto['base_model_class']}"
    recorded = adapter.config.get("base_model_name_or_path")
    config_path = Path(str(recorded)).expanduser() / "config.json" if recorded else None
    if config_path is not None and config_path.is_file():
        try:
            types = _model_types(read_json(config_path, "recorded base model"))
        except UserError:
            return None
        if types:
            return types, f"its recorded base {recorded}"
    return None


def check_same_architecture(adapter: Adapter, base: BaseCheckpoint, base_label: str) -> None:
    """Refuse a base of another architecture than the adapter's, even when every shape happens to fit."""
    trained = _trained_on(adapter)
    types = _model_types(base.config)
    if trained is None or not types or trained[0] & types:
        return
    raise UserError(
        f"the adapter {adapter.folder} was trained on a {'/'.join(sorted(trained[0]))} model ({trained[1]}) but "
        f"{base_label} is a {'/'.join(sorted(types))} model; merge it into the base it was trained on (--base)"
    )
