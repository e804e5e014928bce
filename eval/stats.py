"""Statistics for comparing models on the same evaluation items.

Pure functions on numpy arrays (no model, no I/O) so that every figure in
docs/results.md can carry an uncertainty:

- :func:`bootstrap_mean` -- a percentile bootstrap 95% confidence interval of a mean
  (accuracy, error rate, loss), with a fixed seed so reruns print the same interval;
- :func:`paired_bootstrap` -- the same for the difference between two models scored on
  the same items, resampling items jointly so per-item difficulty cancels out;
- :func:`mcnemar` -- McNemar's test for two classifiers' right/wrong answers on the same
  items: the exact binomial test on the discordant pairs, and the chi-square statistic
  with continuity correction for reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval."""

    value: float
    low: float
    high: float
    n: int

    def format(self, scale: float = 1.0, digits: int = 1, suffix: str = "") -> str:
        """``'68.2% [65.6, 70.7]'``-style text (``scale=100`` for percentages)."""
        v, lo, hi = (x * scale for x in (self.value, self.low, self.high))
        return f"{v:.{digits}f}{suffix} [{lo:.{digits}f}, {hi:.{digits}f}]"


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over shared items, its bootstrap interval and a two-sided p-value."""

    difference: Estimate
    p_value: float

    def p_text(self, digits: int = 2) -> str:
        return bootstrap_p_text(self.p_value, digits)


def bootstrap_p_text(p_value: float, digits: int = 2, n_resamples: int = DEFAULT_RESAMPLES) -> str:
    """A bootstrap p-value as text: 0 only means "below the resampling resolution", so it
    reads ``< 1/n_resamples``."""
    if p_value == 0:
        return f"< {1 / n_resamples:g}"
    return f"{p_value:.{digits}g}"


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on paired right/wrong outcomes.

    ``only_a`` counts items model A got right and B wrong, ``only_b`` the reverse;
    the items both got right or both got wrong carry no information on the difference.
    """

    only_a: int
    only_b: int
    exact_p: float
    chi2: float
    chi2_p: float


def _as_float_array(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def _percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


def _weights(weights: Sequence[float] | np.ndarray | None, size: int) -> np.ndarray:
    if weights is None:
        return np.ones(size)
    array = _as_float_array(weights, "weights")
    if array.size != size:
        raise ValueError(f"{array.size} weights for {size} values")
    return array


def _weighted_means(values: np.ndarray, weights: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Weighted mean of each resample (rows of ``indices``)."""
    return (values[indices] * weights[indices]).sum(axis=1) / weights[indices].sum(axis=1)


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
    weights: Sequence[float] | np.ndarray | None = None,
) -> Estimate:
    """Mean of ``values`` with a percentile bootstrap interval.

    Each resample draws ``len(values)`` items with replacement; the interval is the
    central ``confidence`` share of the resampled means. ``weights`` (e.g. the number
    of tokens per item, with ``values`` the per-item rate) make it a ratio of sums,
    still resampled by item. An empty input gives NaNs.
    """
    array = _as_float_array(values, "values")
    if array.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    weight = _weights(weights, array.size)
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, array.size, size=(n_resamples, array.size))
    means = _weighted_means(array, weight, indices)
    low, high = _percentile_interval(means, confidence)
    value = float((array * weight).sum() / weight.sum())
    return Estimate(value, low, high, int(array.size))


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
    weights: Sequence[float] | np.ndarray | None = None,
) -> PairedDifference:
    """Difference of means ``mean(a) - mean(b)`` for two models scored on the same items.

    Items are resampled jointly (the same indices for both models). The p-value is the
    two-sided bootstrap share of resampled differences on the other side of zero
    (doubled, capped at 1): a rough test, reported next to the interval. ``weights``
    are shared by both models (e.g. tokens of the same reference answer).
    """
    first = _as_float_array(a, "a")
    second = _as_float_array(b, "b")
    if first.shape != second.shape:
        raise ValueError(f"paired inputs differ in length: {first.size} vs {second.size}")
    if first.size == 0:
        nan = float("nan")
        return PairedDifference(Estimate(nan, nan, nan, 0), nan)
    differences = first - second
    weight = _weights(weights, differences.size)
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, differences.size, size=(n_resamples, differences.size))
    resampled = _weighted_means(differences, weight, indices)
    low, high = _percentile_interval(resampled, confidence)
    below = float(np.mean(resampled <= 0.0))
    above = float(np.mean(resampled >= 0.0))
    p_value = min(1.0, 2.0 * min(below, above))
    value = float((differences * weight).sum() / weight.sum())
    estimate = Estimate(value, low, high, int(differences.size))
    return PairedDifference(estimate, p_value)


def mcnemar(
    correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray
) -> McNemarResult:
    """McNemar's test for two models' right/wrong answers on the same items.

    Exact version: under the null hypothesis each discordant item is equally likely to
    favour either model, so ``only_a ~ Binomial(only_a + only_b, 1/2)``; the two-sided
    p-value doubles the smaller tail (capped at 1). The chi-square version uses
    ``max(|only_a - only_b| - 1, 0)^2 / (only_a + only_b)`` with one degree of freedom.
    """
    first = np.asarray(correct_a, dtype=bool)
    second = np.asarray(correct_b, dtype=bool)
    if first.shape != second.shape:
        raise ValueError(f"paired inputs differ in length: {first.size} vs {second.size}")
    only_a = int(np.sum(first & ~second))
    only_b = int(np.sum(~first & second))
    discordant = only_a + only_b
    if discordant == 0:
        return McNemarResult(only_a, only_b, 1.0, 0.0, 1.0)
    exact_p = min(1.0, 2.0 * float(scipy_stats.binom.cdf(min(only_a, only_b), discordant, 0.5)))
    # Continuity correction, clamped so that equal counts give 0 rather than 1/n.
    chi2 = max(abs(only_a - only_b) - 1.0, 0.0) ** 2 / discordant
    chi2_p = float(scipy_stats.chi2.sf(chi2, df=1))
    return McNemarResult(only_a, only_b, exact_p, float(chi2), chi2_p)


def relative_change(new: float, reference: float) -> float:
    """``(new - reference) / reference`` (NaN when the reference is zero or missing)."""
    if reference == 0 or not np.isfinite(reference) or not np.isfinite(new):
        return float("nan")
    return (new - reference) / abs(reference)
