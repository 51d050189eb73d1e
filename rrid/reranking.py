"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) on sparse neighbour lists.

The module is named ``reranking`` so that ``rrid.rerank`` stays one thing, the function (the
package exports it under that name); ``rrid.evaluation.rerank`` is the same function.

Every step of the algorithm looks at a few neighbours of each point, so only the distances
need all pairs, and those are computed in square blocks and reduced at once to each row's
nearest neighbours and maximum. The neighbourhoods R, R* and the vectors V are kept as index
lists; the (Q, G) result is the only dense matrix. The numbers are those of the authors' code
(as fast-reid's ``re_ranking``) and of the dense version this module replaced.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch

from rrid.errors import UserError

__all__ = ["rerank", "RerankMemoryError", "DEFAULT_CPU_BUDGET"]

DEFAULT_CPU_BUDGET = 256 * 2**20  # bytes of working blocks on the CPU
_CUDA_BUDGET_CAP = 4 * 2**30      # on a GPU: half the free memory, at most this
_DISTANCE_BYTES = 16              # per element of a block of distances: d and topk's work
_SPARE = 8                        # distances kept per row beyond the k nearest (for ties)
_PAIR_BYTES = 128                 # per (query entry, gallery entry) pair: indices and values
_ENTRY_BYTES = 96                 # per entry of V_c gathered for the query expansion


class RerankMemoryError(UserError, MemoryError):
    """A dense step of :func:`rerank` does not fit in the memory budget or in the device's memory."""


class Nearest(NamedTuple):
    """Each point's m first points by (scaled distance, index), their scaled distances, its row maximum."""
    idx: torch.Tensor
    dist: torch.Tensor
    row_max: torch.Tensor


class Sparse(NamedTuple):
    """The rows of an (n, n) matrix, CSR-like: row p holds ``col[crow[p]:crow[p+1]]`` and ``val[...]``."""
    crow: torch.Tensor
    col: torch.Tensor
    val: torch.Tensor


def rerank(q: torch.Tensor, g: torch.Tensor, k1: int = 20, k2: int = 6, lambda_: float = 0.3,
           memory_budget: int | None = None) -> torch.Tensor:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017); returns the (Q, G) d* on q's device.

    On the probe-and-gallery set P ∪ G, n = Q + G points, with Euclidean distances d (squared,
    scaled per row by its maximum over all n points, as in the paper's code release):

    * N(p, k): p and its k nearest neighbours (ties broken by index, as a stable sort does);
      R(p, k) = {g ∈ N(p, k): p ∈ N(g, k)}, the k-reciprocal neighbours.
    * R*(p, k) = R(p, k) ∪ R(q, round(k/2)) for every q ∈ R(p, k) with
      |R(p, k) ∩ R(q, k/2)| > 2/3 |R(q, k/2)|.
    * V_{p,g} = exp(-d(p, g)) for g ∈ R*(p, k1), else 0, normalised to sum 1 over g.
    * local query expansion: V_p <- mean of V_g over the k2 first entries of p's ranking
      (p and its k2 - 1 nearest neighbours; duplicates of p ranked before it take its place);
      none when k2 = 1, as in the authors' code.
    * d_J(p, g) = 1 - Σ_j min(V_pj, V_gj) / Σ_j max(V_pj, V_gj), with Σ_j max = 2 - Σ_j min.
    * d*(p, g) = (1 - λ) d_J(p, g) + λ d(p, g), for the Q probes p and the G gallery points g.

    Everything is computed in float32 on q's device. With K = max(k1 + 1, k2) and
    W = (k1 + 1)(k1/2 + 2), the most candidates of R*(p, k1):

    * time: n² d / 2 multiply-adds for the distances (d is symmetric: each block serves its rows
      and, transposed, its columns; the rest is a few passes over each block), O(n W K) to look
      up the distances inside R* among the kept nearest, O(n W log(n W)) for R*, O(n k2 |R*|) for the
      expansion and, for the Jaccard distance, one step per pair (V_pj, V_gj) of non-zeros
      sharing a column j: O(Q |V_p|²) on data with clusters;
    * memory: the (Q, G) result, a float32 copy of the (n, d) features, O(n K) neighbour lists,
      the non-zeros of V (at most n W, n W k2 after the expansion, O(n k1 k2) on data with
      clusters) and ``memory_budget`` bytes of blocks: square blocks of distances, rows of G
      Jaccard sums, R* candidates, chunks of the expansion (a block holds at least one row).

    ``memory_budget``: bytes for the blocks; default 256 MiB on the CPU; on a GPU half the free
    memory (``torch.cuda.mem_get_info``) left after the result and the features, at most 4 GiB;
    lowered to the free memory (CPU: Linux's MemAvailable) when that is less. Raises
    :class:`RerankMemoryError` before allocating anything when one row of a block does not fit
    in it, or the result, the features and one row do not fit in the device's free memory.
    """
    _check_inputs(q, g, k1, k2, lambda_)
    k1, k2 = int(k1), int(k2)
    num_q, n = len(q), len(q) + len(g)
    budget = _plan(q, g, k1, k2, memory_budget)
    out = torch.empty(num_q, len(g), device=q.device)
    if out.numel() == 0:
        return out
    x = torch.cat([q, g]).float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("rerank: the features hold NaN or inf values; expected finite numbers")
    near = _nearest_neighbours(x, min(n, max(k1 + 1, k2)), out, budget)
    v = _v_vectors(x, near, k1, budget)
    if k2 > 1:
        v = _local_query_expansion(v, near.idx[:, :k2], budget)
    _mix_jaccard(out, v, num_q, lambda_, budget)
    return out


def _check_inputs(q, g, k1, k2, lambda_):
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"rerank: expected q (Q, D) and g (G, D) with the same D, got {tuple(q.shape)} "
                         f"and {tuple(g.shape)}")
    if q.device != g.device:
        raise ValueError(f"rerank: q is on {q.device} and g on {g.device}; expected one device")
    for name, value in (("k1", k1), ("k2", k2)):
        if not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"rerank: {name} must be an integer >= 1, got {value!r}")
    if not 0 <= lambda_ <= 1:
        raise ValueError(f"rerank: lambda_ must lie in [0, 1], got {lambda_!r}")


def _plan(q, g, k1, k2, memory_budget):
    """The bytes for blocks; raises RerankMemoryError when a dense step cannot fit (nothing allocated yet)."""
    num_q, num_g, dim = len(q), len(g), q.shape[1]
    n = num_q + num_g
    m = min(n, max(k1 + 1, k2) + _SPARE)
    one_row = max(_DISTANCE_BYTES * n, _jaccard_row_bytes(num_g), _r_star_row_bytes(n, k1), _gather_bytes(dim))
    fixed = 4 * (num_q * num_g + n * dim) + 24 * n * m  # the result, the float32 features, the kept nearest
    free = _free_bytes(q.device)
    budget = memory_budget
    if budget is None:
        budget = DEFAULT_CPU_BUDGET if free is None or q.device.type == "cpu" else \
            min(_CUDA_BUDGET_CAP, max(free - fixed, 0) // 2)
    sizes = f"re-ranking {num_q:,} x {num_g:,} ({dim}-d features)"
    if one_row > budget:
        raise RerankMemoryError(
            f"{sizes}: one row of a block needs {_size(one_row)}, more than memory_budget={_size(budget)}; "
            f"pass memory_budget >= {one_row} (bytes)")
    if free is not None and fixed + one_row > free:
        raise RerankMemoryError(
            f"{sizes}: the (Q, G) result and the features need {_size(fixed)} plus blocks of at least "
            f"{_size(one_row)}, but {q.device} has {_size(free)} free; free some memory or re-rank on a "
            f"device with more")
    return budget if free is None else min(budget, free - fixed)


def _jaccard_row_bytes(num_g):
    return 12 * num_g  # Σ min, 2 - Σ min and slack, per query row (plus _PAIR_BYTES per pair)


def _r_star_row_bytes(n, k1):
    width = min(n, k1 + 1) * (min(n, round(k1 / 2) + 1) + 1)  # candidates of R*(p, k1)
    return 96 * width  # their indices, pairs, sorting and weights


def _gather_bytes(dim):
    return 16 * dim + 64  # one d(p, j) computed from x_p and x_j


def _free_bytes(device):
    """Free memory on ``device`` (CUDA: mem_get_info; CPU: Linux's MemAvailable), None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
    return None


def _size(num_bytes):
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes} bytes"


def _blocks(cost, budget):
    """Consecutive row ranges [s, e) whose summed ``cost`` (bytes per row) stays within ``budget``;
    a range holds at least one row."""
    total = torch.cumsum(cost.cpu(), 0)
    s = 0
    while s < len(total):
        base = int(total[s - 1]) if s else 0
        e = max(s + 1, int(torch.searchsorted(total, base + budget, right=True)))
        yield s, e
        s = e


def _rows_of(crow):
    """The row of every entry of a CSR-like matrix."""
    rows = torch.arange(len(crow) - 1, device=crow.device)
    return torch.repeat_interleave(rows, crow.diff())


def _expand(starts, counts):
    """All positions of the segments [starts[i], starts[i] + counts[i]): (segment i, position)."""
    seg = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    offset = starts - (torch.cumsum(counts, 0) - counts)
    return seg, torch.arange(len(seg), device=counts.device) + offset[seg]


def _nearest_neighbours(x, k, out, budget):
    """The ranking of every p, its first k exact (N(p, k - 1)), as :class:`Nearest`; fills ``out``
    with the scaled d(q, g) of the Q query rows.

    d is symmetric: each block d(I, J), J >= I, is computed once and serves the rows of I and,
    transposed, those of J. Each row keeps its m = k + _SPARE smallest raw distances; once the
    row's maximum is known they are scaled and ranked (see ``_rank``).
    """
    n, num_q = len(x), len(out)
    m = min(n, k + _SPARE)
    sq = (x * x).sum(1)
    vals = torch.full((n, m), torch.inf, device=x.device)
    idx = torch.full((n, m), n, dtype=torch.long, device=x.device)
    row_max = torch.zeros(n, device=x.device)
    b = max(1, math.isqrt(budget // _DISTANCE_BYTES))
    b = -(-n // -(-n // b))  # blocks of even sizes
    buffers = torch.empty(2, min(n, b) ** 2, device=x.device)  # a block and its transpose
    for s in range(0, n, b):
        for t in range(s, n, b):
            d = _squared_distances(x, sq, slice(s, s + b), slice(t, t + b), out=buffers[0])
            _keep_smallest(vals, idx, row_max, s, d, t)
            if t > s:  # the rows of J, from a contiguous copy (row-wise reductions on d.T are slow)
                d_t = buffers[1, :d.numel()].view(d.shape[1], d.shape[0]).copy_(d.T)
                _keep_smallest(vals, idx, row_max, t, d_t, s)
            if s < num_q and t + b > num_q:  # the block holds some d(q, g)
                out[s:s + b, max(t, num_q) - num_q:t + b - num_q] = d[:num_q - s, max(num_q - t, 0):]
    out /= row_max[:num_q, None].clamp(min=1e-12)
    return Nearest(*_rank(x, sq, vals, idx, row_max, k, budget), row_max)


def _squared_distances(x, sq, rows, cols, out=None):
    """||x_p - x_j||² = ||x_p||² + ||x_j||² - 2 x_p·x_j for p in ``rows``, j in ``cols`` (``out``: a
    flat buffer to write them in)."""
    xr, xc = x[rows], x[cols]
    if out is not None:
        out = out[:len(xr) * len(xc)].view(len(xr), len(xc))
    return torch.addmm(sq[cols], xr, xc.T, alpha=-2, out=out).add_(sq[rows, None]).clamp_(min=0)


def _keep_smallest(vals, idx, row_max, r0, d, c0):
    """Merge block ``d`` (rows r0.., columns c0..) into the rows' maxima and m smallest values (with
    their indices, in no order; among values tied with the m-th, any: ``_rank`` sees to ties)."""
    rows, m = slice(r0, r0 + len(d)), vals.shape[1]
    row_max[rows] = torch.maximum(row_max[rows], d.amax(1))
    new_vals, new_idx = d.topk(min(m, d.shape[1]), dim=1, largest=False, sorted=False)
    v, i = torch.cat([vals[rows], new_vals], 1), torch.cat([idx[rows], new_idx + c0], 1)
    vals[rows], pos = v.topk(m, dim=1, largest=False, sorted=False)
    idx[rows] = i.gather(1, pos)


def _rank(x, sq, vals, idx, row_max, k, budget):
    """The kept (idx, vals) of each row, scaled and ordered by (scaled distance, index); the k first
    are those of a stable sort of the whole row.

    The kept m are m smallest raw distances, and scaling keeps their order but can round distinct
    ones to one value: they are sorted once scaled. A row whose k-th scaled distance equals its
    m-th (m < n) may tie with points it did not keep (exact duplicates, more than _SPARE of them,
    or rounding): its distances to all n points are computed again.
    """
    n, m = vals.shape
    scale = row_max.clamp(min=1e-12)[:, None]
    by_index = idx.argsort(1)
    idx, scaled = idx.gather(1, by_index), (vals / scale).gather(1, by_index)
    scaled, order = scaled.sort(dim=1, stable=True)  # by (value, index)
    idx = idx.gather(1, order)
    redo = ((scaled[:, -1] == scaled[:, k - 1]) & (m < n)).nonzero()[:, 0]
    for s, e in _blocks(torch.full((len(redo),), _DISTANCE_BYTES * n), budget):
        rows = redo[s:e]
        d = _squared_distances(x, sq, rows, slice(None)) / scale[rows]
        idx[rows] = _smallest(d, m)
        scaled[rows] = d.gather(1, idx[rows])
    return idx, scaled


def _smallest(d, k):
    """Indices of the k smallest entries of each row of ``d``, ordered by (value, index) as a stable sort."""
    m = min(k + 1, d.shape[1])
    vals, idx = d.topk(m, dim=1, largest=False)
    while m < d.shape[1] and bool((vals[:, -1] == vals[:, k - 1]).any()):  # ties with a k-th smallest:
        m = min(2 * m, d.shape[1])                                         # take all of them
        vals, idx = d.topk(m, dim=1, largest=False)
    idx, order = idx.sort(1)
    order = vals.gather(1, order).sort(dim=1, stable=True).indices[:, :k]
    return idx.gather(1, order)


def _pairs(rows, cols, n):
    """Pairs (p, j) as the numbers p (n + 1) + j (j may be n, a padding): ordered as the pairs."""
    return rows * (n + 1) + cols


def _sorted_pairs(lists):
    """The pairs (p, lists[p, s]) of an (n, w) tensor of indices, as sorted numbers (see ``_pairs``),
    and the order that sorts each row."""
    order = lists.argsort(1)
    rows = torch.arange(len(lists), device=lists.device)[:, None]
    return _pairs(rows, lists.gather(1, order), len(lists)).flatten(), order


def _find(sorted_keys, keys):
    """Whether each of ``keys`` is in ``sorted_keys``, and where (a valid position either way)."""
    pos = torch.searchsorted(sorted_keys, keys).clamp_(max=len(sorted_keys) - 1)
    return sorted_keys[pos] == keys, pos


def _reciprocal(nbr):
    """For N = ``nbr`` (n, k + 1): R(p, k) as a mask over N(p, k), i.e. p ∈ N(nbr[p, s], k)."""
    rows = torch.arange(len(nbr), device=nbr.device)[:, None]
    return _find(_sorted_pairs(nbr)[0], _pairs(nbr, rows, len(nbr)))[0]


def _r_star(rows, nbr1, r1, nbr_half, r_half):
    """R*(p, k1) of the points ``rows``, as (p, j) pairs in order; R(·, k) are masks (``r1``,
    ``r_half``) over N(·, k) (``nbr1``, ``nbr_half``)."""
    n = len(nbr1)
    c, in1 = nbr1[rows], r1[rows]                       # q ∈ R(p, k1)
    cand, in_half = nbr_half[c], r_half[c]              # R(q, k1/2), (b, k1 + 1, k1/2 + 1)
    r_p = c.masked_fill(~in1, n).sort(1).values         # R(p, k1), sorted, padded with n
    found = r_p.gather(1, torch.searchsorted(r_p, cand.flatten(1)).clamp_(max=r_p.shape[1] - 1))
    shared = (found.view_as(cand) == cand) & in_half    # R(p, k1) ∩ R(q, k1/2)
    good = in1 & (3 * shared.sum(2) > 2 * in_half.sum(2))
    members = torch.cat([r_p, cand.masked_fill(~(in_half & good[..., None]), n).flatten(1)], 1)
    key = torch.unique(_pairs(rows[:, None], members, n)[members < n])  # the union, each (p, j) once
    return key // (n + 1), key % (n + 1)


def _v_vectors(x, near, k1, budget):
    """V_p = exp(-d(p, ·)) on R*(p, k1), normalised to sum 1, for every p."""
    n = len(x)
    nbr1, nbr_half = near.idx[:, :min(n, k1 + 1)], near.idx[:, :min(n, round(k1 / 2) + 1)]
    r1, r_half = _reciprocal(nbr1), _reciprocal(nbr_half)
    kept, order = _sorted_pairs(near.idx)               # to look d(p, j) up among p's kept nearest
    kept_dist = near.dist.gather(1, order).flatten()
    cols, vals, counts = [], [], []
    for s, e in _blocks(torch.full((n,), _r_star_row_bytes(n, k1)), budget):
        p, j = _r_star(torch.arange(s, e, device=x.device), nbr1, r1, nbr_half, r_half)
        w = torch.exp(-_member_distances(x, near.row_max, kept, kept_dist, p, j, budget))
        w /= torch.zeros(e - s, device=x.device).index_add_(0, p - s, w)[p - s]
        cols.append(j)
        vals.append(w)
        counts.append(torch.bincount(p - s, minlength=e - s))
    return _csr(torch.cat(counts), torch.cat(cols), torch.cat(vals))


def _member_distances(x, row_max, kept, kept_dist, p, j, budget):
    """The scaled d(p, j) of pairs (p, j): read from p's kept nearest points (``kept``, ``kept_dist``)
    when j is one of them (almost always), else computed."""
    found, pos = _find(kept, _pairs(p, j, len(x)))
    d = kept_dist[pos]
    missing = (~found).nonzero()[:, 0]
    step = max(1, budget // _gather_bytes(x.shape[1]))
    for s in range(0, len(missing), step):
        i = missing[s:s + step]
        xp, xj = x[p[i]], x[j[i]]
        raw = ((xp * xp).sum(1) + (xj * xj).sum(1) - 2 * (xp * xj).sum(1)).clamp_(min=0)
        d[i] = raw / row_max[p[i]].clamp(min=1e-12)
    return d


def _csr(counts, col, val):
    crow = torch.zeros(len(counts) + 1, dtype=torch.long, device=col.device)
    torch.cumsum(counts, 0, out=crow[1:])
    return Sparse(crow, col, val)


def _local_query_expansion(v, first, budget):
    """V_p <- (1/k2) Σ V_c over the k2 first entries c of p's ranking (``first``, (n, k2))."""
    n, k2 = first.shape
    nnz = v.crow.diff()
    cols, vals, counts = [], [], []
    for s, e in _blocks(_ENTRY_BYTES * nnz[first].sum(1), budget):
        c = first[s:e].flatten()
        seg, pos = _expand(v.crow[c], nnz[c])           # the entries of V_c, c in p's k2 first
        key, where = torch.unique(_pairs(seg // k2 + s, v.col[pos], n), return_inverse=True)
        total = torch.zeros(len(key), device=v.val.device).index_add_(0, where, v.val[pos])
        cols.append(key % (n + 1))
        vals.append(total / k2)
        counts.append(torch.bincount(key // (n + 1) - s, minlength=e - s))
    return _csr(torch.cat(counts), torch.cat(cols), torch.cat(vals))


def _mix_jaccard(out, v, num_q, lambda_, budget):
    """out <- (1 - λ) d_J + λ out for the query rows, Σ_j min(V_pj, V_gj) from an inverted index."""
    n, num_g = len(v.crow) - 1, out.shape[1]
    start = int(v.crow[num_q])                          # the gallery rows' entries, ordered by column j
    g_col = v.col[start:]
    by_col = torch.argsort(g_col, stable=True)
    g_row, g_val = _rows_of(v.crow[num_q:])[by_col], v.val[start:][by_col]
    col_count = torch.bincount(g_col, minlength=n)
    col_start = torch.cumsum(col_count, 0) - col_count
    q_col, q_val, q_row = v.col[:start], v.val[:start], _rows_of(v.crow[:num_q + 1])
    pairs = torch.zeros(num_q, dtype=torch.long, device=out.device).index_add_(0, q_row, col_count[q_col])
    for s, e in _blocks(_PAIR_BYTES * pairs + _jaccard_row_bytes(num_g), budget):
        lo, hi = int(v.crow[s]), int(v.crow[e])
        entry, pos = _expand(col_start[q_col[lo:hi]], col_count[q_col[lo:hi]])
        mins = torch.minimum(q_val[lo:hi][entry], g_val[pos])
        flat = ((q_row[lo:hi] - s) * num_g)[entry] + g_row[pos]
        sum_min = torch.zeros((e - s) * num_g, device=out.device).index_add_(0, flat, mins).view(e - s, num_g)
        d_j = sum_min.div_(2 - sum_min).neg_().add_(1)  # 1 - Σ min / Σ max, in place
        out[s:e].mul_(lambda_).add_(d_j, alpha=1 - lambda_)
