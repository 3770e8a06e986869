"""The statistics of `eval judge`: the length-controlled win rate, bootstrap intervals, verdict parsing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from discopop_cli.eval.judge import stats, verdicts


def planted(n: int, true_rate: float, bias: float, mean_diff: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Judgements from a judge that rewards length: logit P(win) = logit(true_rate) + bias * tanh(d / s)."""
    rng = np.random.default_rng(seed)
    diffs = rng.normal(mean_diff, 400.0, size=n)  # the candidate writes longer answers on average
    x = np.tanh(diffs / np.std(diffs))
    p = 1 / (1 + np.exp(-(math.log(true_rate / (1 - true_rate)) + bias * x)))
    return np.where(rng.random(n) < p, 1.0, 0.0), diffs


@pytest.mark.parametrize(("true_rate", "seed"), [(0.6, 0), (0.35, 1), (0.5, 2)])
def test_lc_recovers_the_planted_win_rate(true_rate: float, seed: int) -> None:
    outcomes, diffs = planted(4000, true_rate, bias=2.0, mean_diff=400.0, seed=seed)
    raw = stats.mean_estimate(list(outcomes)).value
    lc = stats.lc_estimate(list(outcomes), list(diffs), resamples=300)
    # The bias is there to be removed: the raw win rate is well off the true one ...
    assert raw - true_rate > 0.1
    # ... and the length-controlled one recovers it.
    assert abs(lc.value - true_rate) < 0.03, (raw, lc)
    assert lc.low < true_rate < lc.high


def test_lc_equals_the_raw_rate_when_lengths_do_not_matter() -> None:
    outcomes, diffs = planted(4000, 0.7, bias=0.0, mean_diff=0.0, seed=3)
    assert abs(stats.lc_estimate(list(outcomes), list(diffs), resamples=10).value - outcomes.mean()) < 0.02


def test_lc_stays_finite_when_every_prompt_is_won() -> None:
    estimate = stats.lc_estimate([1.0] * 20, [float(i) for i in range(20)])
    assert 0.99 < estimate.value <= 1.0
    assert all(math.isfinite(v) for v in (estimate.low, estimate.high))


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_prompts() -> None:
    rng = np.random.default_rng(4)
    small = stats.mean_estimate(list(rng.integers(0, 2, 40).astype(float)))
    large = stats.mean_estimate(list(rng.integers(0, 2, 4000).astype(float)))
    for estimate in (small, large):
        assert estimate.low <= estimate.value <= estimate.high
    assert large.high - large.low < (small.high - small.low) / 5
    # A proportion's interval from 40 prompts is about +-0.15 wide at 0.5: what the README warns about.
    assert 0.2 < small.high - small.low < 0.4


def test_an_empty_set_is_nan_not_a_crash() -> None:
    assert stats.mean_estimate([]).n == 0
    assert math.isnan(stats.lc_estimate([], []).value)


@pytest.mark.parametrize(
    ("first", "second", "outcome"),
    [
        ("A", "B", 1.0),  # the candidate won shown first and shown second
        ("B", "A", 0.0),
        ("A", "A", 0.5),  # a judge that always picks the first answer: no win counted
        ("B", "B", 0.5),
        ("A", "tie", 0.5),
        ("tie", "tie", 0.5),
    ],
)
def test_a_win_counts_only_when_both_orders_agree(first: str, second: str, outcome: float) -> None:
    assert verdicts.pair_outcome(first, second) == outcome


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("A is clearer and correct.\n[[A]]", "A"),
        ("At first [[A]] seemed right, but on reflection [[B]]", "B"),
        ("Both are fine. [[C]]", "tie"),
        ('{"verdict": "B"}', "B"),
        ('{ "verdict": "C"}', "tie"),
        ("Assistant A is better.", None),
        ('{"verdict": "D"}', None),
        ("", None),
    ],
)
def test_pair_verdicts_are_read_from_marks_or_json(reply: str, verdict: str | None) -> None:
    assert verdicts.parse_pair(reply) == verdict


@pytest.mark.parametrize(
    ("reply", "rating"),
    [
        ("Correct and complete. Rating: [[8]]", 8.0),
        ("[[7.5]]", 7.5),
        ('{"rating": 3}', 3.0),
        ("[[11]]", None),
        ("[[0]]", None),
        ("I would give it a seven.", None),
        ('{"rating": true}', None),
    ],
)
def test_ratings_are_read_and_range_checked(reply: str, rating: float | None) -> None:
    assert verdicts.parse_rating(reply) == rating


@pytest.mark.parametrize(
    ("reply", "rating"),
    [
        ("Rating: [[8]]", 8.0),
        ("[[7]] at first, then [[3]]", 7.0),  # FastChat's re.search: the first mark
        ("Rating: [6.5] overall", 6.5),  # the single-bracket fallback
        ("[[9]] and [2]", 9.0),  # the double bracket wins over an earlier-or-later single one
        ('{"rating": 4}', 4.0),  # structured output (--judge-format json)
        ("I would give it a seven.", None),
    ],
)
def test_mt_bench_ratings_are_read_as_fastchat_reads_them(reply: str, rating: float | None) -> None:
    from discopop_cli.eval.judge import mtbench

    assert mtbench.parse_rating(reply) == rating


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("[[B]] is close, but [[A]]", "A"),  # FastChat looks for [[A]] first, wherever it is
        ("[[C]] or maybe [[B]]", "B"),
        ("Equal: [[C]]", "tie"),
        ('{"verdict": "C"}', "tie"),
        ("A is better.", None),
    ],
)
def test_mt_bench_verdicts_are_read_as_fastchat_reads_them(reply: str, verdict: str | None) -> None:
    from discopop_cli.eval.judge import mtbench

    assert mtbench.parse_verdict(reply) == verdict


@pytest.mark.parametrize(
    ("mode", "category", "turn", "name"),
    [
        ("single", "writing", 1, "single-v1"),
        ("single", "writing", 2, "single-v1-multi-turn"),
        ("single", "coding", 1, "single-math-v1"),
        ("single", "reasoning", 2, "single-math-v1-multi-turn"),
        ("pairwise", "stem", 1, "pair-v2"),
        ("pairwise", "math", 2, "pair-math-v1-multi-turn"),
    ],
)
def test_mt_bench_judge_prompt_per_category_and_turn(mode: str, category: str, turn: int, name: str) -> None:
    from discopop_cli.eval.judge import mtbench

    assert mtbench.prompt_name(mode, category, turn) == name
