"""Ranking metrics for person re-identification: CMC, mAP and mINP.

The Market-1501 protocol, used by the paper for every data set: for a query with identity
``pid`` seen by camera ``cam``, the gallery is ranked by distance (ties broken by gallery
index, as a stable sort would), gallery images with the same ``pid`` *and* the same ``cam``
are removed (they are too easy), and the remaining images with the query's identity are
the *matches*. With the matches at 0-based ranks ``r_1 < r_2 < ... < r_M`` of the cleaned
ranking:

    AP   = (1/M) sum_i  i / (r_i + 1)            (mean of the precision at each match)
    CMC@k = 1  if r_1 < k  else 0                (is the first match in the top k?)
    INP  = M / (r_M + 1)                         (precision at the hardest match; Ye et al. 2021)

and mAP, CMC and mINP average them over the queries that have at least one match. Queries
with none are skipped and counted. Distractors (pid 0) are ordinary non-matches.

Two implementations give the same numbers (to 1e-6, tested):

* :func:`evaluate_ranking_reference` sorts each row, the way torchreid and fast-reid do.
* :func:`evaluate_ranking` never sorts a row. The protocol only needs ``r_i``, and the rank of
  a match is the number of valid gallery entries that come before it: those with a smaller
  distance, plus those with an equal distance and a smaller index. With the match distances
  ``t_1 <= ... <= t_M`` of a query, one vectorised comparison per match over a chunk of
  queries counts the entries below each ``t_i``; the few removed (same pid, same camera)
  entries below it are subtracted. An exact tie between a match and a non-matching entry is
  rare with real features; a second counting pass finds the rows where it happens and only
  those rows are ranked by a stable sort. This costs about a third of one ``numpy.argsort``
  of the distance matrix (``benchmarks/metrics.py``).

Both accept numpy arrays or torch tensors; tensors (CPU or CUDA) are moved to CPU numpy
first, since the counting is memory-bound and the ranking is done once per evaluation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["evaluate_ranking", "evaluate_ranking_reference", "cuhk03_single_shot"]


def _to_numpy(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, possibly on CUDA
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_inputs(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    distmat = _to_numpy(distmat, "distmat")
    q_pids, g_pids = _to_numpy(q_pids, "q_pids").ravel(), _to_numpy(g_pids, "g_pids").ravel()
    q_camids, g_camids = _to_numpy(q_camids, "q_camids").ravel(), _to_numpy(g_camids, "g_camids").ravel()
    if distmat.ndim != 2:
        raise ValueError(f"distmat: expected a 2-D (num_query, num_gallery) matrix, got shape {distmat.shape}")
    num_q, num_g = distmat.shape
    for name, arr, n in [("q_pids", q_pids, num_q), ("q_camids", q_camids, num_q),
                         ("g_pids", g_pids, num_g), ("g_camids", g_camids, num_g)]:
        if len(arr) != n:
            raise ValueError(f"{name}: expected {n} entries to match distmat {distmat.shape}, got {len(arr)}")
    if distmat.dtype == bool or not np.issubdtype(distmat.dtype, np.number):
        raise TypeError(f"distmat: expected real numbers, got dtype {distmat.dtype}")
    if np.issubdtype(distmat.dtype, np.floating):
        if distmat.dtype.itemsize < 4:  # float16: widen exactly
            distmat = distmat.astype(np.float32)
        if np.isnan(distmat).any():
            raise ValueError("distmat: contains NaN; expected finite or infinite distances")
    if int(max_rank) < 1:
        raise ValueError(f"max_rank: expected a positive integer, got {max_rank}")
    return distmat, q_pids, g_pids, q_camids, g_camids, int(max_rank)


def _summarise(match_ranks: list, num_query: int, max_rank: int) -> dict:
    """AP, first-match rank and INP of each query from the 0-based ranks of its matches."""
    all_AP = np.full(num_query, np.nan)
    first = np.full(num_query, -1)
    all_INP = np.full(num_query, np.nan)
    for q, r in enumerate(match_ranks):
        if r is None or len(r) == 0:
            continue
        r = np.asarray(r, dtype=np.float64)
        all_AP[q] = np.mean(np.arange(1, len(r) + 1) / (r + 1))
        all_INP[q] = len(r) / (r[-1] + 1)
        first[q] = r[0]
    return _finish(all_AP, all_INP, first, max_rank)


def _finish(all_AP, all_INP, first, max_rank):
    valid = ~np.isnan(all_AP)
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError("no query has a match in the gallery (after removing same-identity same-camera images)")
    hits = np.bincount(np.minimum(first[valid], max_rank).astype(np.int64), minlength=max_rank + 1)
    return {
        "mAP": float(all_AP[valid].mean()),
        "cmc": np.cumsum(hits[:max_rank]) / num_valid,
        "mINP": float(all_INP[valid].mean()),
        "num_valid_queries": num_valid,
        "num_skipped_queries": len(all_AP) - num_valid,
        "all_AP": all_AP,  # per query, NaN where skipped
    }


def _ranks_by_sorting(row, q_pid, q_cam, g_pids, g_camids) -> np.ndarray:
    """0-based ranks of the matches in the cleaned ranking of one query, by a stable sort."""
    order = np.argsort(row, kind="stable")
    same_pid = g_pids[order] == q_pid
    keep = ~(same_pid & (g_camids[order] == q_cam))
    return np.flatnonzero(same_pid[keep])


def evaluate_ranking_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50) -> dict:
    """The per-query reference: sort each row, drop the ignored entries, read off the matches.

    Returns ``dict(mAP, cmc, mINP, num_valid_queries, num_skipped_queries, all_AP)``; ``cmc``
    has ``max_rank`` entries (``cmc[0]`` is rank-1), ``all_AP`` one per query (NaN if skipped).
    """
    distmat, q_pids, g_pids, q_camids, g_camids, max_rank = _check_inputs(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    ranks = [_ranks_by_sorting(distmat[q], q_pids[q], q_camids[q], g_pids, g_camids)
             for q in range(len(q_pids))]
    return _summarise(ranks, len(q_pids), max_rank)


def evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                     chunk: int = 32) -> dict:
    """Market-1501 CMC / mAP / mINP without sorting the rows (same result as the reference).

    For a query with matches at distances ``t_1 <= ... <= t_M`` (equal distances in gallery
    order), the 0-based rank of match ``i`` among the valid entries is

        r_i = #{k : d_k < t_i} - #{removed k : d_k < t_i} + #{matches before i with d = t_i}

    as long as no valid non-matching entry has a distance exactly equal to ``t_i``; rows where
    one does are ranked by a stable sort instead. ``chunk`` queries are counted at a time, so
    the extra memory is ``chunk * num_gallery`` bytes plus small arrays.
    """
    distmat, q_pids, g_pids, q_camids, g_camids, max_rank = _check_inputs(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    num_q, num_g = distmat.shape

    # The gallery entries with each query's identity: a slice of the gallery sorted by pid
    # (a stable sort, so each slice is in gallery order).
    by_pid = np.argsort(g_pids, kind="stable")
    start = np.searchsorted(g_pids[by_pid], q_pids, side="left")
    n_same = np.searchsorted(g_pids[by_pid], q_pids, side="right") - start
    n_match = np.zeros(num_q, dtype=np.int64)
    for q in np.flatnonzero(n_same):  # cheap: a few entries per query
        same = by_pid[start[q]:start[q] + n_same[q]]
        n_match[q] = np.count_nonzero(g_camids[same] != q_camids[q])

    all_AP = np.full(num_q, np.nan)
    all_INP = np.full(num_q, np.nan)
    first = np.full(num_q, -1)
    queries = np.flatnonzero(n_match)
    queries = queries[np.argsort(n_match[queries], kind="stable")]  # similar M in a chunk
    mask = np.empty((chunk, num_g), dtype=bool)
    for s in range(0, len(queries), chunk):
        qs = queries[s:s + chunk]
        ranks, tied = _match_ranks_by_counting(distmat, qs, by_pid, start, n_same, n_match,
                                               g_camids, q_camids, mask[:len(qs)])
        for row, q in enumerate(qs):
            m = n_match[q]
            r = ranks[row, :m] if not tied[row] else _ranks_by_sorting(
                distmat[q], q_pids[q], q_camids[q], g_pids, g_camids)
            r = r.astype(np.float64)
            all_AP[q] = np.mean(np.arange(1, m + 1) / (r + 1))
            all_INP[q] = m / (r[-1] + 1)
            first[q] = r[0]
    return _finish(all_AP, all_INP, first, max_rank)


def _match_ranks_by_counting(distmat, qs, by_pid, start, n_same, n_match, g_camids, q_camids, mask):
    """Ranks ``r_i`` of the matches of queries ``qs`` (padded to the largest M) and a flag per
    query that is True where a valid non-match ties with a match (rank those by sorting)."""
    d = distmat[qs]  # (c, G)
    c, k_max = len(qs), int(n_same[qs].max())
    slot = np.arange(k_max)
    present = slot < n_same[qs, None]
    same = by_pid[np.minimum(start[qs, None] + slot, len(by_pid) - 1)]  # (c, K) gallery indices
    is_match = present & (g_camids[same] != q_camids[qs, None])
    removed = present & ~is_match
    v = np.take_along_axis(d, same, axis=1)  # distances of the same-identity entries

    # t_1 <= ... <= t_M: matches first, by distance, equal distances in gallery order.
    perm = np.lexsort((v, ~is_match), axis=1)
    m_max = int(n_match[qs].max())
    t = np.take_along_axis(v, perm, axis=1)[:, :m_max]
    t_valid = np.take_along_axis(is_match, perm, axis=1)[:, :m_max]

    below = np.empty((c, m_max), dtype=np.int64)  # #{k : d_k <  t_i}
    equal = np.empty((c, m_max), dtype=np.int64)  # #{k : d_k == t_i}
    for i in range(m_max):
        np.less(d, t[:, i:i + 1], out=mask)
        below[:, i] = np.count_nonzero(mask, axis=1)
        np.equal(d, t[:, i:i + 1], out=mask)
        equal[:, i] = np.count_nonzero(mask, axis=1)

    removed_below = ((v[:, :, None] < t[:, None, :]) & removed[:, :, None]).sum(1)
    removed_equal = ((v[:, :, None] == t[:, None, :]) & removed[:, :, None]).sum(1)
    same_t = (t[:, :, None] == t[:, None, :]) & t_valid[:, :, None] & t_valid[:, None, :]
    matches_equal = same_t.sum(1)                                   # matches with d = t_i
    matches_equal_before = np.triu(same_t, k=1).sum(1)              # ... earlier in the order
    ranks = below - removed_below + matches_equal_before
    tied = ((equal - removed_equal - matches_equal) > 0) & t_valid
    return ranks, tied.any(axis=1)


def cuhk03_single_shot(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                       repeats: int = 10, seed: int = 0) -> dict:
    """The legacy CUHK03 single-gallery-shot CMC (the official code's CUHK03 metric).

    For each query the same-identity same-camera entries are removed as usual; then, in each
    of ``repeats`` draws, one gallery image per identity is kept at random, and the CMC of the
    query in that reduced ranking is averaged over the draws and the queries. With a single
    match the AP of a draw is ``1 / (r + 1)``; its mean is reported as ``mAP`` for reference
    only (the metric is the CMC). Seeded by ``seed`` and reproducible.
    """
    distmat, q_pids, g_pids, q_camids, g_camids, max_rank = _check_inputs(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    if int(repeats) < 1:
        raise ValueError(f"repeats: expected a positive integer, got {repeats}")
    rng = np.random.default_rng(seed)
    cmc_sum, ap_sum, num_valid = np.zeros(max_rank), 0.0, 0
    for q in range(len(q_pids)):
        order = np.argsort(distmat[q], kind="stable")
        keep = ~((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q]))
        pids = g_pids[order][keep]  # the cleaned ranking, as identities
        if not (pids == q_pids[q]).any():
            continue
        num_valid += 1
        for _ in range(repeats):
            # one image per identity: the one with the smallest random key
            key = rng.random(len(pids))
            by = np.lexsort((key, pids))
            first_of_pid = np.r_[True, pids[by][1:] != pids[by][:-1]]
            chosen = np.zeros(len(pids), dtype=bool)
            chosen[by[first_of_pid]] = True
            r = np.count_nonzero(chosen[:np.flatnonzero(chosen & (pids == q_pids[q]))[0]])
            cmc_sum[r:] += 1 if r < max_rank else 0
            ap_sum += 1.0 / (r + 1)
    if num_valid == 0:
        raise ValueError("no query has a match in the gallery (after removing same-identity same-camera images)")
    return {"cmc": cmc_sum / (num_valid * repeats), "mAP": ap_sum / (num_valid * repeats),
            "num_valid_queries": num_valid, "num_skipped_queries": len(q_pids) - num_valid}
