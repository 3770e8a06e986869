"""The seven objectives of Lu et al. (2024), Table 1 and Appendix E, as plain functions.

Each takes the four sequence log-probabilities of a batch of preference pairs and returns one loss per pair;
its docstring's first paragraph is the formula that `discopop losses` shows. Notation: ``d = (pc - pr) - (rc -
rr)``, ``x = beta * d``, ``sig`` the logistic sigmoid, ``-log sig(x)`` the DPO logistic loss and ``relu(1 - x)``
the hinge loss. The registry (registry.py) gives them their names; the numerics they share are in numerics.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from discopop_cli.losses.numerics import batch_std, batch_var, margin, nll, safe_exp


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
