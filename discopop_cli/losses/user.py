"""User losses given by import path, `package.module:function`, in either of two signatures.

The standard one, `fn(pc, pr, rc, rr, *, beta, **params)`, is used as it is; the paper's discovery-loop form,
`fn(self, pc, pr, rc, rr)` reading `self.beta`, is adapted to it. Only an explicit `module:function` is
imported: a recipe string is never evaluated.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from types import SimpleNamespace

from torch import Tensor

from discopop_cli.core.errors import UserError
from discopop_cli.losses.spec import STANDARD_ARGS, LossFn, LossSpec, check_standard, formula_of, params_of


def user_spec(target: str) -> LossSpec:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UserError(f"loss `{target}` is not of the form `package.module:function`; fix the spelling.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(
            f"cannot import module `{module_name}` for loss `{target}` ({exc}); "
            "install it or add its directory to PYTHONPATH."
        ) from None
    except Exception as exc:
        raise UserError(f"importing module `{module_name}` for loss `{target}` failed: {exc!r}") from None
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"module `{module_name}` has no attribute `{attr}` (loss `{target}`); check the name.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"`{target}` is a {type(obj).__name__}, not a function; point it at a loss function.")
    try:
        parameters = list(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        parameters = []
    if parameters[:1] == ["self"]:
        fn = _wrap_paper_form(obj, target)
        params: dict[str, float] = {}
    else:
        try:
            check_standard(obj)
            params = params_of(obj)
        except ValueError as exc:
            raise UserError(
                f"loss `{target}` has the wrong signature: {exc}; or write it as "
                f"f(self, {', '.join(STANDARD_ARGS)}) reading self.beta."
            ) from None
        fn = obj
    return LossSpec(
        name=target,
        fn=fn,
        long_name=getattr(obj, "__name__", attr),
        formula=formula_of(obj),
        params=params,
        source=target,
    )


def _wrap_paper_form(fn: Callable, target: str) -> LossFn:
    """Adapt the paper's `f(self, pc, pr, rc, rr)` (reading `self.beta`) to the standard signature."""
    try:
        inspect.signature(fn).bind(None, *STANDARD_ARGS)
    except TypeError as exc:
        raise UserError(f"loss `{target}` must take (self, {', '.join(STANDARD_ARGS)}): {exc}") from None

    def paper_loss(
        policy_chosen_logps: Tensor,
        policy_rejected_logps: Tensor,
        reference_chosen_logps: Tensor,
        reference_rejected_logps: Tensor,
        *,
        beta: float,
        **params: float,
    ) -> Tensor:
        owner = SimpleNamespace(beta=beta, **params)
        return fn(owner, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)

    paper_loss.__name__ = getattr(fn, "__name__", "paper_loss")
    paper_loss.__doc__ = fn.__doc__
    return paper_loss
