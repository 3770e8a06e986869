"""The preference-loss registry: names for the paper's losses, entry-point plugins and `module:function` losses.

A loss is looked up by name or alias (`get_spec`, `get_loss`); `register_loss` adds one, and packages advertise
theirs under the `discopop_cli.losses` entry-point group, loaded on the first lookup. Names TRL's DPOTrainer
computes itself (`sigmoid`, `ipo`, ...) stay TRL's: the trainer injection (train/injection.py) hands them over.

Numerics (numerics.py): computed in float32 at least, finite in value and gradient for float32, bfloat16
and float16 inputs with |x| up to 1e4 (tested); `discopop` in log space, so exact everywhere; the exponential
terms of `cell` and `dbaql` exact up to e^50 and continued on their tangent beyond; with one pair per device the
batch statistics of `aql`, `aqfl` and `dbaql` see no spread (std = var = 0).
"""

from __future__ import annotations

import difflib
import importlib.metadata
from collections.abc import Callable

from discopop_cli.core.errors import UserError
from discopop_cli.losses import baselines, paper
from discopop_cli.losses.spec import BUILTIN_SOURCE, LossFn, LossSpec, check_standard, formula_of, params_of

# TRL 1.16's built-in `loss_type` values (DPOTrainer._compute_loss) that TRL keeps computing itself.
# Its "discopop" is deliberately absent: the registry's numerically stable `discopop` supersedes it; so is its
# "bco_pair", which lacks the running-mean shift the paper's code base trained with (baselines.py).
TRL_LOSS_TYPES: tuple[str, ...] = (
    *("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "sppo_hard"),
    *("aot", "aot_unpaired", "apo_zero", "apo_down", "sft", "sigmoid_norm"),
)
# The paper's names for losses TRL computes (SakanaAI's gpo.py: loss_type "dpo" is the sigmoid loss).
TRL_ALIASES: dict[str, str] = {"dpo": "sigmoid"}
# SakanaAI's run_gpo.py reads loss_type "epo" as "the newest loss the discovery loop wrote to
# recipes/zephyr-<size>-gemma/gpo/tests.json", run with exec(). discopop-cli never executes recipe strings.
DISCOVERY_SLOT = "epo"
DISCOVERY_SLOT_HELP = (
    "loss_type 'epo' is run_gpo.py's slot for the discovery loop's newest loss (code in gpo/tests.json, run with "
    "exec); discopop runs no code from recipes: name a loss (e.g. --set loss_type=lrml, `discopop losses` lists "
    "them) or give one as package.module:function"
)

PLUGIN_GROUP = "discopop_cli.losses"

_REGISTRY: dict[str, LossSpec] = {}
_ALIASES: dict[str, str] = {}
_plugins_loaded = False
_loading_plugin: str | None = None


def is_trl_loss(name: str) -> bool:
    """True for a `loss_type` that TRL's DPOTrainer computes itself (not one of this registry's)."""
    return name in TRL_LOSS_TYPES or name in TRL_ALIASES


def trl_name(name: str) -> str:
    """The `loss_type` TRL knows for a name TRL computes (`dpo` -> `sigmoid`)."""
    return TRL_ALIASES.get(name, name)


# --- registration -------------------------------------------------------------------------------------


def _source_of(fn: Callable) -> str:
    if fn.__module__ in (paper.__name__, baselines.__name__):
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
        check_standard(fn)
        _REGISTRY[name] = LossSpec(
            name=name,
            fn=fn,
            long_name=long_name or fn.__name__,
            formula=formula_of(fn),
            params=params_of(fn),
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
            from discopop_cli.core.console import warn

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
        from discopop_cli.losses.user import user_spec

        return user_spec(name)
    key = name.strip()
    if key == DISCOVERY_SLOT:
        raise UserError(DISCOVERY_SLOT_HELP)
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


# --- the paper's losses, in its Table 1 order ------------------------------------------------------------

_PAPER_LOSSES: tuple[tuple[LossFn, str, str, tuple[str, ...]], ...] = (
    (paper.discopop, "discopop", "Log-Ratio Modulated Loss", ("lrml",)),
    (paper.padll, "padll", "Performance Adaptive Decay Logistic Loss", ()),
    (paper.cell, "cell", "Combined Exponential + Logistic Loss", ()),
    (paper.pfl, "pfl", "Policy Focused Loss", ()),
    (paper.aql, "aql", "Adaptive Quantile Loss", ()),
    (paper.aqfl, "aqfl", "Adaptive Quantile Feedback Loss", ()),
    (paper.dbaql, "dbaql", "Dynamic Blended Adaptive Quantile Loss", ()),
)
for _fn, _name, _long_name, _aliases in _PAPER_LOSSES:
    register_loss(_name, long_name=_long_name, aliases=_aliases)(_fn)

# Baselines the paper's recipes name, in the form its code base trained them (baselines.py).
register_loss("kto_pair", long_name="Pairwise KTO (TRL 0.8.6)")(baselines.kto_pair)
register_loss("bco_pair", long_name="Pairwise BCO with running-mean shift (TRL 0.9.3)")(baselines.bco_pair)
