"""The registered loss's own cost: forward + backward of the registry's `discopop` against TRL 1.16's inline formula.

    python bench/loss_cost.py [--pairs 1048576] [--repeats 30]

Both take the same four log-probability tensors (policy ones requiring grad) and are reduced with `.mean()` and
back-propagated, as the trainer does. Timing is in one process, alternating the two, and the median per call is
reported. The runner starts this as a child so that torch stays out of its own memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from measure import BENCH, PYTHON, Row, Settings, measure

BETA, TAU = 0.05, 0.05


def trl_discopop(pc, pr, rc, rr, *, beta: float, discopop_tau: float):  # noqa: ANN001, ANN201
    """TRL 1.16's `loss_type="discopop"`, as DPOTrainer._compute_loss computes it (reverse_kl, no weighting)."""
    import torch
    import torch.nn.functional as F

    chosen_logratios = pc - rc
    rejected_logratios = pr - rr
    delta_score = chosen_logratios - rejected_logratios
    logits = delta_score * beta
    log_ratio_modulation = torch.sigmoid(logits / discopop_tau)
    logistic_component = -F.logsigmoid(logits)
    exp_component = torch.exp(-logits)
    return logistic_component * (1 - log_ratio_modulation) + exp_component * log_ratio_modulation


def time_losses(pairs: int, repeats: int) -> dict[str, float]:
    """Median milliseconds per forward + backward for each implementation, and their largest disagreement."""
    import torch

    from discopop_cli.losses import get_loss

    generator = torch.Generator().manual_seed(0)
    # Sequence log-probabilities of a few hundred tokens; beta * d spans about [-5, 5], where TRL's form is finite.
    pc, pr, rc, rr = (-150 + 30 * torch.randn(pairs, generator=generator) for _ in range(4))
    functions = {"registry": get_loss("discopop"), "trl": trl_discopop}
    times: dict[str, list[float]] = {name: [] for name in functions}
    values = {}
    for repeat in range(repeats + 3):  # the first three are warm-up
        for name in functions if repeat % 2 == 0 else reversed(list(functions)):
            policy = (pc.clone().requires_grad_(), pr.clone().requires_grad_())
            started = time.perf_counter()
            loss = functions[name](*policy, rc, rr, beta=BETA, discopop_tau=TAU).mean()
            loss.backward()
            elapsed = time.perf_counter() - started
            if repeat >= 3:
                times[name].append(elapsed * 1000)
            values[name] = (loss.detach(), policy[0].grad)
    gap = max((values["registry"][i] - values["trl"][i]).abs().max().item() for i in range(2))
    return {**{name: statistics.median(t) for name, t in times.items()}, "max_abs_diff": gap}


def rows(settings: Settings) -> list[Row]:
    """Two rows: a large batch (the arithmetic itself) and a micro-batch of 8 pairs (per-call overhead, which is what
    a training step pays: the zephyr recipe runs 2 pairs per device)."""
    large = 2**16 if settings.quick else 2**20
    sizes = [(large, 10 if settings.quick else 30), (8, 100 if settings.quick else 1000)]
    found = []
    for pairs, repeats in sizes:
        args = ["--pairs", str(pairs), "--repeats", str(repeats)]
        sample = measure([PYTHON, str(BENCH / "loss_cost.py"), *args])
        result = json.loads(sample.stdout.strip().splitlines()[-1])
        task = f"loss: registry `discopop` vs TRL 1.16's inline formula, {pairs:,} pairs"
        note = f"median of {repeats}; loss and grad agree to {result['max_abs_diff']:.1e}"
        found.append(Row(task, "forward + backward", result["registry"], result["trl"], None, "ms", note))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2**20)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(json.dumps(time_losses(args.pairs, args.repeats)))


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH.parent))
    main()
