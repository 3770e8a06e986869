"""Win rates, bootstrap intervals, and the length-controlled win rate.

A pairwise outcome is 1 (the candidate won in both orders), 0 (it lost in both) or 0.5 (anything else); the win
rate is their mean, ties counting half as in AlpacaEval.

The length-controlled win rate follows AlpacaEval 2's idea with one covariate: a logistic regression of the
outcome on the length difference, `logit P(win) = b0 + b1 * tanh((len_c - len_r) / s)` with `s` the standard
deviation of the differences, fitted by Newton's method (fractional outcomes, for ties, are fine in this
likelihood), and reported at zero length difference: `sigmoid(b0)`. AlpacaEval 2 also models each instruction's
difficulty; with one candidate per comparison that term cannot be told apart from the noise, so it is left out.

Intervals are percentile bootstraps over prompts (resampled with replacement, a fixed seed): they show how much
the prompt set's size leaves open, not how much the judge itself can be trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

RIDGE = 1e-3  # keeps the fit finite when every outcome is a win (or a loss); negligible otherwise
BOOTSTRAP = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def _features(length_diff: np.ndarray, scale: float) -> np.ndarray:
    """(..., n, 2): an intercept and the squashed length difference."""
    x = np.tanh(length_diff / scale) if scale > 0 else np.zeros_like(length_diff, dtype=float)
    return np.stack([np.ones_like(x, dtype=float), x], axis=-1)


def fit_logistic(features: np.ndarray, y: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Ridge-penalised logistic regression by Newton's method, batched over leading axes: (..., n, 2) -> (..., 2)."""
    beta = np.zeros(features.shape[:-2] + (2,))
    eye = np.eye(2) * RIDGE
    for _ in range(iterations):
        p = _sigmoid((features @ beta[..., None])[..., 0])
        gradient = (np.swapaxes(features, -1, -2) @ (y - p)[..., None])[..., 0] - RIDGE * beta
        weighted = features * (p * (1 - p))[..., None]
        hessian = np.swapaxes(weighted, -1, -2) @ features + eye
        step = np.linalg.solve(hessian, gradient[..., None])[..., 0]
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


def length_scale(length_diff: np.ndarray) -> float:
    return float(np.std(length_diff)) if len(length_diff) > 1 else 0.0


def lc_win_rate(outcomes: np.ndarray, length_diff: np.ndarray) -> float:
    """The win rate the regression predicts at zero length difference."""
    beta = fit_logistic(_features(np.asarray(length_diff, float), length_scale(length_diff)), np.asarray(outcomes))
    return float(_sigmoid(beta[0]))


def _resamples(n: int, seed: int, count: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(count, n))


def _interval(samples: np.ndarray) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def mean_estimate(values: list[float], seed: int = 0, resamples: int = BOOTSTRAP) -> Estimate:
    """The mean with its bootstrap interval (a win rate, or a mean rating)."""
    data = np.asarray(values, dtype=float)
    if len(data) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    low, high = _interval(data[_resamples(len(data), seed, resamples)].mean(axis=1))
    return Estimate(float(data.mean()), low, high, len(data))


def lc_estimate(outcomes: list[float], length_diff: list[float], seed: int = 0, resamples: int = BOOTSTRAP) -> Estimate:
    """The length-controlled win rate with its bootstrap interval (the length scale fixed from all prompts)."""
    y = np.asarray(outcomes, dtype=float)
    d = np.asarray(length_diff, dtype=float)
    if len(y) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    scale = length_scale(d)
    value = float(_sigmoid(fit_logistic(_features(d, scale), y)[0]))
    index = _resamples(len(y), seed + 1, resamples)
    betas = fit_logistic(_features(d[index], scale), y[index])
    low, high = _interval(_sigmoid(betas[:, 0]))
    return Estimate(value, low, high, len(y))
