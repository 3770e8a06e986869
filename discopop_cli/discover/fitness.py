"""How a trained candidate is scored: the one place to change when `discopop eval prefs` takes over.

Until then the fitness is the held-out preference accuracy of the candidate's own short training run: TRL's
`eval_rewards/accuracies` on the recipe's eval split (test_split_size or a test split) at the last evaluation,
that is the share of held-out pairs whose implicit reward `beta * (log pi/pi_ref)` ranks the chosen response
above the rejected one. The reward margin on the same split breaks ties.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from discopop_cli.core.errors import RunFailure

METHOD = "trl-eval-accuracy"
LABEL = "held-out preference accuracy (the share of held-out pairs the trained model ranks the right way round)"


@dataclass(frozen=True)
class Fitness:
    value: float
    metrics: dict[str, float]
    method: str = METHOD


def score(run_dir: Path) -> Fitness:
    """The fitness of the model trained into `run_dir` (read from its trainer_state.json)."""
    state_path = run_dir / "trainer_state.json"
    try:
        history = json.loads(state_path.read_text(encoding="utf-8"))["log_history"]
    except (OSError, ValueError, KeyError) as exc:
        raise RunFailure(f"the training run left no readable {state_path.name}: {exc}") from None
    evaluations = [e for e in history if "eval_rewards/accuracies" in e]
    if not evaluations:
        raise RunFailure("the training run logged no evaluation (eval_rewards/accuracies)")
    last = evaluations[-1]
    metrics = {
        "accuracy": float(last["eval_rewards/accuracies"]),
        "reward_margin": float(last.get("eval_rewards/margins", 0.0)),
        "eval_loss": float(last.get("eval_loss", float("nan"))),
        "steps": float(last.get("step", 0)),
    }
    return Fitness(metrics["accuracy"], metrics)
