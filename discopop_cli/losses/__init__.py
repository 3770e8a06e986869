"""Preference losses: the DiscoPOP family, the registry that names them, plugins and user losses.

- `paper`: the paper's seven losses as plain functions, each with its formula in the docstring.
- `baselines`: `kto_pair` and `bco_pair` as the paper's code base trained them (TRL 0.8.6 / 0.9.3).
- `numerics`: what they share to stay exact and finite (public: plugin losses may use it).
- `spec`: the standard signature and `LossSpec`.
- `registry`: names, aliases, `register_loss`, entry-point plugins, TRL's own loss types.
- `user`: `package.module:function` losses, in the standard or the paper's `f(self, ...)` form.
- `command`: `discopop losses` (list, `--json`, `--plot`).
- `cli`: its Typer definition.

The public API for plugins is re-exported here: `from discopop_cli.losses import register_loss`.

May import: core.
"""

from __future__ import annotations

import importlib
from typing import Any

# The public API is imported on first use (PEP 562), so `import discopop_cli.losses.cli` does not load torch and
# `discopop losses --help` stays fast; `from discopop_cli.losses import register_loss` works as before.
_EXPORTS = {
    **dict.fromkeys(("aqfl", "aql", "cell", "dbaql", "discopop", "padll", "pfl"), "paper"),
    **dict.fromkeys(("bco_pair", "kto_pair"), "baselines"),
    **dict.fromkeys(
        (
            "DISCOVERY_SLOT",
            "DISCOVERY_SLOT_HELP",
            "PLUGIN_GROUP",
            "TRL_ALIASES",
            "TRL_LOSS_TYPES",
            "get_loss",
            "get_spec",
            "is_trl_loss",
            "list_losses",
            "register_loss",
            "trl_name",
            "unregister_loss",
        ),
        "registry",
    ),
    **dict.fromkeys(("BUILTIN_SOURCE", "STANDARD_ARGS", "LossFn", "LossSpec"), "spec"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
