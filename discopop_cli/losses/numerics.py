"""The numerics every registered loss shares; plugin and user losses may use them too.

- `margin` computes d = (pc - pr) - (rc - rr) in float32 at least, upcasting before it subtracts (in float16
  even `pc - pr` can overflow); gradients flowing back into float16/bfloat16 inputs saturate at the dtype's
  largest finite value instead of becoming inf.
- `nll` is the DPO logistic loss -log sig(x), exact and finite for every finite x.
- `safe_exp` is exp(u), exact up to u = 50 (e^50 = 5.2e21) and continued along its tangent line beyond, so the
  pure exponential terms of `cell` and `dbaql` stay finite and increasing with a finite slope.
- `batch_var`/`batch_std` are the unbiased batch statistics with one pair per device defined as no spread (0),
  and the gradient of a zero spread as 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

EXP_EXACT_UP_TO = 50.0
"""`safe_exp` is exact for exponents up to this and continues along its tangent line beyond it."""


class _SaturatingUpcast(torch.autograd.Function):
    """`t.to(dtype)` whose backward clamps the gradient to the finite range of `t`'s own dtype: a float16
    input would otherwise receive inf wherever the float32 gradient exceeds 65504."""

    @staticmethod
    def forward(ctx, t: Tensor, dtype: torch.dtype) -> Tensor:  # noqa: ANN001
        ctx.source_dtype = t.dtype
        return t.to(dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        limit = torch.finfo(ctx.source_dtype).max
        return grad.clamp(-limit, limit).to(ctx.source_dtype), None


def upcast(t: Tensor, dtype: torch.dtype) -> Tensor:
    if t.dtype == dtype:
        return t
    if t.dtype in (torch.float16, torch.bfloat16) and t.requires_grad:
        return _SaturatingUpcast.apply(t, dtype)
    return t.to(dtype)


def margin(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor) -> Tensor:
    """d = (pc - pr) - (rc - rr), in float32 at least (float64 stays float64), upcast before subtracting."""
    dtype = torch.promote_types(torch.promote_types(pc.dtype, pr.dtype), torch.float32)
    dtype = torch.promote_types(torch.promote_types(dtype, rc.dtype), rr.dtype)
    pc, pr, rc, rr = (upcast(t, dtype) for t in (pc, pr, rc, rr))
    return (pc - pr) - (rc - rr)


def safe_exp(u: Tensor) -> Tensor:
    """exp(u) for u <= EXP_EXACT_UP_TO; beyond, the tangent line exp(T) * (1 + u - T), finite with slope exp(T)."""
    capped = u.clamp(max=EXP_EXACT_UP_TO)
    return torch.exp(capped) * (1.0 + (u - capped))


def nll(x: Tensor) -> Tensor:
    """-log sig(x), exact and finite for every finite x."""
    return -F.logsigmoid(x)


def batch_var(z: Tensor) -> Tensor:
    """Unbiased variance over the batch; 0 for a single pair, where the unbiased estimator is undefined."""
    if z.numel() < 2:
        return z.new_zeros(())
    return z.var(correction=1)


def batch_std(z: Tensor) -> Tensor:
    """sqrt of `batch_var`, with gradient 0 (not nan) where the spread is exactly 0."""
    var = batch_var(z)
    positive = var > 0
    return torch.where(positive, torch.where(positive, var, torch.ones_like(var)).sqrt(), torch.zeros_like(var))
