"""Intervals and verdicts for ablations, on ``scipy.stats`` (no distribution is written here).

The book compares rows of the paper's Table 2 by training each several times (seeds) and
evaluating on one test split. Three questions, three tools:

* How much better is row A than row B, over seeds?  :func:`paired_difference`, the paired
  t interval on d_s = a_s - b_s (same seed s for both rows).
* How much of that is luck in the choice of test queries?  :func:`bootstrap_difference`,
  a bootstrap over queries of the per-query AP difference of one pair of models.
* Do two orderings of the rows agree?  :func:`spearman`, Spearman's rank correlation.

:func:`verdict` turns an interval and the paper's sign into one of three phrases, and
:func:`sd` is the one standard deviation the book prints (ddof = 1).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats as _st

__all__ = ["PairedDifference", "BootstrapDifference", "MeanInterval", "Correlation", "sd", "mean_interval",
           "paired_difference", "bootstrap_difference", "spearman", "verdict",
           "AGREES", "CONTRADICTS", "CANNOT_TELL", "VERDICTS"]

AGREES = "agrees with the paper"
CONTRADICTS = "contradicts it"
CANNOT_TELL = "cannot tell at this power"
VERDICTS = (AGREES, CONTRADICTS, CANNOT_TELL)


class PairedDifference(NamedTuple):
    """mean of d = a - b over n pairs and its confidence interval [low, high]."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


class BootstrapDifference(NamedTuple):
    """mean of d = a - b over the n queries kept, its bootstrap interval, and how many
    queries were dropped because their AP is NaN (skipped by the evaluation)."""

    mean: float
    low: float
    high: float
    n: int
    dropped: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


class MeanInterval(NamedTuple):
    """mean of n values and the t interval [low, high] of their population mean."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


class Correlation(NamedTuple):
    rho: float
    pvalue: float
    n: int


def _vector(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d sequence of numbers, got shape {x.shape}")
    return x


def sd(x) -> float:
    """The sample standard deviation, s = sqrt(sum_s (x_s - x̄)² / (n - 1)) (ddof = 1).

    The one spread the book prints for values over seeds; NaN when n < 2.
    """
    x = _vector(x, "sd")
    return float(np.std(x, ddof=1)) if len(x) >= 2 else math.nan


def mean_interval(x, confidence: float = 0.95) -> MeanInterval:
    """x̄ ± t_{(1+γ)/2, n-1} s / sqrt(n), the t interval of a mean (``scipy.stats.t.interval``).

    γ = ``confidence``, s = :func:`sd`. n = 1: the interval is [NaN, NaN]; s = 0: [x̄, x̄].
    """
    x = _vector(x, "mean_interval")
    n, m = len(x), float(np.mean(x)) if len(x) else math.nan
    if n < 2:
        return MeanInterval(m, math.nan, math.nan, n)
    s = sd(x)
    if s == 0:
        return MeanInterval(m, m, m, n)
    low, high = _st.t.interval(confidence, n - 1, loc=m, scale=s / math.sqrt(n))
    return MeanInterval(m, float(low), float(high), n)


def paired_difference(a, b, confidence: float = 0.95) -> PairedDifference:
    """The paired t interval of the mean difference d = a - b (``scipy.stats.ttest_rel``).

    a_s and b_s are the results of two variants for the same seed s (same initialisation
    stream, same batches). With d_s = a_s - b_s, d̄ = mean_s d_s and s_d = :func:`sd` (d):

        d̄ ± t_{(1+γ)/2, n-1} s_d / sqrt(n),      γ = ``confidence``

    Pairs where a or b is NaN are dropped; ``n`` counts the pairs used. n = 1: the interval
    is [NaN, NaN] (no spread to estimate); s_d = 0: [d̄, d̄].
    """
    a, b = _vector(a, "paired_difference(a)"), _vector(b, "paired_difference(b)")
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: a and b must pair up, got {len(a)} and {len(b)} values")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    d = a - b
    n = len(d)
    if n == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0)
    m = float(np.mean(d))
    if n == 1:
        return PairedDifference(m, math.nan, math.nan, 1)
    if np.ptp(d) == 0:
        return PairedDifference(m, m, m, n)
    ci = _st.ttest_rel(a, b).confidence_interval(confidence)
    return PairedDifference(m, float(ci.low), float(ci.high), n)


def bootstrap_difference(ap_a, ap_b, confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0,
                         method: str = "BCa") -> BootstrapDifference:
    """Bootstrap interval over queries of mean_j (AP_a,j - AP_b,j) (``scipy.stats.bootstrap``).

    ``ap_a``, ``ap_b``: per-query AP of two models on the same queries (``all_AP`` of
    ``rrid.metrics.evaluate_ranking``; NaN where a query was skipped). The queries are
    resampled with replacement, the same j for both models (``paired=True``), ``n_resamples``
    times, and the statistic mean_j (AP_a,j - AP_b,j) gives the ``method`` ("BCa" or
    "percentile") interval. This is the spread due to *which queries* the test split holds,
    for these two trained models; the seed-to-seed spread is :func:`paired_difference`'s.
    The resampling is drawn from ``numpy.random.default_rng(seed)``: one seed, one interval.
    """
    a, b = _vector(ap_a, "bootstrap_difference(ap_a)"), _vector(ap_b, "bootstrap_difference(ap_b)")
    if a.shape != b.shape:
        raise ValueError(f"bootstrap_difference: expected one AP per query for both models, got {len(a)} and {len(b)}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b, dropped = a[keep], b[keep], int((~keep).sum())
    n = len(a)
    m = float(np.mean(a - b)) if n else math.nan
    if n < 2:
        return BootstrapDifference(m, math.nan, math.nan, n, dropped)
    if np.ptp(a - b) == 0:
        return BootstrapDifference(m, m, m, n, dropped)

    def mean_difference(x, y, axis):
        return np.mean(x - y, axis=axis)

    res = _st.bootstrap((a, b), mean_difference, paired=True, vectorized=True, confidence_level=confidence,
                        n_resamples=n_resamples, method=method, rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return BootstrapDifference(m, float(ci.low), float(ci.high), n, dropped)


def spearman(a, b) -> Correlation:
    """Spearman's rank correlation rho of two orderings (``scipy.stats.spearmanr``).

    rho is Pearson's correlation of the ranks (ties get their mean rank): 1 for the same
    order, -1 for the reverse, about 0 for unrelated ones. ``pvalue`` tests rho = 0.
    """
    a, b = _vector(a, "spearman(a)"), _vector(b, "spearman(b)")
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(f"spearman: expected two sequences of the same length >= 2, got {len(a)} and {len(b)}")
    res = _st.spearmanr(a, b)
    return Correlation(float(res.statistic), float(res.pvalue), len(a))


def verdict(interval, paper_difference: float) -> str:
    """What an interval of A - B says about the paper's A - B.

    ``interval``: anything with ``.low`` and ``.high`` (:class:`PairedDifference`,
    :class:`BootstrapDifference`) or a (low, high) pair. With P = ``paper_difference`` (non-zero):

    * :data:`AGREES` ("agrees with the paper"): the interval excludes 0 on P's side
      (low > 0 when P > 0, high < 0 when P < 0);
    * :data:`CONTRADICTS` ("contradicts it"): the interval excludes 0 on the other side;
    * :data:`CANNOT_TELL` ("cannot tell at this power"): the interval contains 0 (ends
      included) or is undefined (NaN, e.g. a single seed).

    "Excludes 0" at confidence γ is a two-sided test of "no difference" at level 1 - γ;
    the verdict is about the sign only, not about the size of the paper's effect.
    """
    low, high = (interval.low, interval.high) if hasattr(interval, "low") else interval
    if not paper_difference or math.isnan(paper_difference):
        raise ValueError(f"verdict: paper_difference={paper_difference!r}; expected the paper's non-zero A - B")
    if math.isnan(low) or math.isnan(high):
        return CANNOT_TELL
    if low > high:
        raise ValueError(f"verdict: interval ({low}, {high}) has low > high")
    if low > 0 or high < 0:
        return AGREES if (low > 0) == (paper_difference > 0) else CONTRADICTS
    return CANNOT_TELL
