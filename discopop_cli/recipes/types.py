"""Recipe values checked against the type hints of the dataclasses they configure (TRL's ModelConfig, DPOConfig,
SFTConfig) before anything runs: `learning_rate: fast` is one error line, not a failure deep inside TRL.

YAML can only say so much about a type, so the check is lenient where unsure: a single value stands for a one-item
list (`loss_type: discopop`), enums take their string names, and other classes are left to TRL.
"""

from __future__ import annotations

import enum
import functools
import types
import typing
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
