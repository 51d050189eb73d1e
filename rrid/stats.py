"""Intervals and verdicts for ablations, on ``scipy.stats`` (no distribution is written here).

The book compares rows of the paper's Table 2 by training each several times (seeds) and
evaluating on one test split. Four questions, four tools:

* How much better is row A than row B, over seeds?  :func:`paired_difference`, the paired
  t interval on d_s = a_s - b_s (same seed s for both rows).
* How much of that is luck in the choice of test queries?  :func:`bootstrap_difference`,
  a bootstrap over queries of the per-query AP difference of one pair of models.
* Where would one more seed fall?  :func:`prediction_interval`; how many seeds give an
  interval of a given half-width?  :func:`seeds_for_half_width`.
* Do two orderings of the rows agree?  :func:`spearman`, Spearman's rank correlation.

Every interval has one shape, :class:`Interval` (``PairedDifference``, ``BootstrapDifference``
and ``MeanInterval`` are its names at the functions that make it). :func:`verdict` compares an
interval of A - B with the paper's A - B, with 0 and with the paper's size (:data:`VERDICTS`);
:func:`sd` is the one standard deviation the book prints (ddof = 1).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats as _st

__all__ = ["Interval", "PairedDifference", "BootstrapDifference", "MeanInterval", "Correlation", "Verdict", "sd",
           "mean_interval", "prediction_interval", "paired_difference", "bootstrap_difference",
           "seeds_for_half_width", "spearman", "verdict", "AGREES", "SMALLER", "LARGER", "CONTRADICTS", "NO_EFFECT",
           "CANNOT_TELL", "VERDICTS", "SEEDS", "QUERIES", "VALUES"]

SEEDS, QUERIES, VALUES = "seeds", "queries", "values"
"""What an :class:`Interval` is over: training seeds (a paired t interval), test queries (a
bootstrap for one pair of trained models), or the values of one sample (the t interval of a mean)."""

AGREES = "agrees with the paper"
SMALLER = "agrees in sign, smaller than the paper's"
LARGER = "agrees in sign, larger than the paper's"
CONTRADICTS = "contradicts the paper"
NO_EFFECT = "no effect of the paper's size here"
CANNOT_TELL = "cannot tell at this power"
VERDICTS = (AGREES, SMALLER, LARGER, CONTRADICTS, NO_EFFECT, CANNOT_TELL)
"""The categories of :func:`verdict`, in the order the book lists them."""

# The words of a verdict on an interval over queries: one pair of trained models (one seed each)
# on this test split, not the rows of Table 2 as designs.
_QUERY_WORDS = {
    AGREES: "on these queries the two trained models differ as the paper's models do",
    SMALLER: "on these queries the two trained models differ in the paper's direction, by less than it reports",
    LARGER: "on these queries the two trained models differ in the paper's direction, by more than it reports",
    CONTRADICTS: "on these queries the two trained models differ against the paper's direction",
    NO_EFFECT: "on these queries the two trained models differ by less than the paper's difference, "
               "perhaps not at all",
    CANNOT_TELL: "these queries cannot tell whether the two trained models differ",
}


class Interval(NamedTuple):
    """An estimate with its interval: ``mean``, [``low``, ``high``], the ``n`` values it rests on
    (pairs, queries, values), how many were ``dropped`` (NaN), and what it is ``over``
    (:data:`SEEDS`, :data:`QUERIES` or :data:`VALUES`)."""

    mean: float
    low: float
    high: float
    n: int
    dropped: int = 0
    over: str = SEEDS

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


PairedDifference = BootstrapDifference = MeanInterval = Interval
"""The names :func:`paired_difference`, :func:`bootstrap_difference` and :func:`mean_interval`
give their :class:`Interval` (``over`` says which one made it)."""


class Correlation(NamedTuple):
    rho: float
    pvalue: float
    n: int


class Verdict(NamedTuple):
    """:func:`verdict`'s answer: its ``category`` (one of :data:`VERDICTS`), the ``bound`` X that
    its words state (NaN where they state none), the paper's difference and what the interval was
    ``over``. ``str(v)`` (and ``v.text``) is the sentence the book prints."""

    category: str
    bound: float
    paper: float
    over: str = SEEDS

    @property
    def text(self) -> str:
        words = _QUERY_WORDS[self.category] if self.over == QUERIES else self.category
        if math.isnan(self.bound):
            return words
        at_least = (self.category == LARGER) == (self.paper > 0)
        return f"{words} ({'at least' if at_least else 'at most'} {self.bound:+.2f})"

    def __str__(self) -> str:
        return self.text


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


def mean_interval(x, confidence: float = 0.95) -> Interval:
    """x̄ ± t_{(1+γ)/2, n-1} s / sqrt(n), the t interval of a mean (``scipy.stats.t.interval``).

    γ = ``confidence``, s = :func:`sd`. n = 1: the interval is [NaN, NaN]; s = 0: [x̄, x̄].
    It is about the mean of the population the values come from, not about one more value
    (that is :func:`prediction_interval`). ``over`` = :data:`VALUES`.
    """
    return _t_interval(_vector(x, "mean_interval"), confidence, new_value=False)


def prediction_interval(x, confidence: float = 0.95) -> Interval:
    """x̄ ± t_{(1+γ)/2, n-1} s sqrt(1 + 1/n): where one more value drawn like ``x`` falls with
    probability γ, when the values are normal (the t prediction interval, ``scipy.stats.t``).

    ``x``: e.g. the paired differences d_s of the seeds run so far; the interval is for the
    difference of one new seed. It is wider than :func:`mean_interval`'s by sqrt(n + 1): a mean
    of n values varies less than one value. n = 1: [NaN, NaN]; s = 0: [x̄, x̄].
    """
    return _t_interval(_vector(x, "prediction_interval"), confidence, new_value=True)


def _t_interval(x: np.ndarray, confidence: float, new_value: bool) -> Interval:
    n, m = len(x), float(np.mean(x)) if len(x) else math.nan
    if n < 2:
        return Interval(m, math.nan, math.nan, n, over=VALUES)
    s = sd(x)
    if s == 0:
        return Interval(m, m, m, n, over=VALUES)
    scale = s * math.sqrt(1 + 1 / n) if new_value else s / math.sqrt(n)
    low, high = _st.t.interval(confidence, n - 1, loc=m, scale=scale)
    return Interval(m, float(low), float(high), n, over=VALUES)


def paired_difference(a, b, confidence: float = 0.95) -> Interval:
    """The paired t interval of the mean difference d = a - b (``scipy.stats.ttest_rel``).

    a_s and b_s are the results of two variants for the same seed s (same initialisation
    stream, same batches). With d_s = a_s - b_s, d̄ = mean_s d_s and s_d = :func:`sd` (d):

        d̄ ± t_{(1+γ)/2, n-1} s_d / sqrt(n),      γ = ``confidence``

    Pairs where a or b is NaN are left out (``dropped``); ``n`` counts the pairs used. n = 1: the
    interval is [NaN, NaN] (no spread to estimate); s_d = 0: [d̄, d̄]. ``over`` = :data:`SEEDS`.
    """
    a, b = _vector(a, "paired_difference(a)"), _vector(b, "paired_difference(b)")
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: a and b must pair up, got {len(a)} and {len(b)} values")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b, dropped = a[keep], b[keep], int((~keep).sum())
    d = a - b
    n = len(d)
    m = float(np.mean(d)) if n else math.nan
    if n < 2:
        return Interval(m, math.nan, math.nan, n, dropped, SEEDS)
    if np.ptp(d) == 0:
        return Interval(m, m, m, n, dropped, SEEDS)
    ci = _st.ttest_rel(a, b).confidence_interval(confidence)
    return Interval(m, float(ci.low), float(ci.high), n, dropped, SEEDS)


def bootstrap_difference(ap_a, ap_b, confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0,
                         method: str = "BCa") -> Interval:
    """Bootstrap interval over queries of mean_j (AP_a,j - AP_b,j) (``scipy.stats.bootstrap``).

    ``ap_a``, ``ap_b``: per-query AP of two models on the same queries (``all_AP`` of
    ``rrid.metrics.evaluate_ranking``; NaN where a query was skipped, left out and counted in
    ``dropped``). The queries are resampled with replacement, the same j for both models
    (``paired=True``), ``n_resamples`` times, and the statistic mean_j (AP_a,j - AP_b,j) gives the
    ``method`` ("BCa" or "percentile") interval. This is the spread due to *which queries* the
    test split holds, for these two trained models (``over`` = :data:`QUERIES`); the
    seed-to-seed spread is :func:`paired_difference`'s. The resampling is drawn from
    ``numpy.random.default_rng(seed)``: one seed, one interval.
    """
    a, b = _vector(ap_a, "bootstrap_difference(ap_a)"), _vector(ap_b, "bootstrap_difference(ap_b)")
    if a.shape != b.shape:
        raise ValueError(f"bootstrap_difference: expected one AP per query for both models, got {len(a)} and {len(b)}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b, dropped = a[keep], b[keep], int((~keep).sum())
    n = len(a)
    m = float(np.mean(a - b)) if n else math.nan
    if n < 2:
        return Interval(m, math.nan, math.nan, n, dropped, QUERIES)
    if np.ptp(a - b) == 0:
        return Interval(m, m, m, n, dropped, QUERIES)

    def mean_difference(x, y, axis):
        return np.mean(x - y, axis=axis)

    res = _st.bootstrap((a, b), mean_difference, paired=True, vectorized=True, confidence_level=confidence,
                        n_resamples=n_resamples, method=method, rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return Interval(m, float(ci.low), float(ci.high), n, dropped, QUERIES)


def seeds_for_half_width(sd_d: float, goal: float, confidence: float = 0.95, most: int = 1000) -> int:
    """The fewest seeds n (>= 2) whose paired t interval has a half-width of at most ``goal``
    when the differences have the standard deviation ``sd_d``:

        min { n >= 2 :  t_{(1+γ)/2, n-1} sd_d / sqrt(n) <= goal }

    (the planning formula behind :func:`paired_difference`; ``sd_d`` is estimated, so the answer
    is too). sd_d = 0 needs 2 (the fewest with a spread); a goal not met by ``most`` seeds is a
    ``ValueError``.
    """
    if not (sd_d >= 0 and goal > 0):
        raise ValueError(f"seeds_for_half_width: expected sd_d >= 0 and goal > 0, got {sd_d!r} and {goal!r}")
    for n in range(2, most + 1):
        if _st.t.ppf((1 + confidence) / 2, n - 1) * sd_d / math.sqrt(n) <= goal:
            return n
    raise ValueError(f"seeds_for_half_width: more than {most} seeds for a half-width of {goal} at sd {sd_d}")


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


def verdict(interval, paper_difference: float) -> Verdict:
    """What an interval of A - B says about the paper's A - B, P = ``paper_difference`` (non-zero).

    ``interval``: an :class:`Interval` of a difference (over seeds or queries) or a (low, high)
    pair (read as over seeds). "Contains" includes the ends. Written for P > 0 (for P < 0 every
    comparison flips, "at most" becomes "at least"):

    ============  ==========================  =============================================
    category      the interval [low, high]    words (X: the bound the words state)
    ============  ==========================  =============================================
    AGREES        low > 0, contains P         "agrees with the paper"
    SMALLER       low > 0, high < P           "agrees in sign, smaller than the paper's
                                              (at most X)", X = high
    LARGER        low > P                     "... larger than the paper's (at least X)",
                                              X = low
    CONTRADICTS   high < 0                    "contradicts the paper (at most X)", X = high
    NO_EFFECT     contains 0, high < P        "no effect of the paper's size here
                                              (at most X)", X = high
    CANNOT_TELL   contains 0 and P, or NaN    "cannot tell at this power"
    ============  ==========================  =============================================

    "Excludes 0" at confidence γ is a two-sided test of "no difference" at level 1 - γ, and
    "lies short of P" one of "a difference of P"; NO_EFFECT says the data rule out the paper's
    size (not that the difference is 0), CANNOT_TELL that they rule out neither. Over
    :data:`QUERIES` (one pair of trained models, a bootstrap over the test queries) the same
    categories get words about those two models on these queries (``Verdict.text``).
    """
    low, high = (interval.low, interval.high) if hasattr(interval, "low") else interval
    over = getattr(interval, "over", SEEDS)
    if over == VALUES:
        raise ValueError("verdict: expected an interval of a difference (paired_difference, bootstrap_difference), "
                         "got the interval of a mean")
    if not paper_difference or math.isnan(paper_difference):
        raise ValueError(f"verdict: paper_difference={paper_difference!r}; expected the paper's non-zero A - B")
    if math.isnan(low) or math.isnan(high):
        return Verdict(CANNOT_TELL, math.nan, paper_difference, over)
    if low > high:
        raise ValueError(f"verdict: interval ({low}, {high}) has low > high")
    sign = 1.0 if paper_difference > 0 else -1.0      # in the paper's direction: near < far
    near, far = sorted((sign * low, sign * high))
    p = sign * paper_difference
    if far < 0:
        return Verdict(CONTRADICTS, sign * far, paper_difference, over)
    if near > p:
        return Verdict(LARGER, sign * near, paper_difference, over)
    if far < p:
        return Verdict(SMALLER if near > 0 else NO_EFFECT, sign * far, paper_difference, over)
    if near > 0:
        return Verdict(AGREES, math.nan, paper_difference, over)
    return Verdict(CANNOT_TELL, math.nan, paper_difference, over)
