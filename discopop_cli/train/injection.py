"""The injection: TRL's DPOTrainer, with the project's loss registry behind `loss_type`.

TRL 1.16 computes its losses inline in `DPOTrainer._compute_loss`, with no hook per loss. The subclass
therefore lets TRL do everything it does (data processing, reference handling, metrics, TRL-native losses)
and adds the registry losses to the loss TRL returns:

- the policy forward is observed through a thin recorder passed as `model`, whose `log_probs` give the
  policy's sequence log-probabilities exactly as TRL sums them;
- the reference log-probabilities come from TRL's own `compute_ref_log_probs` (reference model, or the PEFT
  model with its adapter disabled) and are handed to TRL as if precomputed, so they are computed once;
- when only registry losses are asked for, TRL computes its `sigmoid` loss with weight 0 (`LossPlan.for_trl`).

The loss names TRL already knows (other than `discopop`, whose literal form overflows) stay TRL's.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from packaging.version import Version

from discopop_cli.core.errors import UserError

SUPPORTED_TRL = (Version("1.16"), Version("1.17"))
SUPPORTED_TRL_TEXT = "trl>=1.16,<1.17"


@dataclass
class PlannedLoss:
    name: str
    weight: float
    fn: Any
    params: dict[str, Any]


@dataclass
class LossPlan:
    trl_types: list[str]
    trl_weights: list[float]
    registry: list[PlannedLoss]
    # Why a real run could not start with these losses (`epo`, the discovery loop's slot); `--dry-run` says it.
    pending: list[str] = field(default_factory=list)

    def for_trl(self) -> tuple[list[str], list[float]]:
        """TRL's `loss_types`/`loss_weights`. TRL always runs its loss loop; with only registry losses, a
        zero-weighted sigmoid keeps it a no-op."""
        if not self.trl_types:
            return ["sigmoid"], [0.0]
        return list(self.trl_types), list(self.trl_weights)

    def describe(self) -> list[tuple[str, float, dict[str, Any], str]]:
        """(name, weight, params, who computes it) per loss, for tables and cards."""
        rows = [(p.name, p.weight, p.params, "discopop-cli") for p in self.registry]
        rows += [(n, w, {}, "TRL") for n, w in zip(self.trl_types, self.trl_weights, strict=True)]
        return rows


def check_trl() -> None:
    """Refuse at start when the installed TRL is not the line the injection was written against."""
    import trl

    version = Version(trl.__version__)
    low, high = SUPPORTED_TRL
    if not (low <= version < high):
        raise UserError(
            f"TRL {trl.__version__} is installed but discopop-cli's loss injection supports {SUPPORTED_TRL_TEXT}; "
            f"run: pip install '{SUPPORTED_TRL_TEXT}'"
        )
    from trl import DPOTrainer

    for method in ("_compute_loss", "_prepare_dataset", "compute_ref_log_probs"):
        if not callable(getattr(DPOTrainer, method, None)):
            raise UserError(f"TRL {trl.__version__} lacks DPOTrainer.{method}; run: pip install '{SUPPORTED_TRL_TEXT}'")


def plan_losses(
    loss_type: str | list[str] | None,
    loss_weights: list[float] | None,
    config_values: dict[str, Any],
    loss_kwargs: dict[str, Any] | None,
) -> LossPlan:
    """Split a recipe's `loss_type` list between TRL and the registry, resolving each loss's parameters.

    A registry loss parameter takes its value from `loss_kwargs`, else from the trainer config field of the
    same name (e.g. `discopop_tau`), else from the function's default. Each registry loss is then called once on
    a random batch (`check_loss_contract`), so a loss that raises or returns the wrong thing is refused here,
    in `--dry-run` too, and not after the model has loaded.
    """
    from discopop_cli import losses
    from discopop_cli.losses.user import check_loss_contract

    names = [loss_type] if isinstance(loss_type, str) else list(loss_type or ["sigmoid"])
    weights = list(loss_weights) if loss_weights is not None else [1.0] * len(names)
    if len(weights) != len(names):
        raise UserError(f"loss_weights has {len(weights)} entries for {len(names)} loss types; give one per loss")
    loss_kwargs = dict(loss_kwargs or {})
    plan = LossPlan([], [], [])
    used_kwargs: set[str] = set()
    for name, weight in zip(names, weights, strict=True):
        if name == losses.DISCOVERY_SLOT:
            plan.pending.append(losses.DISCOVERY_SLOT_HELP)
            continue
        if losses.is_trl_loss(name):
            plan.trl_types.append(losses.trl_name(name))
            plan.trl_weights.append(float(weight))
            continue
        spec = losses.get_spec(name)
        fn = spec.fn
        values = {}
        for param, default in spec.params.items():
            if param in loss_kwargs:
                values[param] = loss_kwargs[param]
                used_kwargs.add(param)
            elif param in config_values:
                values[param] = config_values[param]
            else:
                values[param] = default
        if _takes_var_kwargs(fn):
            values.update({k: v for k, v in loss_kwargs.items() if k not in values})
            used_kwargs.update(loss_kwargs)
        plan.registry.append(PlannedLoss(name, float(weight), fn, values))
    unused = sorted(set(loss_kwargs) - used_kwargs)
    if unused:
        raise UserError(
            f"loss_kwargs {unused} match no parameter of the losses {names}; "
            "run `discopop losses` to see each loss's parameters"
        )
    beta = config_values.get("beta", 0.1)
    for planned in plan.registry:
        check_loss_contract(planned.name, planned.fn, beta=float(beta), params=planned.params)
        per_run = getattr(planned.fn, "per_run", None)
        if per_run is not None:  # a loss with state across steps (bco_pair's running mean): fresh for this run
            planned.fn = per_run()
    return plan


def _takes_var_kwargs(fn: Any) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())


class _ForwardRecorder:
    """Stands in for the policy model in one `_compute_loss` call and keeps the first forward's outputs."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.outputs: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        outputs = self.model(*args, **kwargs)
        if self.outputs is None:
            self.outputs = outputs
        return outputs


def check_plan_supported(plan: LossPlan, config: Any) -> None:
    """TRL options whose semantics the registry losses do not share are refused, not silently ignored."""
    if not plan.registry:
        return
    names = [p.name for p in plan.registry]
    if getattr(config, "f_divergence_type", "reverse_kl") != "reverse_kl":
        raise UserError(
            f"f_divergence_type '{config.f_divergence_type}' works with TRL's own loss types only, not {names}; "
            "remove it or use reverse_kl"
        )
    if getattr(config, "ld_alpha", None) is not None:
        raise UserError(f"ld_alpha works with TRL's own loss types only, not {names}; remove it")
    if getattr(config, "use_weighting", False):
        raise UserError(f"use_weighting (WPO) works with TRL's own loss types only, not {names}; remove it")
