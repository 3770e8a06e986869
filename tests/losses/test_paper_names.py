"""The loss names of the paper's recipes (SakanaAI's gpo.py): dpo, lrml, kto_pair and bco_pair, each computing what
the paper's code base computed. The references below transcribe TRL v0.8.6's kto_pair (`dpo_trainer.py`, which
returns 2B values and averages them) and TRL v0.9.3's bco_pair with its `RunningMoments` (`trainer/utils.py`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from discopop_cli import losses
from discopop_cli.train.injection import plan_losses


def batch(seed: int, pairs: int = 6) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(-(5 + 10 * torch.rand(pairs, generator=generator, dtype=torch.float64)) for _ in range(4))


def kto_pair_086(pc, pr, rc, rr, beta):  # noqa: ANN001, ANN201
    chosen_KL = (pc - rc).mean().clamp(min=0)  # noqa: N806 - TRL's names
    rejected_KL = (pr - rr).mean().clamp(min=0)  # noqa: N806
    chosen_logratios, rejected_logratios = pc - rc, pr - rr
    return torch.cat(
        (
            1 - F.sigmoid(beta * (chosen_logratios - rejected_KL)),
            1 - F.sigmoid(beta * (chosen_KL - rejected_logratios)),
        ),
        0,
    )


class RunningMoments093:
    """TRL 0.9.3's RunningMoments on one process: mean 0, count 1e-24, updated with each batch's mean reward."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 1e-24

    def update(self, xs: torch.Tensor) -> None:
        xs_count = xs.numel()
        xs_var, xs_mean = torch.var_mean(xs, unbiased=False)
        delta = xs_mean - self.mean
        tot_count = self.count + xs_count
        self.mean += delta * xs_count / tot_count
        self.var = (
            self.var * self.count + delta**2 * self.count * xs_count / tot_count + xs_var * xs_count
        ) / tot_count
        self.count = tot_count


def bco_pair_093(pc, pr, rc, rr, beta, running):  # noqa: ANN001, ANN201
    chosen_rewards, rejected_rewards = beta * (pc - rc), beta * (pr - rr)
    running.update(torch.cat((chosen_rewards, rejected_rewards), 0).mean().detach())
    delta = running.mean
    return -F.logsigmoid(beta * (pc - rc) - delta) - F.logsigmoid(-(beta * (pr - rr) - delta))


def test_kto_pair_averages_to_trl_086() -> None:
    for seed in range(5):
        pc, pr, rc, rr = batch(seed)
        ours = losses.get_loss("kto_pair")(pc, pr, rc, rr, beta=0.05)
        assert ours.shape == pc.shape  # one value per pair
        assert torch.allclose(ours.mean(), kto_pair_086(pc, pr, rc, rr, 0.05).mean(), atol=1e-15)


def test_bco_pair_keeps_trl_093s_running_mean_over_a_run() -> None:
    plan = plan_losses("bco_pair", None, {"beta": 0.05}, None)
    (planned,) = plan.registry
    running = RunningMoments093()
    for seed in range(6):  # six steps of one run
        pc, pr, rc, rr = batch(seed)
        ours = planned.fn(pc, pr, rc, rr, beta=0.05)
        assert torch.allclose(ours, bco_pair_093(pc, pr, rc, rr, 0.05, running), atol=1e-12)
    assert plan.trl_types == []  # TRL 1.16's bco_pair has no running mean; this one is the registry's

    # Each run starts its mean afresh: the probe before training and an earlier run leave no trace.
    again = plan_losses("bco_pair", None, {"beta": 0.05}, None).registry[0]
    pc, pr, rc, rr = batch(0)
    assert torch.allclose(again.fn(pc, pr, rc, rr, beta=0.05), bco_pair_093(pc, pr, rc, rr, 0.05, RunningMoments093()))


def test_dpo_is_trls_sigmoid_and_lrml_is_discopop() -> None:
    plan = plan_losses(["dpo", "lrml"], None, {"beta": 0.05, "discopop_tau": 0.05}, None)
    assert plan.trl_types == ["sigmoid"]
    assert [p.name for p in plan.registry] == ["lrml"]
    assert losses.get_spec("lrml").fn is losses.discopop
    assert {"kto_pair", "bco_pair"} <= {spec.name for spec in losses.list_losses()}
