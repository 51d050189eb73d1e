"""rrid.stats against scipy, against printed t tables and hand-computed examples."""

import math

import numpy as np
import pytest
from scipy import stats as st

from rrid import stats

# Two-sided 95 % t quantiles t_{0.975, df} as printed in statistics tables (3 decimals).
T_TABLE = {1: 12.706, 2: 4.303, 4: 2.776, 9: 2.262, 19: 2.093}


def test_sd_is_ddof_1_and_nan_for_one_value():
    x = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]           # sum of squares about the mean 5: 32
    assert stats.sd(x) == pytest.approx(math.sqrt(32 / 7), rel=1e-12)
    assert math.isnan(stats.sd([3.0]))


def test_paired_difference_hand_example():
    # d = a - b = (1, 2, 3): mean 2, s_d = 1, n = 3; t_{0.975, 2} = 4.303 (table)
    a, b = [11.0, 12.5, 14.0], [10.0, 10.5, 11.0]
    d = stats.paired_difference(a, b)
    assert d.n == 3 and d.mean == pytest.approx(2.0, abs=1e-12)
    half = 4.303 * 1.0 / math.sqrt(3)
    assert d.low == pytest.approx(2 - half, abs=1e-3) and d.high == pytest.approx(2 + half, abs=1e-3)
    assert d.half_width == pytest.approx(half, abs=1e-3)


@pytest.mark.parametrize("n", sorted(T_TABLE))
def test_paired_difference_uses_the_t_quantile_of_the_table(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(50, 3, n + 1), rng.normal(49, 3, n + 1)
    d = a - b
    got = stats.paired_difference(a, b)
    half = T_TABLE[n] * np.std(d, ddof=1) / math.sqrt(n + 1)
    # the table's 3 decimals: relative error below 0.5e-3 / 2.0
    assert got.half_width == pytest.approx(half, rel=3e-4)
    assert got.mean == pytest.approx(d.mean(), abs=1e-12)


def test_paired_difference_matches_scipy_and_other_levels():
    rng = np.random.default_rng(0)
    a, b = rng.normal(60, 2, 10), rng.normal(59, 2, 10)
    for conf in (0.9, 0.95, 0.99):
        ci = st.ttest_rel(a, b).confidence_interval(conf)
        got = stats.paired_difference(a, b, confidence=conf)
        assert (got.low, got.high) == pytest.approx((ci.low, ci.high), abs=1e-12)
        # and the same interval from the t distribution directly
        d = a - b
        lo, hi = st.t.interval(conf, len(d) - 1, loc=d.mean(), scale=st.sem(d))
        assert (got.low, got.high) == pytest.approx((lo, hi), abs=1e-10)


def test_paired_difference_edge_cases():
    one = stats.paired_difference([3.0], [1.0])
    assert one.mean == 2.0 and one.n == 1 and math.isnan(one.low) and math.isnan(one.high)
    flat = stats.paired_difference([3.0, 4.0, 5.0], [1.0, 2.0, 3.0])   # d = 2 every time
    assert (flat.mean, flat.low, flat.high, flat.n) == (2.0, 2.0, 2.0, 3)
    nan = stats.paired_difference([3.0, np.nan, 5.0, 6.0], [1.0, 2.0, np.nan, 3.0])
    assert nan.n == 2 and nan.mean == pytest.approx(2.5)
    with pytest.raises(ValueError, match="pair up"):
        stats.paired_difference([1.0, 2.0], [1.0])


def test_mean_interval_matches_scipy_t_interval():
    x = np.array([48.1, 50.3, 49.7, 51.2, 47.9])
    got = stats.mean_interval(x)
    lo, hi = st.t.interval(0.95, 4, loc=x.mean(), scale=x.std(ddof=1) / math.sqrt(5))
    assert (got.low, got.high) == pytest.approx((lo, hi), abs=1e-10)
    assert got.half_width == pytest.approx(2.776 * x.std(ddof=1) / math.sqrt(5), rel=3e-4)
    assert math.isnan(stats.mean_interval([1.0]).low)


def test_bootstrap_difference_is_reproducible_and_matches_scipy():
    rng = np.random.default_rng(1)
    ap_b = rng.uniform(0.2, 1.0, 300)
    ap_a = np.clip(ap_b + rng.normal(0.02, 0.05, 300), 0, 1)
    ap_a[[5, 17]] = np.nan                                    # skipped queries: NaN in both
    ap_b[[5, 17]] = np.nan
    one = stats.bootstrap_difference(ap_a, ap_b, seed=3)
    two = stats.bootstrap_difference(ap_a, ap_b, seed=3)
    assert one == two                                          # one seed, one interval
    assert one.n == 298 and one.dropped == 2
    keep = ~np.isnan(ap_a)
    ref = st.bootstrap((ap_a[keep], ap_b[keep]), lambda x, y, axis: np.mean(x - y, axis=axis), paired=True,
                       vectorized=True, n_resamples=9999, rng=np.random.default_rng(3))
    assert (one.low, one.high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), abs=1e-12)
    assert one.mean == pytest.approx(np.mean(ap_a[keep] - ap_b[keep]), abs=1e-12)
    # the bootstrap interval of a mean is close to the normal one, mean ± 1.96 s / sqrt(n)
    d = ap_a[keep] - ap_b[keep]
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    assert one.half_width == pytest.approx(half, rel=0.15)     # resampling error of 9,999 draws
    assert one.low < one.mean < one.high


def test_bootstrap_difference_edge_cases():
    same = stats.bootstrap_difference([0.5, 0.7, 0.9], [0.4, 0.6, 0.8])   # d = 0.1 for every query
    assert same.low == pytest.approx(0.1) and same.high == pytest.approx(0.1) and same.n == 3
    one = stats.bootstrap_difference([0.5, np.nan], [0.4, np.nan])
    assert one.n == 1 and one.dropped == 1 and math.isnan(one.low)


def test_spearman_matches_scipy_and_a_hand_value():
    # ranks (1, 2, 3, 4, 5) vs (2, 1, 4, 3, 5): sum d^2 = 4, rho = 1 - 6*4 / (5*24) = 0.8
    r = stats.spearman([10, 20, 30, 40, 50], [2.0, 1.0, 4.0, 3.0, 5.0])
    assert r.rho == pytest.approx(0.8, abs=1e-12) and r.n == 5
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=13), rng.normal(size=13)
    ref = st.spearmanr(a, b)
    assert (stats.spearman(a, b).rho, stats.spearman(a, b).pvalue) == pytest.approx((ref.statistic, ref.pvalue))
    # ties share their mean rank: (1, 2.5, 2.5, 4) against (1, 2, 3, 4)
    assert stats.spearman([1, 2, 2, 3], [1, 2, 3, 4]).rho == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])


def test_verdict():
    PD = stats.PairedDifference
    assert stats.verdict(PD(1.0, 0.2, 1.8, 5), +3.0) == stats.AGREES
    assert stats.verdict(PD(-1.0, -1.8, -0.2, 5), +3.0) == stats.CONTRADICTS
    assert stats.verdict(PD(-1.0, -1.8, -0.2, 5), -0.8) == stats.AGREES
    assert stats.verdict(PD(0.5, -0.3, 1.3, 5), +3.0) == stats.CANNOT_TELL
    assert stats.verdict((0.0, 1.0), +3.0) == stats.CANNOT_TELL          # touching 0 does not exclude it
    assert stats.verdict(PD(2.0, math.nan, math.nan, 1), +3.0) == stats.CANNOT_TELL
    with pytest.raises(ValueError, match="paper_difference"):
        stats.verdict((0.2, 1.0), 0.0)
