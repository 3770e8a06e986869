"""Preference losses: the DiscoPOP family, the registry that names them, plugins and user losses.

- `paper`: the paper's seven losses as plain functions, each with its formula in the docstring.
- `baselines`: `kto_pair` and `bco_pair` as the paper's code base trained them (TRL 0.8.6 / 0.9.3).
- `numerics`: what they share to stay exact and finite (public: plugin losses may use it).
- `spec`: the standard signature and `LossSpec`.
- `registry`: names, aliases, `register_loss`, entry-point plugins, TRL's own loss types.
- `user`: `package.module:function` losses, in the standard or the paper's `f(self, ...)` form.
- `command`: `discopop losses` (list, `--json`, `--plot`).

The public API for plugins is re-exported here: `from discopop_cli.losses import register_loss`.

May import: core.
"""

from discopop_cli.losses.baselines import bco_pair, kto_pair
from discopop_cli.losses.paper import aqfl, aql, cell, dbaql, discopop, padll, pfl
from discopop_cli.losses.registry import (
    DISCOVERY_SLOT,
    DISCOVERY_SLOT_HELP,
    PLUGIN_GROUP,
    TRL_ALIASES,
    TRL_LOSS_TYPES,
    get_loss,
    get_spec,
    is_trl_loss,
    list_losses,
    register_loss,
    trl_name,
    unregister_loss,
)
from discopop_cli.losses.spec import BUILTIN_SOURCE, STANDARD_ARGS, LossFn, LossSpec

__all__ = [
    "BUILTIN_SOURCE",
    "DISCOVERY_SLOT",
    "DISCOVERY_SLOT_HELP",
    "PLUGIN_GROUP",
    "STANDARD_ARGS",
    "TRL_ALIASES",
    "TRL_LOSS_TYPES",
    "LossFn",
    "LossSpec",
    "aqfl",
    "aql",
    "bco_pair",
    "cell",
    "dbaql",
    "discopop",
    "get_loss",
    "get_spec",
    "is_trl_loss",
    "kto_pair",
    "list_losses",
    "padll",
    "pfl",
    "register_loss",
    "trl_name",
    "unregister_loss",
]
