"""rrid.metrics: the counting evaluator equals the sorting reference; hand-made values."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from rrid.metrics import (compare_protocols, cuhk03_single_shot, evaluate_ranking, evaluate_ranking_reference,
                          ranking_metrics)


def assert_same(a, b):
    """mAP, mINP, CMC and AP are ratios of match counts, in [0, 1]: the two evaluators rank the
    same way and differ only in the order of float64 additions (~1e-15). 1e-6 of the range is
    far above that and far below the smallest real change (one match moved by one rank among
    at most 60 gallery images changes an AP by > 1e-4)."""
    assert a["num_valid_queries"] == b["num_valid_queries"]
    assert a["num_skipped_queries"] == b["num_skipped_queries"]
    assert abs(a["mAP"] - b["mAP"]) <= 1e-6
    assert abs(a["mINP"] - b["mINP"]) <= 1e-6
    np.testing.assert_allclose(a["cmc"], b["cmc"], atol=1e-6)
    np.testing.assert_allclose(a["all_AP"], b["all_AP"], atol=1e-6)


@st.composite
def problems(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    nq, ng = draw(st.integers(1, 12)), draw(st.integers(1, 60))
    npid, ncam = draw(st.integers(1, 8)), draw(st.integers(1, 4))
    q_pids = rng.integers(1, npid + 1, nq)
    g_pids = rng.integers(0, npid + 2, ng)  # 0: distractors; npid + 1: never a query
    q_cams, g_cams = rng.integers(0, ncam, nq), rng.integers(0, ncam, ng)
    if draw(st.booleans()):  # integer-valued distances: many ties
        d = rng.integers(0, draw(st.integers(1, 5)), (nq, ng)).astype(np.float32)
    else:
        d = rng.standard_normal((nq, ng)).astype(draw(st.sampled_from([np.float32, np.float64])))
    return d, q_pids, g_pids, q_cams, g_cams


@settings(max_examples=300, deadline=None)
@given(problems(), st.integers(1, 6), st.integers(1, 20))
def test_counting_equals_reference(problem, chunk, max_rank):
    try:
        ref = evaluate_ranking_reference(*problem, max_rank=max_rank)
    except ValueError:
        with pytest.raises(ValueError, match="no query has a match"):
            evaluate_ranking(*problem, max_rank=max_rank, chunk=chunk)
        return
    assert_same(evaluate_ranking(*problem, max_rank=max_rank, chunk=chunk), ref)


def test_market_like_problem_equals_reference():
    rng = np.random.default_rng(0)
    q_pids, g_pids = np.repeat(np.arange(1, 41), 3), np.concatenate([np.repeat(np.arange(1, 41), 12), np.zeros(300, int)])
    q_cams, g_cams = rng.integers(0, 6, len(q_pids)), rng.integers(0, 6, len(g_pids))
    d = rng.random((len(q_pids), len(g_pids)), dtype=np.float32)
    d[:, 5] = d[:, 7]  # exact ties between entries of the same row
    assert_same(evaluate_ranking(d, q_pids, g_pids, q_cams, g_cams),
                evaluate_ranking_reference(d, q_pids, g_pids, q_cams, g_cams))


def test_match_tied_with_non_match_and_removed_entries():
    # query pid 1, cam 0; many exact ties at 0.5 between matches, removed entries, others
    g_pids = np.array([1, 2, 1, 1, 3, 1, 0, 1, 2, 1])
    g_cams = np.array([1, 1, 0, 2, 1, 0, 1, 3, 1, 1])
    d = np.array([[0.5, 0.5, 0.5, 0.2, 0.5, 0.5, 0.1, 0.5, 0.9, 0.5]], dtype=np.float32)
    for dm in (d, d.astype(np.float64), -d, np.zeros_like(d)):
        for chunk in (None, 1):
            assert_same(evaluate_ranking(dm, [1], g_pids, [0], g_cams, max_rank=5, chunk=chunk),
                        evaluate_ranking_reference(dm, [1], g_pids, [0], g_cams, max_rank=5))


def test_hand_made_ranking():
    # one query (pid 1, cam 0); gallery sorted by distance already:
    # rank:     0  1  2  3  4  5
    # pid:      2  1  1* 3  1  2    (* same camera as the query: removed)
    # cleaned:  2  1  3  1  2       -> matches at 0-based ranks 1 and 3
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    g_pids, g_cams = np.array([2, 1, 1, 3, 1, 2]), np.array([1, 1, 0, 1, 2, 1])
    m = evaluate_ranking(d, [1], g_pids, [0], g_cams, max_rank=4)
    ap = (1 / 2 + 2 / 4) / 2
    assert m["mAP"] == pytest.approx(ap)
    assert m["mINP"] == pytest.approx(2 / 4)
    np.testing.assert_allclose(m["cmc"], [0, 1, 1, 1])
    assert m["num_valid_queries"] == 1 and m["num_skipped_queries"] == 0


def test_ties_are_broken_by_gallery_index():
    # all distances equal: the ranking is the gallery order
    g_pids, g_cams = np.array([5, 1, 5, 1]), np.array([1, 1, 1, 1])
    m = evaluate_ranking(np.zeros((1, 4)), [1], g_pids, [0], g_cams, max_rank=4)
    assert m["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    np.testing.assert_allclose(m["cmc"], [0, 1, 1, 1])
    # the gallery reversed: matches at ranks 0 and 2
    m = evaluate_ranking(np.zeros((1, 4)), [1], g_pids[::-1], [0], g_cams, max_rank=4)
    assert m["mAP"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    np.testing.assert_allclose(m["cmc"], [1, 1, 1, 1])


def test_skipped_queries_and_torch_inputs():
    d = torch.tensor([[0.3, 0.1], [0.2, 0.4]])
    m = evaluate_ranking(d, torch.tensor([1, 7]), torch.tensor([1, 2]), torch.tensor([0, 0]), torch.tensor([1, 1]))
    assert m["num_valid_queries"] == 1 and m["num_skipped_queries"] == 1
    assert m["mAP"] == pytest.approx(0.5) and np.isnan(m["all_AP"][1])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="g_pids"):
        evaluate_ranking(np.zeros((2, 3)), [1, 2], [1, 2], [0, 0], [0, 0, 0])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_ranking(np.full((1, 1), np.nan), [1], [1], [0], [1])


def test_cuhk03_single_shot_reproducible():
    rng = np.random.default_rng(0)
    q_pids, g_pids = np.arange(30), np.repeat(np.arange(30), 5)
    q_cams, g_cams = np.zeros(30, int), np.ones(150, int)
    d = rng.random((30, 150))
    a = cuhk03_single_shot(d, q_pids, g_pids, q_cams, g_cams, repeats=5, seed=1)
    b = cuhk03_single_shot(d, q_pids, g_pids, q_cams, g_cams, repeats=5, seed=1)
    c = cuhk03_single_shot(d, q_pids, g_pids, q_cams, g_cams, repeats=5, seed=2)
    np.testing.assert_array_equal(a["cmc"], b["cmc"])
    assert not np.array_equal(a["cmc"], c["cmc"])
    assert a["cmc"][-1] == 1.0 and a["num_valid_queries"] == 30
    # one image per identity: with the query's images all nearest, rank-1 is 1
    d2 = np.where(g_pids[None] == q_pids[:, None], 0.0, 1.0) + 0.01 * d
    assert cuhk03_single_shot(d2, q_pids, g_pids, q_cams, g_cams, seed=3)["cmc"][0] == 1.0


# Two queries on one gallery where the two CMCs differ in ways worked out by hand.
#   gallery:  g0 pid 2 cam 0 | g1 pid 3 cam 1 | g2 pid 3 cam 1 | g3 pid 1 cam 1 | g4 pid 4 cam 1
#             g5 pid 4 cam 0 | g6 pid 1 cam 0
#   query A (pid 1, cam 0): g6 g0 g1 g2 g3 g4 g5 in distance order
#     Market: g6 removed (same pid, same cam); g0 g1 g2 g3* g4 g5 -> match at rank 3, AP 1/4
#     single shot, separate cameras: g0 g5 g6 dropped; g1|g2 g3* g4 -> rank 1 whichever pid-3 image is drawn
#     single shot, same-pid-same-cam removal only: g0 g1|g2 g3* ... -> rank 2
#   query B (pid 4, cam 0): g0 g4 g1 g2 g3 g6 g5
#     Market: g5 removed; g0 g4* ... -> rank 1, AP 1/2
#     single shot, separate cameras: g4* first -> rank 0;  same-pid-same-cam only: g0 g4* -> rank 1
G_PIDS, G_CAMS = np.array([2, 3, 3, 1, 4, 4, 1]), np.array([0, 1, 1, 1, 1, 0, 0])
Q_PIDS, Q_CAMS = np.array([1, 4]), np.array([0, 0])


def _distances():
    order_a, order_b = [6, 0, 1, 2, 3, 4, 5], [0, 4, 1, 2, 3, 6, 5]
    d = np.zeros((2, 7))
    for q, order in enumerate((order_a, order_b)):
        d[q, order] = np.arange(1, 8) / 10  # the k-th nearest at distance k / 10
    return d


def test_compare_protocols_on_a_hand_made_example():
    both = compare_protocols(_distances(), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=4)
    market, single = both["market"], both["cuhk03_single_shot"]
    assert market["mAP"] == pytest.approx((1 / 4 + 1 / 2) / 2)
    np.testing.assert_allclose(market["cmc"], [0, 1 / 2, 1 / 2, 1])       # ranks 3 and 1
    np.testing.assert_allclose(single["cmc"], [1 / 2, 1, 1, 1])           # ranks 1 and 0, in every draw
    assert single["mean_reciprocal_rank"] == pytest.approx((1 / 2 + 1) / 2)
    assert both["rank1"] == {"market": 0.0, "cuhk03_single_shot": 0.5}
    legacy_without_separate = cuhk03_single_shot(_distances(), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=4,
                                                 separate_cameras=False)
    np.testing.assert_allclose(legacy_without_separate["cmc"], [0, 1 / 2, 1, 1])  # ranks 2 and 1


def test_ranking_metrics_follows_the_config_metric():
    d = _distances()
    m = ranking_metrics(d, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, metric="market", max_rank=4)
    assert m["metric"] == "market" and "cmc_market" not in m
    np.testing.assert_allclose(m["cmc"], [0, 1 / 2, 1 / 2, 1])
    c = ranking_metrics(d, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, metric="cuhk03_single_shot", max_rank=4)
    assert c["metric"] == "cuhk03_single_shot" and c["mAP"] == m["mAP"] and c["mINP"] == m["mINP"]
    np.testing.assert_allclose(c["cmc"], [1 / 2, 1, 1, 1])
    np.testing.assert_allclose(c["cmc_market"], m["cmc"])
    with pytest.raises(ValueError, match="ranking metric 'cuhk03'"):
        ranking_metrics(d, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, metric="cuhk03")


def test_cuhk03_single_shot_draws_one_image_per_identity_uniformly():
    # cleaned ranking 3a 1a 3b 1b: the match is first only when 1a and 3b are drawn, P = 1/4;
    # otherwise it is second. Over n draws the rank-1 count is Binomial(n, 1/4): 4 standard
    # deviations, sqrt(n p (1 - p)) / n, bound it with a false-alarm rate below 1e-4.
    d = np.array([[0.1, 0.2, 0.3, 0.4]])
    n = 4000
    m = cuhk03_single_shot(d, [1], [3, 1, 3, 1], [0], [1, 1, 1, 1], max_rank=3, repeats=n, seed=0)
    assert abs(m["cmc"][0] - 0.25) <= 4 * np.sqrt(0.25 * 0.75 / n)
    np.testing.assert_array_equal(m["cmc"][1:], [1, 1])
