"""rrid.retrieval: top-k under the Market-1501 protocol, rank-1 correctness and the query picker."""

import numpy as np
import pytest
import torch

from rrid.evaluation import Features
from rrid.retrieval import Ranking, pick_queries, rank, rank1_correct, top_k


def meta(pids, camids):
    return Features(torch.empty(len(pids), 0), np.asarray(pids), np.asarray(camids), [f"img{i}" for i in range(len(pids))])


def top_k_by_hand(d, q_pid, q_cam, g_pids, g_cams, k):
    ranked = sorted(range(len(d)), key=lambda g: (d[g], g))  # distance, then gallery index
    kept = [g for g in ranked if not (g_pids[g] == q_pid and g_cams[g] == q_cam)]
    return kept[:k], [g_pids[g] == q_pid for g in kept[:k]]


def random_ranking(seed, Q=12, G=30, ids=5):
    rng = np.random.default_rng(seed)
    q_pids, g_pids = rng.integers(0, ids, Q), rng.integers(0, ids, G)
    q_cams, g_cams = rng.integers(0, 3, Q), rng.integers(0, 3, G)
    d = rng.integers(0, 6, (Q, G)).astype(np.float32)  # many ties: the order must break them by index
    return Ranking(torch.from_numpy(d), meta(q_pids, q_cams), meta(g_pids, g_cams))


def test_top_k_follows_the_protocol_with_ties():
    for seed in range(5):
        r = random_ranking(seed)
        d = r.distmat.numpy()
        for q in range(d.shape[0]):
            order, matches = top_k(r, q, 7)
            expected = top_k_by_hand(d[q], r.query.pids[q], r.query.camids[q], r.gallery.pids, r.gallery.camids, 7)
            assert order.tolist() == expected[0] and matches.tolist() == expected[1]


def test_rank1_correct_and_valid_by_hand():
    r = random_ranking(0)
    other = Ranking(-r.distmat, r.query, r.gallery)  # the reversed ranking
    correct, valid = rank1_correct({"a": r, "b": other})
    d = r.distmat.numpy()
    for q in range(d.shape[0]):
        args = (r.query.pids[q], r.query.camids[q], r.gallery.pids, r.gallery.camids, 1)
        assert correct[q, 0] == bool(top_k_by_hand(d[q], *args)[1][:1] == [True])
        assert correct[q, 1] == bool(top_k_by_hand(-d[q], *args)[1][:1] == [True])
        has_match = any(r.gallery.pids[g] == r.query.pids[q] and r.gallery.camids[g] != r.query.camids[q]
                        for g in range(d.shape[1]))
        assert valid[q] == has_match
    assert not (correct & ~valid[:, None]).any()


def test_pick_queries_takes_disagreements_from_every_side():
    # 8 queries, gallery: for query q, gallery 2q is its match (other camera), 2q+1 a stranger.
    Q = 8
    q_pids, g_pids = np.arange(Q), np.repeat(np.arange(Q), 2)
    g_pids[1::2] = 100 + np.arange(Q)
    q_cams, g_cams = np.zeros(Q, int), np.ones(2 * Q, int)
    a_right = np.array([1, 1, 0, 0, 1, 0, 1, 1], bool)  # model a's rank-1 is the match
    b_right = np.array([1, 0, 1, 0, 0, 1, 1, 1], bool)
    q_pids[7] = 50  # query 7 has no match in the gallery: never picked as a disagreement

    def distances(right):
        d = np.full((Q, 2 * Q), 5.0)
        d[np.arange(Q), 2 * np.arange(Q)] = np.where(right, 1.0, 2.0)
        d[np.arange(Q), 2 * np.arange(Q) + 1] = np.where(right, 2.0, 1.0)
        return torch.from_numpy(d)

    rankings = {"a": Ranking(distances(a_right), meta(q_pids, q_cams), meta(g_pids, g_cams)),
                "b": Ranking(distances(b_right), meta(q_pids, q_cams), meta(g_pids, g_cams))}
    correct, valid = rank1_correct(rankings)
    assert correct[:7].tolist() == np.stack([a_right, b_right], 1)[:7].tolist() and not valid[7]
    a_only, b_only = {1, 4}, {2, 5}
    for seed in range(6):
        picked = pick_queries(rankings, count=2, seed=seed)
        assert picked == sorted(picked) and len(picked) == 2
        assert len(set(picked) & a_only) == 1 and len(set(picked) & b_only) == 1  # one of each direction
    assert pick_queries(rankings, count=4, seed=3) == [1, 2, 4, 5]
    assert pick_queries(rankings, count=2, seed=1) == pick_queries(rankings, count=2, seed=1)
    more = pick_queries(rankings, count=6, seed=0)  # the 4 disagreements, then 2 of the valid queries 0, 3, 6
    assert set(more) >= {1, 2, 4, 5} and len(more) == 6 and 7 not in more


def test_pick_queries_shows_the_most_frequent_patterns_when_there_are_more_than_count():
    # 9 queries; for query q gallery 2q is its match (other camera), 2q+1 a stranger. Who is
    # right at rank 1 (models a, b, c): (1,0,0) x 3, (0,1,0) x 3, (1,1,0) x 2, (0,0,1) x 1.
    right = {"a": [1, 1, 1, 0, 0, 0, 1, 1, 0], "b": [0, 0, 0, 1, 1, 1, 1, 1, 0],
             "c": [0, 0, 0, 0, 0, 0, 0, 0, 1]}
    Q = 9
    q_pids, g_pids = np.arange(Q), np.repeat(np.arange(Q), 2)
    g_pids[1::2] = 100 + np.arange(Q)
    q_meta, g_meta = meta(q_pids, np.zeros(Q, int)), meta(g_pids, np.ones(2 * Q, int))

    def ranking(is_right):
        d = np.full((Q, 2 * Q), 5.0)
        is_right = np.array(is_right, bool)
        d[np.arange(Q), 2 * np.arange(Q)] = np.where(is_right, 1.0, 2.0)
        d[np.arange(Q), 2 * np.arange(Q) + 1] = np.where(is_right, 2.0, 1.0)
        return Ranking(torch.from_numpy(d), q_meta, g_meta)

    rankings = {name: ranking(r) for name, r in right.items()}
    correct, _ = rank1_correct(rankings)
    for seed in range(6):
        shown = {tuple(correct[q].astype(int)) for q in pick_queries(rankings, count=3, seed=seed)}
        assert shown == {(1, 0, 0), (0, 1, 0), (1, 1, 0)}  # one of each of the 3 most frequent
        every = {tuple(correct[q].astype(int)) for q in pick_queries(rankings, count=4, seed=seed)}
        assert every == shown | {(0, 0, 1)}  # count >= the 4 patterns: every one is shown


def test_rankings_must_share_queries():
    r = random_ranking(0)
    short = Ranking(r.distmat[:5], meta(r.query.pids[:5], r.query.camids[:5]), r.gallery)
    with pytest.raises(ValueError, match="rank different queries or galleries"):
        rank1_correct({"a": r, "b": short})
    with pytest.raises(ValueError, match="count=0"):
        pick_queries({"a": r}, count=0)


def test_rank_embeds_and_ranks_a_data_set(synthetic_small):
    import rrid
    from rrid.data import ImageDataset, Market1501, build_transforms
    from rrid.evaluation import pairwise_distance
    from rrid.model import RRID, RRIDConfig

    torch.manual_seed(0)
    data = Market1501(synthetic_small)
    model = RRID(RRIDConfig.preset("ours-s", backbone="resnet18"), num_classes=3).eval()
    r = rank(model, data, 96, 32, flip=False)
    assert r.distmat.shape == (len(data.query), len(data.gallery))
    assert r.query.paths == [str(x.path) for x in data.query] and list(r.gallery.pids) == [x.pid for x in data.gallery]
    torch.testing.assert_close(r.distmat, pairwise_distance(r.query.feats, r.gallery.feats))
    q0 = rank(model, data, 96, 32, blocks=["P6/q0"], flip=False)  # the last 256 of the 1,792 numbers
    raw = rrid.extract_features(model, torch.utils.data.DataLoader(
        ImageDataset(data.query, build_transforms(96, 32, train=False)), batch_size=64), flip=False, normalize=False,
        progress=False).feats
    expected = raw[:, -256:] / raw[:, -256:].norm(dim=1, keepdim=True)
    torch.testing.assert_close(q0.query.feats, expected)  # unit vectors: the default atol 1e-5 is ~80 eps32 of 1
    assert not torch.allclose(q0.distmat, r.distmat)
    with pytest.raises(ValueError, match="P6/q7"):
        rank(model, data, 96, 32, blocks=["P6/q7"])
    built = Ranking.from_records(r.distmat, data.query, data.gallery)
    assert list(built.query.camids) == list(r.query.camids) and built.gallery.paths == r.gallery.paths


def test_rank1_with_infinite_distances_and_rows_without_kept_entries():
    # query 0: every kept entry at +inf -> the lowest kept index; query 1: the whole gallery is removed
    g = meta([0, 0, 1, 2], [0, 1, 0, 0])
    q = meta([0, 5], [0, 0])
    d = torch.tensor([[0.0, float("inf"), float("inf"), float("inf")], [1.0, 2.0, 3.0, 4.0]])
    r = Ranking(d, q, g)
    assert top_k(r, 0, 1)[0].tolist() == [1]
    correct, valid = rank1_correct({"a": r})
    assert correct[:, 0].tolist() == [True, False] and valid.tolist() == [True, False]
    g_all_removed = meta([0, 0], [0, 0])
    r2 = Ranking(torch.zeros(1, 2), meta([0], [0]), g_all_removed)
    assert top_k(r2, 0, 1)[0].tolist() == [] and rank1_correct({"a": r2})[0].tolist() == [[False]]
