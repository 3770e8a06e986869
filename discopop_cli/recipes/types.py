"""Recipe values checked against the type hints of the dataclasses they configure (TRL's ModelConfig, DPOConfig,
SFTConfig) before anything runs: `learning_rate: fast` is one error line, not a failure deep inside TRL; then each
number against its option's valid range (`RANGES`): `per_device_train_batch_size: 0` is refused the same way.

YAML can only say so much about a type, so the check is lenient where unsure: a single value stands for a one-item
list (`loss_type: discopop`), enums take their string names, and other classes are left to TRL.
"""

from __future__ import annotations

import enum
import functools
import types
import typing
from dataclasses import dataclass
from typing import Any

from discopop_cli.core.errors import UserError

SECRET_KEYS = {"hub_token", "trackio_token", "wandb_api_key"}
"""Keys whose values are never echoed in an error, written to recipe.yaml or shown in a card."""


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - a hint that does not resolve is not checked
        return {}


def _accepts(hint: Any, value: Any) -> bool:
    """Whether `value` fits a dataclass field hint, as far as YAML values can: lenient where unsure."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is None:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in args)
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple, set) or hint in (list, tuple, set):
        # TRL and transformers take one item where they take a list (loss_type: discopop, report_to: none).
        item = args[0] if args else Any
        if isinstance(value, list):
            return all(_accepts(item, v) for v in value)
        return args != () and _accepts(item, value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, str | hint)
    return True  # another class (e.g. accelerate's ParallelismConfig): left to TRL


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(arg) for arg in args if arg is not type(None)]
        return " or ".join(dict.fromkeys(parts))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple, set) or hint in (list, tuple, set):
        if not args or args[0] is Any:
            return "a list"
        item = _describe(args[0])
        plural = {"an integer": "integers", "a number": "numbers", "a string": "strings", "a mapping": "mappings"}
        return f"a list of {plural[item]}" if item in plural else f"a list, each item {item}"
    if origin is dict or hint is dict:
        return "a mapping"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "a string"
    return getattr(hint, "__name__", str(hint))


def check_types(source: str, values: dict[str, Any], hints: dict[str, Any]) -> None:
    for key, value in values.items():
        hint = hints.get(key)
        if hint is None or value is None or _accepts(hint, value):
            continue
        shown = f"a {type(value).__name__}" if key in SECRET_KEYS else repr(value)  # never echo a token
        raise UserError(
            f"{source}: '{key}' must be {_describe(hint)}, got {shown}; fix the value in the recipe "
            f"(or override it with --set {key}=...)"
        )


# --- ranges: a number of the right type can still be one training cannot use ---------------------------------


@dataclass(frozen=True)
class Range:
    """low/high bounds (None: unbounded), whether each is allowed itself, and values allowed besides."""

    low: float | None = None
    high: float | None = None
    low_ok: bool = True
    high_ok: bool = True
    also: tuple[float, ...] = ()
    hint: str = ""

    def holds(self, value: float) -> bool:
        if value in self.also:
            return True
        if self.low is not None and (value < self.low or (value == self.low and not self.low_ok)):
            return False
        return self.high is None or not (value > self.high or (value == self.high and not self.high_ok))

    def describe(self) -> str:
        if self.high is None:
            text = f"at least {self.low:g}" if self.low_ok else f"above {self.low:g}"
        else:
            left, right = "[" if self.low_ok else "(", "]" if self.high_ok else ")"
            text = f"in {left}{self.low:g}, {self.high:g}{right}"
        return text + "".join(f" (or {a:g})" for a in self.also)


_POSITIVE = Range(0, low_ok=False)
_COUNT = Range(1)  # a whole number of things, at least one
_NON_NEGATIVE = Range(0)
_FRACTION = Range(0, 1)
_OPEN_FRACTION = Range(0, 1, high_ok=False)

# Each training option with a valid range, by recipe key. beta and discopop_tau are checked with the recipe's
# consistency (load._check_consistency); max_prompt_length there too, against max_length.
RANGES: dict[str, Range] = {
    "learning_rate": Range(0, low_ok=False, hint="the paper's recipe uses 5e-7"),
    "num_train_epochs": _POSITIVE,
    "max_steps": Range(1, also=(-1,), hint="-1 trains for num_train_epochs"),
    "per_device_train_batch_size": _COUNT,
    "per_device_eval_batch_size": _COUNT,
    "gradient_accumulation_steps": _COUNT,
    "eval_accumulation_steps": _COUNT,
    "max_length": _COUNT,
    "pad_to_multiple_of": _COUNT,
    # transformers 5 has no warmup_ratio: warmup_steps below 1 is the ratio of the training steps.
    "warmup_steps": _NON_NEGATIVE,
    "weight_decay": _NON_NEGATIVE,
    "max_grad_norm": _NON_NEGATIVE,
    "adam_beta1": _OPEN_FRACTION,
    "adam_beta2": _OPEN_FRACTION,
    "adam_epsilon": _NON_NEGATIVE,
    "label_smoothing": Range(0, 0.5, high_ok=False, hint="it is the label-flip probability of cDPO"),
    "label_smoothing_factor": _OPEN_FRACTION,
    "ld_alpha": _FRACTION,
    "router_aux_loss_coef": _NON_NEGATIVE,
    "loss_weights": _NON_NEGATIVE,
    "ref_model_mixup_alpha": _FRACTION,
    "ref_model_sync_steps": _COUNT,
    "precompute_ref_batch_size": _COUNT,
    "torch_empty_cache_steps": _COUNT,
    "dataloader_prefetch_factor": _COUNT,
    "eval_delay": _NON_NEGATIVE,
    "logging_steps": _POSITIVE,
    "save_steps": _POSITIVE,
    "eval_steps": _POSITIVE,
    "save_total_limit": _NON_NEGATIVE,
    "seed": _NON_NEGATIVE,
    "data_seed": _NON_NEGATIVE,
    "dataloader_num_workers": _NON_NEGATIVE,
    "dataset_num_proc": _COUNT,
    "neftune_noise_alpha": _NON_NEGATIVE,
    "lora_r": _COUNT,
    "lora_alpha": _POSITIVE,
    "lora_dropout": _OPEN_FRACTION,
}


def check_ranges(source: str, values: dict[str, Any]) -> None:
    """Refuse a number outside its option's valid range (a list option: each item), naming the recipe key."""
    for key, value in values.items():
        rule = RANGES.get(key)
        if rule is None or value is None:
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int | float) or rule.holds(item):
                continue
            shown = f"{value!r}" if item is value else f"{value!r} (item {item!r})"
            hint = f"; {rule.hint}" if rule.hint else ""
            raise UserError(
                f"{source}: {key} must be {rule.describe()}, got {shown}{hint}; fix it in the recipe "
                f"(or override it with --set {key}=...)"
            )
