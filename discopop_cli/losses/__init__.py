"""Preference losses: the DiscoPOP family, the registry that names them, plugins and user losses.

- `paper`: the paper's seven losses as plain functions, each with its formula in the docstring.
- `numerics`: what they share to stay exact and finite (public: plugin losses may use it).
- `spec`: the standard signature and `LossSpec`.
- `registry`: names, aliases, `register_loss`, entry-point plugins, TRL's own loss types.
- `user`: `package.module:function` losses, in the standard or the paper's `f(self, ...)` form.
- `command`: `discopop losses` (list, `--json`, `--plot`).

The public API for plugins is re-exported here: `from discopop_cli.losses import register_loss`.

May import: core.
"""

from discopop_cli.losses.paper import aqfl, aql, cell, dbaql, discopop, padll, pfl
from discopop_cli.losses.registry import (
    PLUGIN_GROUP,
    TRL_LOSS_TYPES,
    get_loss,
    get_spec,
    is_trl_loss,
    list_losses,
    register_loss,
    unregister_loss,
)
from discopop_cli.losses.spec import BUILTIN_SOURCE, STANDARD_ARGS, LossFn, LossSpec

__all__ = [
    "BUILTIN_SOURCE",
    "PLUGIN_GROUP",
    "STANDARD_ARGS",
    "TRL_LOSS_TYPES",
    "LossFn",
    "LossSpec",
    "aqfl",
    "aql",
    "cell",
    "dbaql",
    "discopop",
    "get_loss",
    "get_spec",
    "is_trl_loss",
    "list_losses",
    "padll",
    "pfl",
    "register_loss",
    "unregister_loss",
]
