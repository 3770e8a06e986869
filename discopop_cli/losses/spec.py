"""What a loss is to the registry: the standard signature, and the name, formula and parameters shown for it.

Every loss, built-in, plugin or user, is called as::

    fn(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
       *, beta, **params) -> Tensor

and returns one loss per pair (the trainer averages them).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

LossFn = Callable[..., Tensor]

BUILTIN_SOURCE = "discopop-cli"
STANDARD_ARGS = ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps")


@dataclass(frozen=True)
class LossSpec:
    """One registered loss: its callable (standard signature) and what `discopop losses` shows."""

    name: str
    fn: LossFn
    long_name: str = ""
    formula: str = ""
    params: dict[str, float] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    source: str = BUILTIN_SOURCE


def formula_of(fn: Callable) -> str:
    """The docstring's first paragraph, joined into one line."""
    doc = inspect.getdoc(fn) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def params_of(fn: Callable) -> dict[str, float]:
    """Keyword-only parameters other than `beta`, with their defaults."""
    params: dict[str, float] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.name == "beta":
            continue
        if p.default is inspect.Parameter.empty:
            raise ValueError(f"loss parameter `{p.name}` of {fn.__qualname__} needs a default value")
        params[p.name] = p.default
    return params


def check_standard(fn: Callable) -> None:
    """Raise ValueError unless `fn` can be called in the standard signature."""
    try:
        inspect.signature(fn).bind(*STANDARD_ARGS, beta=0.1)
    except TypeError as exc:
        raise ValueError(f"{fn.__qualname__} must take ({', '.join(STANDARD_ARGS)}, *, beta, ...): {exc}") from None
