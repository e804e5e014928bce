"""Bootstrap intervals and McNemar's test against figures computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qtune.eval import stats


def test_bootstrap_mean_matches_a_hand_written_percentile_bootstrap() -> None:
    values = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], dtype=float)
    result = stats.bootstrap_mean(values, n_resamples=500, seed=7)

    rng = np.random.default_rng(7)
    draws = rng.integers(0, 10, size=(500, 10))
    means = sorted(values[row].mean() for row in draws)
    assert result.value == pytest.approx(0.7)
    assert result.n == 10
    assert result.low == pytest.approx(np.percentile(means, 2.5))
    assert result.high == pytest.approx(np.percentile(means, 97.5))
    assert result.low < 0.7 < result.high


def test_bootstrap_is_reproducible_and_narrows_with_more_items() -> None:
    rng = np.random.default_rng(1)
    small = rng.random(30) < 0.6
    large = rng.random(3000) < 0.6
    first = stats.bootstrap_mean(small)
    assert first == stats.bootstrap_mean(small)
    wide = first.high - first.low
    narrow = stats.bootstrap_mean(large).high - stats.bootstrap_mean(large).low
    assert narrow < wide / 3


def test_constant_values_give_a_point_interval_and_empty_gives_nan() -> None:
    result = stats.bootstrap_mean([0.25] * 8)
    assert (result.value, result.low, result.high) == pytest.approx((0.25, 0.25, 0.25))
    assert math.isnan(stats.bootstrap_mean([]).value)


def test_weighted_mean_is_the_ratio_of_sums() -> None:
    # Two answers: 1 error in 2 tokens, 1 error in 8 tokens -> 2 / 10 errors per token.
    rates = [0.5, 0.125]
    result = stats.bootstrap_mean(rates, weights=[2, 8])
    assert result.value == pytest.approx(0.2)
    assert 0.125 <= result.low <= result.high <= 0.5


def test_paired_bootstrap_difference_and_p_value() -> None:
    a = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 1] * 5, dtype=float)
    b = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1] * 5, dtype=float)
    result = stats.paired_bootstrap(a, b, n_resamples=400, seed=3)
    assert result.difference.value == pytest.approx(0.4)

    rng = np.random.default_rng(3)
    draws = rng.integers(0, 50, size=(400, 50))
    diffs = (a - b)[draws].mean(axis=1)
    assert result.difference.low == pytest.approx(np.percentile(diffs, 2.5))
    assert result.difference.high == pytest.approx(np.percentile(diffs, 97.5))
    assert result.p_value < 0.01  # A wins on every discordant item

    same = stats.paired_bootstrap(a, a)
    assert same.difference.value == 0.0 and same.p_value == 1.0
    with pytest.raises(ValueError):
        stats.paired_bootstrap([1.0, 0.0], [1.0])


def _binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial test at p = 1/2 by summing the pmf by hand."""
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


def test_mcnemar_exact_and_chi_square_against_hand_computation() -> None:
    # 20 items: 3 both right, 12 only A right, 2 only B right, 3 both wrong.
    correct_a = [True] * 3 + [True] * 12 + [False] * 2 + [False] * 3
    correct_b = [True] * 3 + [False] * 12 + [True] * 2 + [False] * 3
    result = stats.mcnemar(correct_a, correct_b)
    assert (result.only_a, result.only_b) == (12, 2)
    # P(X <= 2 | n=14, p=1/2) = (1 + 14 + 91) / 16384, doubled.
    assert result.exact_p == pytest.approx(2 * 106 / 16384)
    assert result.exact_p == pytest.approx(_binomial_two_sided(2, 14))
    assert result.chi2 == pytest.approx((10 - 1) ** 2 / 14)
    # chi-square with 1 dof: P(X > x) = erfc(sqrt(x / 2)).
    assert result.chi2_p == pytest.approx(math.erfc(math.sqrt(result.chi2 / 2)))


def test_mcnemar_without_discordant_items_or_with_a_tie() -> None:
    none = stats.mcnemar([True, False], [True, False])
    assert (none.only_a, none.only_b, none.exact_p) == (0, 0, 1.0)
    tie = stats.mcnemar([True, False, True, False], [False, True, False, True])
    assert tie.exact_p == 1.0 and tie.chi2 == 0.0


def test_relative_change() -> None:
    assert stats.relative_change(0.82, 0.68) == pytest.approx(0.14 / 0.68)
    assert math.isnan(stats.relative_change(1.0, 0.0))


def test_estimate_format() -> None:
    text = stats.Estimate(0.6823, 0.656, 0.7071, 100).format(scale=100, suffix="%")
    assert text == "68.2% [65.6, 70.7]"


def test_a_bootstrap_p_of_zero_reads_as_below_the_resolution() -> None:
    far_apart = stats.paired_bootstrap([1.0] * 20, [0.0] * 20)
    assert far_apart.p_value == 0
    assert far_apart.p_text() == f"< {1 / stats.DEFAULT_RESAMPLES:g}" == "< 0.001"
    assert stats.bootstrap_p_text(0.04321) == "0.043"
    assert stats.bootstrap_p_text(0.04321, digits=3) == "0.0432"
