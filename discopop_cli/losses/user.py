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


# --- the contract every loss the trainer calls must keep, checked before any model is loaded ----------------

PROBE_PAIRS = 4


def _probe_batch(pairs: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sequence log-probabilities as a small model gives them (negative, a few nats apart), from a fixed seed.

    The policy's carry a gradient, as in training; the reference's do not (TRL computes them without one).
    """
    import torch

    generator = torch.Generator().manual_seed(0)

    def logps() -> Tensor:
        return -(5.0 + 10.0 * torch.rand(pairs, generator=generator))

    return logps().requires_grad_(), logps().requires_grad_(), logps(), logps()


def check_loss_contract(name: str, fn: LossFn, *, beta: float, params: dict[str, object]) -> None:
    """Call a loss on a random batch: it must return one finite float loss per pair, with a gradient that reaches
    the policy log-probabilities. Anything else, an exception inside the loss included, is one UserError line that
    names the loss (the exception chained for --debug)."""
    import torch

    pc, pr, rc, rr = _probe_batch(PROBE_PAIRS)
    where = f"loss `{name}` on a test batch of {PROBE_PAIRS} pairs"
    try:
        out = fn(pc, pr, rc, rr, beta=beta, **params)
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(
            f"{where} raised {type(exc).__name__}{': ' + detail if detail else ''}; fix the function "
            "(--debug shows the traceback)"
        ) from exc
    shape = f"[{PROBE_PAIRS}]"
    if not isinstance(out, torch.Tensor):
        raise UserError(f"{where} returned {type(out).__name__}, not a tensor; return one loss per pair, shape {shape}")
    if tuple(out.shape) != (PROBE_PAIRS,):
        got = "a scalar (shape [])" if out.dim() == 0 else f"shape {list(out.shape)}"
        raise UserError(
            f"{where} returned {got}; return one loss per pair, shape {shape} (the trainer averages them; "
            "drop a final .mean() or .sum())"
        )
    if not out.is_floating_point():
        raise UserError(f"{where} returned a {out.dtype} tensor; return float losses")
    if not bool(torch.isfinite(out).all()):
        raise UserError(f"{where} returned non-finite values {out.detach().tolist()}; keep the loss finite")
    if not out.requires_grad:
        raise UserError(
            f"{where} returned a tensor with no gradient (detached, or built from .item() or numpy); "
            "compute it with torch operations on the log-probabilities"
        )
    grads = torch.autograd.grad(out.sum(), [pc, pr], allow_unused=True)
    flowing = [g for g in grads if g is not None]
    if not flowing or all(not bool(g.any()) for g in flowing):
        raise UserError(
            f"{where}: no gradient reaches policy_chosen_logps or policy_rejected_logps; "
            "the loss must depend on them for training to change the model"
        )
    if not all(bool(torch.isfinite(g).all()) for g in flowing):
        raise UserError(f"{where}: its gradient is not finite; keep the loss differentiable")
