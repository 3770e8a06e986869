"""Two baselines of the paper's comparison, under the names SakanaAI's `gpo.py` gave them, in the form the paper's
code base ran them (TRL 1.16 has dropped the one and changed the other):

- `kto_pair`: TRL 0.8.6's pairwise KTO (`DPOTrainer.dpo_loss`, loss_type "kto_pair"), gone from TRL since 0.13.
- `bco_pair`: pairwise BCO with the running-mean reward shift `delta` of TRL 0.9.3 (`RunningMoments` in
  `trl/trainer/utils.py`); TRL 1.16's `bco_pair` has no `delta`. TRL 0.8.6 had no `bco_pair`: gpo.py's reads
  `self.running`, which only TRL >= 0.9.3's DPOTrainer creates, so that is the version this one follows.

`dpo` (TRL's `sigmoid`) and `lrml` (`discopop`) are names in the registry (registry.py); they need no code here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from discopop_cli.losses.numerics import upcast


def _float32(*tensors: Tensor) -> list[Tensor]:
    dtype = torch.promote_types(tensors[0].dtype, torch.float32)
    return [upcast(t, dtype) for t in tensors]


def kto_pair(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float,
) -> Tensor:
    """KLc = max(0, mean(pc - rc)); KLr = max(0, mean(pr - rr));
    L = (1 - sig(beta * ((pc - rc) - KLr))) / 2 + (1 - sig(beta * (KLc - (pr - rr)))) / 2

    TRL 0.8.6 returned the two halves as 2B values and averaged them; one value per pair, their mean, averages to
    the same. The KL estimates are micro-batch means, not detached, each half using the other half's.
    """
    pc, pr, rc, rr = _float32(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    chosen_logratios, rejected_logratios = pc - rc, pr - rr
    chosen_kl = chosen_logratios.mean().clamp(min=0)
    rejected_kl = rejected_logratios.mean().clamp(min=0)
    chosen_term = 1 - torch.sigmoid(beta * (chosen_logratios - rejected_kl))
    rejected_term = 1 - torch.sigmoid(beta * (chosen_kl - rejected_logratios))
    return 0.5 * (chosen_term + rejected_term)


class RunningMean:
    """The mean of every value seen so far, as TRL 0.9.3's RunningMoments kept it: each update adds one value per
    process (the process's batch mean), averaged over the processes when torch.distributed is running."""

    def __init__(self) -> None:
        self.mean = 0.0
        self.count = 0.0

    @torch.no_grad()
    def update(self, batch_mean: Tensor) -> float:
        value, count = float(batch_mean), 1.0
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            device = batch_mean.device
            summed = torch.tensor([value, 1.0], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(summed)
            value, count = float(summed[0] / summed[1]), float(summed[1])
        total = self.count + count
        self.mean += (value - self.mean) * count / total
        self.count = total
        return self.mean


def _bco_pair(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
    running: RunningMean,
) -> Tensor:
    pc, pr, rc, rr = _float32(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    chosen_rewards, rejected_rewards = beta * (pc - rc), beta * (pr - rr)
    delta = running.update(torch.cat((chosen_rewards, rejected_rewards)).mean().detach())
    return -F.logsigmoid(chosen_rewards - delta) - F.logsigmoid(-(rejected_rewards - delta))


def bco_pair(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float,
) -> Tensor:
    """uc = beta * (pc - rc); ur = beta * (pr - rr); delta = running mean of the batch means of (uc, ur);
    L = -log sig(uc - delta) - log sig(-(ur - delta))

    In training `delta` runs over the whole run (evaluation batches included, as in TRL 0.9.3), across processes;
    called on its own, as here, it is the batch's own mean (a running mean's first value).
    """
    return _bco_pair(
        policy_chosen_logps,
        policy_rejected_logps,
        reference_chosen_logps,
        reference_rejected_logps,
        beta,
        RunningMean(),
    )


class RunningBCOPair:
    """`bco_pair` with a running mean that lives as long as this object: one per training run."""

    def __init__(self) -> None:
        self.running = RunningMean()

    def __call__(
        self,
        policy_chosen_logps: Tensor,
        policy_rejected_logps: Tensor,
        reference_chosen_logps: Tensor,
        reference_rejected_logps: Tensor,
        *,
        beta: float,
    ) -> Tensor:
        return _bco_pair(
            policy_chosen_logps,
            policy_rejected_logps,
            reference_chosen_logps,
            reference_rejected_logps,
            beta,
            self.running,
        )


# A loss whose value depends on the run's history names a factory the trainer calls once per run.
bco_pair.per_run = RunningBCOPair  # type: ignore[attr-defined]
