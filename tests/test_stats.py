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


# ----------------------------------------------------------------------------- verdicts

P = +3.0
# (low, high) against the paper's +3.0: the category and the bound the words state (None: none)
VERDICT_CASES = [
    ((0.2, 3.0), stats.AGREES, None),             # contains P: the end P counts as inside
    ((3.0, 4.0), stats.AGREES, None),             # low = P: still contains it
    ((0.2, 5.0), stats.AGREES, None),
    ((0.2, 2.99), stats.SMALLER, 2.99),           # above 0, short of P
    ((3.01, 4.0), stats.LARGER, 3.01),            # beyond P
    ((-1.8, -0.2), stats.CONTRADICTS, -0.2),
    ((-1.0, 2.9), stats.NO_EFFECT, 2.9),          # contains 0, short of P
    ((0.0, 1.0), stats.NO_EFFECT, 1.0),           # touching 0 does not exclude it
    ((-1.0, 0.0), stats.NO_EFFECT, 0.0),          # touching 0 from below: not a contradiction
    ((0.0, 3.0), stats.CANNOT_TELL, None),        # contains both 0 and P
    ((-1.0, 4.0), stats.CANNOT_TELL, None),
    ((2.0, 2.0), stats.SMALLER, 2.0),             # a degenerate interval (no spread)
]


@pytest.mark.parametrize("interval, category, bound", VERDICT_CASES)
def test_verdict_categories_and_their_ends(interval, category, bound):
    v = stats.verdict(interval, P)
    assert v.category == category and v.paper == P and v.over == stats.SEEDS
    assert (math.isnan(v.bound) if bound is None else v.bound == bound)


@pytest.mark.parametrize("interval, category, bound", VERDICT_CASES)
def test_verdict_of_a_negative_paper_difference_is_the_mirror_image(interval, category, bound):
    low, high = interval
    v = stats.verdict((-high, -low), -P)
    assert v.category == category
    assert (math.isnan(v.bound) if bound is None else v.bound == -bound)


def test_verdict_words_state_the_bound_with_its_direction():
    PD = stats.PairedDifference
    # the book's cases: 5 - 4 is +0.10 [-0.11, +0.30] against the paper's +3.0
    assert str(stats.verdict(PD(0.10, -0.11, 0.30, 5), 3.0)) == "no effect of the paper's size here (at most +0.30)"
    assert stats.verdict((6.75, 7.15), 8.4).text == "agrees in sign, smaller than the paper's (at most +7.15)"
    assert stats.verdict((24.94, 26.41), 20.2).text == "agrees in sign, larger than the paper's (at least +24.94)"
    assert stats.verdict((-0.62, -0.09), 0.8).text == "contradicts the paper (at most -0.09)"
    assert stats.verdict((0.60, 2.61), 1.5).text == "agrees with the paper"
    assert stats.verdict((-0.13, 1.95), 0.9).text == "cannot tell at this power"
    # a negative paper difference: the bounds point the other way
    assert stats.verdict((-0.30, 0.50), -0.8).text == "no effect of the paper's size here (at least -0.30)"
    assert stats.verdict((-2.0, -1.2), -0.8).text == "agrees in sign, larger than the paper's (at most -1.20)"
    assert stats.verdict((0.1, 0.4), -0.8).text == "contradicts the paper (at least +0.10)"
    assert f"{stats.verdict((0.2, 1.0), 3.0)}" == "agrees in sign, smaller than the paper's (at most +1.00)"


def test_verdict_over_queries_speaks_of_the_two_trained_models():
    boot = stats.BootstrapDifference(-0.5, -1.0, -0.1, 600, 0, stats.QUERIES)
    v = stats.verdict(boot, -2.0)
    assert v.category == stats.SMALLER and v.over == stats.QUERIES and v.bound == -1.0
    assert v.text == ("on these queries the two trained models differ in the paper's direction, by less than it "
                      "reports (at least -1.00)")
    seed_words = {stats.verdict(c, P).text.split(" (")[0] for c, _, _ in VERDICT_CASES}
    query_words = {stats.verdict(stats.Interval(0, *c, 9, over=stats.QUERIES), P).text.split(" (")[0]
                   for c, _, _ in VERDICT_CASES}
    assert len(query_words) == len(stats.VERDICTS) and not seed_words & query_words   # words of their own
    assert all("trained models" in w for w in query_words)


def test_verdict_undefined_and_bad_input():
    nan = stats.verdict(stats.PairedDifference(2.0, math.nan, math.nan, 1), +3.0)
    assert nan.category == stats.CANNOT_TELL and math.isnan(nan.bound) and nan.text == stats.CANNOT_TELL
    for paper in (0.0, math.nan):
        with pytest.raises(ValueError, match="paper_difference"):
            stats.verdict((0.2, 1.0), paper)
    with pytest.raises(ValueError, match="low > high"):
        stats.verdict((1.0, 0.2), 3.0)
    with pytest.raises(ValueError, match="interval of a mean"):
        stats.verdict(stats.mean_interval([1.0, 2.0, 3.0]), 3.0)
    assert len(set(stats.VERDICTS)) == 6


# ----------------------------------------------------------------------------- one shape, planning


def test_every_interval_has_one_shape():
    pd = stats.paired_difference([3.0, np.nan, 5.0, 6.0], [1.0, 2.0, 3.0, 4.0])
    boot = stats.bootstrap_difference([0.5, 0.7, np.nan], [0.4, 0.5, 0.1])
    mean = stats.mean_interval([1.0, 2.0, 4.0])
    assert type(pd) is type(boot) is type(mean) is stats.Interval
    assert stats.PairedDifference is stats.BootstrapDifference is stats.MeanInterval is stats.Interval
    assert (pd.n, pd.dropped, pd.over) == (3, 1, stats.SEEDS)
    assert (boot.n, boot.dropped, boot.over) == (2, 1, stats.QUERIES)
    assert (mean.n, mean.dropped, mean.over) == (3, 0, stats.VALUES)
    assert stats.PairedDifference(1.0, 0.0, 3.0, 4).half_width == 1.5


def test_prediction_interval_is_wider_by_sqrt_n_plus_1():
    x = np.array([0.3, -0.1, 0.2, 0.05, 0.15])
    got = stats.prediction_interval(x)
    s, n = x.std(ddof=1), len(x)
    # t_{0.975, 4} = 2.776 (table): x̄ ± t s sqrt(1 + 1/n)
    assert got.mean == pytest.approx(x.mean(), abs=1e-12)
    assert got.half_width == pytest.approx(2.776 * s * math.sqrt(1 + 1 / n), rel=3e-4)
    assert got.half_width / stats.mean_interval(x).half_width == pytest.approx(math.sqrt(n + 1), rel=1e-12)
    assert math.isnan(stats.prediction_interval([1.0]).low)
    flat = stats.prediction_interval([2.0, 2.0, 2.0])
    assert (flat.low, flat.high) == (2.0, 2.0)


def test_prediction_interval_covers_new_draws_at_its_level():
    # 4,000 samples of 5 normal values, each with one more draw: the 95 % interval covers about 95 %
    rng = np.random.default_rng(0)
    draws = rng.normal(1.0, 0.3, (4000, 6))
    covered = np.mean([(lambda p: p.low <= row[5] <= p.high)(stats.prediction_interval(row[:5])) for row in draws])
    assert abs(covered - 0.95) < 0.02          # binomial sd of the rate: sqrt(.95 * .05 / 4000) = 0.0034


def test_seeds_for_half_width_is_the_first_n_that_reaches_the_goal():
    # sd 1, goal 1.5: n = 4 gives t_{0.975,3} / 2 = 3.182 / 2 = 1.59 (too wide), n = 5: 2.776 / sqrt(5) = 1.24
    assert stats.seeds_for_half_width(1.0, 1.5) == 5
    for sd_d, goal in [(0.3, 1.5), (2.0, 1.0), (0.5, 0.2)]:
        n = stats.seeds_for_half_width(sd_d, goal)
        half = lambda m: st.t.ppf(0.975, m - 1) * sd_d / math.sqrt(m)   # noqa: E731
        assert half(n) <= goal and (n == 2 or half(n - 1) > goal)
    assert stats.seeds_for_half_width(0.0, 1.5) == 2
    with pytest.raises(ValueError, match="goal"):
        stats.seeds_for_half_width(1.0, 0.0)
    with pytest.raises(ValueError, match="more than 10 seeds"):
        stats.seeds_for_half_width(10.0, 0.1, most=10)
