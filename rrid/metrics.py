"""Ranking metrics for person re-identification: CMC, mAP and mINP.

The Market-1501 protocol (the standard one for Market-1501, DukeMTMC-reID and the CUHK03-NP
767/700 split; the authors' code reports it for Market-1501 and Duke, and for CUHK03 its
mAP with the legacy single-gallery-shot CMC, :func:`cuhk03_single_shot`): for a query with identity
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
  ``t_1 <= ... <= t_M`` of a query at gallery indices ``g_1, ..., g_M``,

      r_i = #{k : d_k < t_i} - #{removed k : d_k < t_i}
            + #{k < g_i : d_k = t_i} - #{removed k < g_i : d_k = t_i}

  Over a chunk of queries whose boolean masks fit in the CPU cache (about 1 MiB), one
  broadcast comparison ``d < t`` gives all the first counts at once (counted eight bytes at a
  time with a popcount), and a second, ``d == t``, finds the rare ``t_i`` that an entry other
  than a match ties with; only for those is the third term counted directly, elsewhere it is
  the number of earlier matches with the same distance. The removed (same pid, same camera)
  entries are a few per query and compared directly. On the Market-size problem of
  ``benchmarks/metrics.py`` this takes 0.25-0.3 of the time of one ``numpy.argsort`` of
  the distance matrix (0.86-0.92 s against 2.9-3.6 s on a shared 2-core machine), with
  2.3 MiB of extra memory.

Both accept numpy arrays or torch tensors; tensors (CPU or CUDA) are moved to CPU numpy
first, since the counting is memory-bound and the ranking is done once per evaluation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["evaluate_ranking", "evaluate_ranking_reference", "cuhk03_single_shot", "ranking_metrics",
           "compare_protocols", "METRICS", "summarize"]


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
        if distmat.size and np.isnan(np.min(distmat)):  # min is NaN iff any entry is
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
                     chunk: int | None = None) -> dict:
    """Market-1501 CMC / mAP / mINP without sorting the rows (same result as the reference).

    For a query with matches at distances ``t_1 <= ... <= t_M`` (equal distances in gallery
    order) and gallery indices ``g_i``, the 0-based rank of match ``i`` among the valid entries is

        r_i = #{valid k : d_k < t_i} + #{valid k < g_i : d_k = t_i}

    (see the module docstring for how it is counted). ``chunk`` queries are counted at a time;
    by default as many as keep the ``chunk * M * num_gallery`` bytes of comparison masks near
    1 MiB, so the extra memory is a few MiB whatever the size of the problem.
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
    # One byte per (query, match, gallery entry), padded to whole 8-byte words for popcount.
    padded_g = -(-num_g // 8) * 8
    buffer = np.empty(0, dtype=bool)
    s = 0
    while s < len(queries):
        if chunk:
            rows = int(chunk)
        else:  # the most queries whose masks fit in _MASK_BYTES (M grows along `queries`)
            upto = queries[s:s + max(1, _MASK_BYTES // padded_g)]
            fits = np.arange(1, len(upto) + 1) * n_match[upto] * padded_g <= _MASK_BYTES
            rows = max(1, int(np.count_nonzero(fits)))
        qs = queries[s:s + rows]
        m_max = int(n_match[qs[-1]])
        if buffer.size < len(qs) * m_max * padded_g:
            buffer = np.empty(len(qs) * m_max * padded_g, dtype=bool)
        mask = buffer[:len(qs) * m_max * padded_g].reshape(len(qs), m_max, padded_g)
        ranks, valid = _match_ranks_by_counting(distmat, qs, by_pid, start, n_same, n_match,
                                                g_camids, q_camids, mask)
        m = n_match[qs]
        r = ranks.astype(np.float64) + 1  # 1-based ranks
        all_AP[qs] = np.where(valid, np.arange(1, m_max + 1) / r, 0).sum(axis=1) / m
        all_INP[qs] = m / r[np.arange(len(qs)), m - 1]
        first[qs] = ranks[:, 0]
        s += len(qs)
    return _finish(all_AP, all_INP, first, max_rank)


_MASK_BYTES = 1 << 20  # comparison masks of a chunk: small enough to stay in the CPU cache


def _count_below(d, t, op, mask):
    """``#{k : op(d[c, k], t[c, i])}`` for every row ``c`` and threshold ``i`` in one pass:
    the boolean masks are written into ``mask`` (padding bytes kept False) and counted eight
    bytes at a time with a popcount."""
    num_g = d.shape[1]
    mask[:, :, num_g:] = False
    op(d[:, None, :], t[:, :, None], out=mask[:, :, :num_g])
    return np.bitwise_count(mask.view(np.uint64)).sum(axis=-1, dtype=np.int64)


def _match_ranks_by_counting(distmat, qs, by_pid, start, n_same, n_match, g_camids, q_camids, mask):
    """0-based ranks ``r_i`` of the matches of queries ``qs`` (padded to the largest M) and
    which of the padded slots are real matches."""
    d = distmat[qs]  # (c, G)
    k_max = int(n_same[qs].max())
    slot = np.arange(k_max)
    present = slot < n_same[qs, None]
    same = by_pid[np.minimum(start[qs, None] + slot, len(by_pid) - 1)]  # (c, K) gallery indices
    is_match = present & (g_camids[same] != q_camids[qs, None])
    removed = present & ~is_match
    v = np.take_along_axis(d, same, axis=1)  # distances of the same-identity entries

    # t_1 <= ... <= t_M: matches first, by distance, equal distances in gallery order.
    perm = np.lexsort((v, ~is_match), axis=1)
    m_max = mask.shape[1]
    t = np.take_along_axis(v, perm, axis=1)[:, :m_max]
    t_valid = np.take_along_axis(is_match, perm, axis=1)[:, :m_max]
    g_t = np.take_along_axis(same, perm, axis=1)[:, :m_max]  # gallery index of each match

    below = _count_below(d, t, np.less, mask)   # #{k : d_k <  t_i}
    equal = _count_below(d, t, np.equal, mask)  # #{k : d_k == t_i}

    # The same-identity entries (a few per row) against every t_i.
    v_lt, v_eq = v[:, :, None] < t[:, None, :], v[:, :, None] == t[:, None, :]
    v_before = same[:, :, None] < g_t[:, None, :]
    removed_below = (v_lt & removed[:, :, None]).sum(1)
    removed_equal = (v_eq & removed[:, :, None]).sum(1)
    removed_equal_before = (v_eq & v_before & removed[:, :, None]).sum(1)
    matches_equal = (v_eq & is_match[:, :, None]).sum(1)
    matches_equal_before = (v_eq & v_before & is_match[:, :, None]).sum(1)
    ranks = below - removed_below + matches_equal_before

    # Where a valid non-match has d_k = t_i too (rare with real features), count the entries
    # with d_k = t_i before the match in the gallery directly.
    for row, i in zip(*np.nonzero(t_valid & (equal - removed_equal - matches_equal > 0))):
        equal_before = np.count_nonzero(d[row, :g_t[row, i]] == t[row, i])
        ranks[row, i] = below[row, i] - removed_below[row, i] + equal_before - removed_equal_before[row, i]
    return ranks, t_valid


def cuhk03_single_shot(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                       repeats: int = 10, seed: int = 0, separate_cameras: bool = True) -> dict:
    """The legacy CUHK03 single-gallery-shot CMC (the CMC of the authors' code for CUHK03).

    The authors' evaluation (``reid/evaluators.py``) calls open-reid's ``cmc`` for CUHK03 with
    ``separate_camera_set=True, single_gallery_shot=True``. For each query:

    1. the gallery is ranked by distance (ties in gallery order) and cleaned: with
       ``separate_cameras`` (the default, as theirs) every image from the query's camera is
       dropped, otherwise only those with the query's identity and camera (Market-1501 style);
    2. in each of ``repeats`` draws (10, as theirs) one image per identity is kept at random,
       so the query's identity appears exactly once; its 0-based rank ``r`` among the kept
       images gives CMC@k = [r < k];
    3. the CMC is averaged over the draws and over the queries that have a match.

    Unlike the Market-1501 CMC (:func:`evaluate_ranking`, the metric of the standard CUHK03-NP
    767/700 protocol), the rank here is that of one randomly kept true match, not of the
    nearest, among one image per other identity, not all of them, and, by default, without any
    image of the query's own camera. The first lowers rank-1, the other two raise it; which
    wins depends on the data (on the book's synthetic quick split rank-1 comes out lower: the
    chapter "Evaluation and retrieval"), so the two rank-1 numbers are not comparable. Their mAP
    for CUHK03 is the Market-1501 one (open-reid's ``mean_ap``): see :func:`ranking_metrics`.

    Returns ``{"cmc", "mean_reciprocal_rank", "num_valid_queries", "num_skipped_queries"}``;
    ``mean_reciprocal_rank`` is the mean of 1 / (r + 1) (the AP of a draw, which has one
    match). Seeded by ``seed`` (numpy's PCG64) and reproducible; open-reid draws from numpy's
    global state, so their numbers vary from run to run by the sampling noise.
    """
    distmat, q_pids, g_pids, q_camids, g_camids, max_rank = _check_inputs(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    if int(repeats) < 1:
        raise ValueError(f"repeats: expected a positive integer, got {repeats}")
    rng = np.random.default_rng(seed)
    cmc_sum, rr_sum, num_valid = np.zeros(max_rank), 0.0, 0
    for q in range(len(q_pids)):
        order = np.argsort(distmat[q], kind="stable")
        same_cam = g_camids[order] == q_camids[q]
        keep = ~same_cam if separate_cameras else ~((g_pids[order] == q_pids[q]) & same_cam)
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
            rr_sum += 1.0 / (r + 1)
    if num_valid == 0:
        raise ValueError("no query has a match in the gallery (after removing same-identity same-camera images)")
    return {"cmc": cmc_sum / (num_valid * repeats), "mean_reciprocal_rank": rr_sum / (num_valid * repeats),
            "num_valid_queries": num_valid, "num_skipped_queries": len(q_pids) - num_valid}


METRICS = ("market", "cuhk03_single_shot")
"""The ranking metrics a run can report (``eval.metric`` of the experiment config)."""


def ranking_metrics(distmat, q_pids, g_pids, q_camids, g_camids, metric: str = "market",
                    max_rank: int = 50, seed: int = 0) -> dict:
    """The metrics of a run under ``metric`` (``eval.metric`` of the config).

    * ``"market"``: :func:`evaluate_ranking` (Market-1501 protocol: mAP, CMC, mINP).
    * ``"cuhk03_single_shot"``: what the authors' code reports for CUHK03: the Market-1501
      mAP, mINP and per-query AP, with ``cmc`` replaced by :func:`cuhk03_single_shot`'s
      (separate cameras, 10 draws seeded by ``seed``); the Market-1501 CMC stays under
      ``"cmc_market"``.

    The dict of :func:`evaluate_ranking` plus ``"metric"``: the name used.
    """
    if metric not in METRICS:
        raise ValueError(f"ranking metric {metric!r}: expected one of {list(METRICS)}")
    out = dict(evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank), metric=metric)
    if metric == "cuhk03_single_shot":
        single = cuhk03_single_shot(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, seed=seed)
        out["cmc_market"], out["cmc"] = out["cmc"], single["cmc"]
    return out


def compare_protocols(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50, seed: int = 0,
                      repeats: int = 10) -> dict:
    """Both CMCs on the same distances: ``{"market": evaluate_ranking(...),
    "cuhk03_single_shot": cuhk03_single_shot(...), "rank1": {"market": .., "cuhk03_single_shot": ..}}``.

    Shows why CUHK03 rank-1 numbers are not comparable between papers: the same ranking gets
    a different rank-1 under the legacy single-gallery-shot CMC (the authors' code) than under
    the Market-1501 CMC of the 767/700 protocol (higher or lower, depending on the data: see
    :func:`cuhk03_single_shot`), while the mAP is the same in both.
    """
    market = evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank)
    single = cuhk03_single_shot(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank,
                                repeats=repeats, seed=seed)
    return {"market": market, "cuhk03_single_shot": single,
            "rank1": {"market": float(market["cmc"][0]), "cuhk03_single_shot": float(single["cmc"][0])}}


def summarize(metrics: dict) -> dict:
    """The numbers a run reports, as plain floats (fractions): mAP, rank1, rank5, rank10 (as far as
    the CMC goes), mINP and num_valid_queries when present; what ``fit`` logs and ``eval`` prints."""
    cmc = np.asarray(metrics["cmc"])
    out = {"mAP": float(metrics["mAP"]), "rank1": float(cmc[0])}
    out.update({f"rank{k}": float(cmc[k - 1]) for k in (5, 10) if len(cmc) >= k})
    for key in ("mINP", "num_valid_queries"):
        if key in metrics:
            out[key] = float(metrics[key])
    return out
