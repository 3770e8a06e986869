"""The project's length-controlled win rate beside alpaca_eval's, on the same annotations.

Each set is judgements from a planted judge: the candidate wins instruction i with probability
sigmoid(logit(true rate) + bias * tanh(d_i / s)), d_i its answer's length minus the reference's (normal, mean
`shift`, sd 400 characters). For each set the script prints the plain win rate (the project's and alpaca_eval's
`get_winrate`, which agree to the last digit), the project's LC (`discopop_cli.eval.judge.stats.lc_estimate`) and
alpaca_eval's `get_length_controlled_winrate` with its `length_controlled_minimal` GLM (the length term and an
intercept: the project's model). AlpacaEval 2's own `length_controlled_v1` adds each instruction's difficulty and a
pull towards its gamed baselines, both fitted on its leaderboard's annotations (`df_gamed.csv` on the Hub); it
cannot run offline, and it is not defined for an instruction set other than AlpacaEval's 805.

    python bench/lc_vs_alpaca_eval.py        (needs the alpaca_eval extra; offline; a few seconds)
"""

from __future__ import annotations

import math
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# (instructions, true win rate, length bias, mean length difference in characters)
SETS = [
    (805, 0.60, 2.0, 400),
    (805, 0.35, 2.0, 400),
    (805, 0.70, 0.0, 0),
    (805, 0.53, 0.0, 0),
    (200, 0.60, 1.5, 300),
    (40, 0.60, 2.0, 400),
    (40, 0.55, 0.0, 0),
]


def main() -> None:
    import numpy as np
    import pandas as pd

    warnings.simplefilter("ignore")
    from alpaca_eval.metrics import get_winrate, glm_winrate

    from discopop_cli.eval.judge import stats

    placeholder = Path(tempfile.mkdtemp()) / "df_gamed.csv"
    # The minimal GLM does not use the difficulties, but alpaca_eval reads their table first: a placeholder, offline.
    glm_winrate.hf_hub_download = lambda **kwargs: str(placeholder)
    print("| instructions | true rate | length bias | win rate (both) | ours: LC | alpaca_eval minimal: LC | diff |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for seed, (n, true_rate, bias, shift) in enumerate(SETS):
        rng = np.random.default_rng(seed)
        diffs = np.round(rng.normal(shift, 400.0, size=n)).astype(int)
        x = np.tanh(diffs / np.std(diffs))
        p = 1 / (1 + np.exp(-(math.log(true_rate / (1 - true_rate)) + bias * x)))
        outcomes = np.where(rng.random(n) < p, 1.0, 0.0)
        ref = 800
        table = pd.DataFrame(
            {
                "instruction": [f"q{i}" for i in range(n)],
                "output_1": ["r" * ref] * n,
                "output_2": ["c" * max(1, ref + int(d)) for d in diffs],
                "generator_1": "reference",
                "generator_2": "candidate",
                "annotator": "planted",
                "preference": 1.0 + outcomes,
            }
        )
        pd.DataFrame({"model": "x", "index": range(n), "instruction_difficulty": 0.0}).to_csv(placeholder, index=False)
        lengths = (table["output_2"].str.len() - table["output_1"].str.len()).to_numpy(float)
        ours = 100 * stats.lc_estimate(list(outcomes), list(lengths), resamples=10).value
        theirs = glm_winrate.get_length_controlled_winrate(
            table, glm_name="length_controlled_minimal", save_weights_dir=None, is_warn_extreme_changes=False
        )["length_controlled_winrate"]
        plain = get_winrate(table)["win_rate"]
        assert abs(plain - 100 * outcomes.mean()) < 1e-9
        print(f"| {n} | {true_rate:.2f} | {bias:g} | {plain:.1f} | {ours:.1f} | {theirs:.1f} | {ours - theirs:+.1f} |")


if __name__ == "__main__":
    main()
