"""The preference-loss registry: the DiscoPOP family from Lu et al. (2024), plugins and user losses.

Every loss takes the four sequence log-probabilities of a batch of preference pairs and returns one loss
per pair (the trainer averages them)::

    fn(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
       *, beta, **params) -> Tensor

Notation in the formulas: ``d = (pc - pr) - (rc - rr)``, ``x = beta * d``, ``sig`` the logistic sigmoid,
``-log sig(x)`` the DPO logistic loss and ``relu(1 - x)`` the hinge loss. Batch statistics (mean, std, var)
run over the pairs of the micro-batch with the unbiased estimators and are not detached.

Numerics (loss_numerics.py): computed in float32 at least, finite in value and gradient for float32, bfloat16
and float16 inputs with |x| up to 1e4 (tested); `discopop` in log space, so exact everywhere; the exponential
terms of `cell` and `dbaql` exact up to e^50 and continued on their tangent beyond; with one pair per device the
batch statistics of `aql`, `aqfl` and `dbaql` see no spread (std = var = 0).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from discopop_cli.errors import UserError
from discopop_cli.loss_numerics import batch_std, batch_var, margin, nll, safe_exp

LossFn = Callable[..., Tensor]

# TRL 1.16's built-in `loss_type` values (DPOTrainer._compute_loss) that TRL keeps computing itself.
# Its "discopop" is deliberately absent: the registry's numerically stable `discopop` supersedes it.
TRL_LOSS_TYPES: tuple[str, ...] = (
    *("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard"),
    *("aot", "aot_unpaired", "apo_zero", "apo_down", "sft", "sigmoid_norm"),
)

PLUGIN_GROUP = "discopop_cli.losses"
BUILTIN_SOURCE = "discopop-cli"
_STANDARD_ARGS = ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps")


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


_REGISTRY: dict[str, LossSpec] = {}
_ALIASES: dict[str, str] = {}
_plugins_loaded = False
_loading_plugin: str | None = None


def is_trl_loss(name: str) -> bool:
    """True for a `loss_type` that TRL's DPOTrainer computes itself (not one of this registry's)."""
    return name in TRL_LOSS_TYPES


# --- registration -------------------------------------------------------------------------------------


def _formula_of(fn: Callable) -> str:
    """The docstring's first paragraph, joined into one line."""
    doc = inspect.getdoc(fn) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def _params_of(fn: Callable) -> dict[str, float]:
    """Keyword-only parameters other than `beta`, with their defaults."""
    params: dict[str, float] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.name == "beta":
            continue
        if p.default is inspect.Parameter.empty:
            raise ValueError(f"loss parameter `{p.name}` of {fn.__qualname__} needs a default value")
        params[p.name] = p.default
    return params


def _check_standard(fn: Callable) -> None:
    try:
        inspect.signature(fn).bind(*_STANDARD_ARGS, beta=0.1)
    except TypeError as exc:
        raise ValueError(f"{fn.__qualname__} must take ({', '.join(_STANDARD_ARGS)}, *, beta, ...): {exc}") from None


def _source_of(fn: Callable) -> str:
    if fn.__module__ == __name__:
        return BUILTIN_SOURCE
    if _loading_plugin is not None:
        return _loading_plugin
    return f"{fn.__module__}:{fn.__qualname__}"


def register_loss(name: str, *, long_name: str = "", aliases: tuple[str, ...] = ()) -> Callable[[LossFn], LossFn]:
    """Decorator adding a standard-signature loss to the registry under `name` (and its aliases)."""

    def decorator(fn: LossFn) -> LossFn:
        for key in (name, *aliases):
            if key in _REGISTRY or key in _ALIASES:
                owner = _REGISTRY.get(key) or _REGISTRY[_ALIASES[key]]
                raise ValueError(f"loss name `{key}` is already registered (by {owner.source}); pick another name")
        _check_standard(fn)
        _REGISTRY[name] = LossSpec(
            name=name,
            fn=fn,
            long_name=long_name or fn.__name__,
            formula=_formula_of(fn),
            params=_params_of(fn),
            aliases=tuple(aliases),
            source=_source_of(fn),
        )
        for alias in aliases:
            _ALIASES[alias] = name
        return fn

    return decorator


def unregister_loss(name: str) -> None:
    """Remove a loss and its aliases from the registry (for tests and interactive use)."""
    spec = _REGISTRY.pop(name)
    for alias in spec.aliases:
        _ALIASES.pop(alias, None)


def _load_plugins() -> None:
    """Register the functions advertised under the `discopop_cli.losses` entry-point group, once."""
    global _plugins_loaded, _loading_plugin
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        _loading_plugin = ep.dist.name if ep.dist is not None else ep.value
        try:
            fn = ep.load()
            if not any(spec.fn is fn for spec in _REGISTRY.values()):
                register_loss(ep.name)(fn)
        except Exception as exc:  # a broken plugin must not break the built-in losses
            from discopop_cli.console import warn

            warn(f"loss plugin `{ep.name}` ({ep.value}) skipped: {exc}")
        finally:
            _loading_plugin = None


# --- lookup -------------------------------------------------------------------------------------------


def list_losses() -> list[LossSpec]:
    """Every registered loss (built-ins first, then plugins), in registration order."""
    _load_plugins()
    return list(_REGISTRY.values())


def get_spec(name: str) -> LossSpec:
    """The spec for a registered name or alias, or for a user loss given as `package.module:function`."""
    _load_plugins()
    if ":" in name:
        from discopop_cli.user_losses import user_spec

        return user_spec(name)
    key = name.strip()
    for candidate in (key, key.lower()):
        if candidate in _REGISTRY:
            return _REGISTRY[candidate]
        if candidate in _ALIASES:
            return _REGISTRY[_ALIASES[candidate]]
    if is_trl_loss(key):
        raise UserError(
            f"`{key}` is a TRL built-in loss_type that TRL computes itself, not a registry loss; "
            "run `discopop losses` to list the registry's."
        )
    best = difflib.get_close_matches(key.lower(), [*_REGISTRY, *_ALIASES], n=1, cutoff=0.0)
    hint = f"did you mean `{best[0]}`? " if best else ""
    raise UserError(
        f"unknown loss `{name}`: {hint}Run `discopop losses` to list them, "
        "or give your own as `package.module:function`."
    )


def get_loss(name: str) -> LossFn:
    """A callable in the standard signature for a registered name, an alias or `package.module:function`."""
    return get_spec(name).fn


# --- the DiscoPOP family ------------------------------------------------------------------------------


@register_loss("discopop", long_name="Log-Ratio Modulated Loss", aliases=("lrml",))
def discopop(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float,
    discopop_tau: float = 0.05,
) -> Tensor:
    """m = sig(x / tau); L = (1 - m) * (-log sig(x)) + m * exp(-x)

    The paper's discovered objective (DiscoPOP). The term m * exp(-x) is computed as
    exp(-x + log sig(x / tau)), which is finite where the literal form gives 0 * inf = nan (x < -88 in
    float32); with tau <= 1 the loss and its gradient are finite for every finite x.
    """
    x = beta * margin(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    z = x / discopop_tau
    return torch.sigmoid(-z) * nll(x) + torch.exp(F.logsigmoid(z) - x)


@register_loss("padll", long_name="Performance Adaptive Decay Logistic Loss")
def padll(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float,
) -> Tensor:
    """w = 0.9 * (1 - 0.5 * [d < 0]); L = w * (-log sig(x))

    The indicator [d < 0] carries no gradient; the gradient flows through x.
    """
    d = margin(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    w = 0.9 * (1.0 - 0.5 * (d < 0).to(d.dtype))
    return w * nll(beta * d)


@register_loss("cell", long_name="Combined Exponential + Logistic Loss")
def cell(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float,
) -> Tensor:
    """L = 0.5 * exp(-x) + 0.5 * (-log sig(x))

    exp(-x) is exact for x >= -50 and continues along its tangent line below (see the module's numerics).
    """
    x = beta * margin(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    return 0.5 * safe_exp(-x) + 0.5 * nll(x)


@register_loss("pfl", long_name="Policy Focused Loss")
def pfl(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float,
) -> Tensor:
    """L = (-log sig(x)) / 2 if pc > pr else 2 * relu(1 - x)

    The test pc > pr reads the policy alone and carries no gradient; the gradient flows through x.
    """
    x = beta * margin(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    policy_prefers_chosen = policy_chosen_logps > policy_rejected_logps
    return torch.where(policy_prefers_chosen, 0.5 * nll(x), 2.0 * torch.relu(1.0 - x))


@register_loss("aql", long_name="Adaptive Quantile Loss")
def aql(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float,
    discopop_tau: float = 0.05,
) -> Tensor:
    """z = x / tau; q = 0.5 + 0.01 * (sig(mean(z)) - 0.5); w = sig(-(z - q));
    L = w * (-log sig(x)) + (1 - w) * relu(1 - x)

    mean runs over the pairs of the micro-batch and is not detached.
    """
    x = beta * margin(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    z = x / discopop_tau
    q = 0.5 + 0.01 * (torch.sigmoid(z.mean()) - 0.5)
    w = torch.sigmoid(-(z - q))
    return w * nll(x) + (1.0 - w) * torch.relu(1.0 - x)


@register_loss("aqfl", long_name="Adaptive Quantile Feedback Loss")
def aqfl(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float,
    discopop_tau: float = 0.05,
) -> Tensor:
    """z = x / tau; q0 = std(z) * mean(sig(-z)); q = q0 + 0.05 * (sig(mean(z)) - q0);
    b = sig(0.1 * |z - q|); L = b * (-log sig(x)) + (1 - b) * relu(1 - x)

    std (unbiased) and mean run over the pairs of the micro-batch and are not detached. With a single
    pair the unbiased std is undefined; it is taken as 0 (no spread), and where the spread is exactly 0
    its gradient is taken as 0, so the loss and its gradient stay finite.
    """
    x = beta * margin(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    z = x / discopop_tau
    q0 = batch_std(z) * torch.sigmoid(-z).mean()
    q = q0 + 0.05 * (torch.sigmoid(z.mean()) - q0)
    b = torch.sigmoid(0.1 * (z - q).abs())
    return b * nll(x) + (1.0 - b) * torch.relu(1.0 - x)


@register_loss("dbaql", long_name="Dynamic Blended Adaptive Quantile Loss")
def dbaql(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float,
    discopop_tau: float = 0.05,
) -> Tensor:
    """c = sig(var(x / tau)); L = c * (-log sig(x / 0.9)) + (1 - c) * exp(-0.9 * x)

    var (unbiased) runs over the pairs of the micro-batch and is not detached. With a single pair the
    unbiased variance is undefined; it is taken as 0 (no spread, c = 0.5), so the loss stays finite.
    exp(-0.9 * x) is exact for x >= -50 / 0.9 and continues along its tangent line below.
    """
    x = beta * margin(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    c = torch.sigmoid(batch_var(x / discopop_tau))
    return c * nll(x / 0.9) + (1.0 - c) * safe_exp(-0.9 * x)
