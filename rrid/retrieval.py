"""Rankings of several models on the same queries, for the book's retrieval figures (Figs. 4-6).

A :class:`Ranking` holds a (Q, G) distance matrix with the query and gallery it ranks (their
paths, identities and cameras). Under the Market-1501 protocol (:mod:`rrid.metrics`) a query's
gallery is sorted by distance (ties by gallery index), entries with the query's identity *and*
camera are removed, and the rest with the query's identity are its matches.

* :func:`rank`: embed a data set's query and gallery with a model and rank them.
* :func:`top_k`: the first k gallery indices of a query's cleaned ranking.
* :func:`rank1_correct`: for every query and model, is the rank-1 image a match?
* :func:`pick_queries`: queries on which models disagree at rank 1, chosen by a seeded draw
  (not by hand), balanced over who is right.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from rrid.data import ImageDataset, build_transforms
from rrid.evaluation import Features, extract_features, pairwise_distance

__all__ = ["Ranking", "rank", "block_columns", "top_k", "rank1_correct", "pick_queries"]


class Ranking(NamedTuple):
    """distmat (Q, G); query and gallery: anything with ``paths``, ``pids``, ``camids`` (a
    ``Features`` from ``extract_features``)."""

    distmat: torch.Tensor
    query: Features
    gallery: Features

    @classmethod
    def from_features(cls, query: Features, gallery: Features) -> "Ranking":
        """Euclidean distances between the embeddings (as the paper ranks them)."""
        return cls(pairwise_distance(query.feats, gallery.feats), query, gallery)

    @classmethod
    def from_records(cls, distmat, query_records, gallery_records) -> "Ranking":
        """A distance matrix with lists of ``ImageRecord`` (``.path``, ``.pid``, ``.camid``)."""
        meta = [Features(torch.empty(len(r), 0), np.array([x.pid for x in r]), np.array([x.camid for x in r]),
                         [str(x.path) for x in r]) for r in (query_records, gallery_records)]
        return cls(torch.as_tensor(distmat), *meta)


def rank(model, data, height: int, width: int, blocks=None, flip: bool = True, batch_size: int = 128) -> Ranking:
    """Embed ``data.query`` and ``data.gallery`` (lists of ``ImageRecord``) with ``model`` at
    ``height`` x ``width`` (test transform, flip averaging) and rank them by Euclidean distance.

    ``blocks``: names from ``model.block_names`` (e.g. ``["P6/q0"]`` to compare global poolings,
    Fig. 5(b)); the ranking then uses their concatenation alone, L2-normalised after slicing (as
    ``benchmarks/ablation_quick.py`` scores single blocks). Default: the whole representation,
    L2-normalised, as the paper ranks.
    """
    cols = block_columns(model, blocks) if blocks is not None else None
    tf = build_transforms(height, width, train=False)
    feats = [extract_features(model, torch.utils.data.DataLoader(ImageDataset(recs, tf), batch_size=batch_size),
                              flip=flip, normalize=blocks is None, progress=False) for recs in (data.query, data.gallery)]
    if blocks is not None:
        feats = [f._replace(feats=F.normalize(f.feats[:, cols], dim=1)) for f in feats]
    return Ranking.from_features(*feats)


def block_columns(model, blocks) -> torch.Tensor:
    """The embedding's columns of ``blocks`` (names from ``model.block_names``), in that order."""
    unknown = [b for b in blocks if b not in model.block_names]
    if unknown or not blocks:
        raise ValueError(f"rank: blocks={list(blocks)!r}: expected names from model.block_names {model.block_names}")
    c = model.config.reduced_dim
    return torch.cat([torch.arange(i * c, (i + 1) * c) for i in map(model.block_names.index, blocks)])


def _valid(ranking: Ranking, q: int) -> np.ndarray:
    """Gallery indices of query q in ranking order, same-identity same-camera entries removed."""
    d = ranking.distmat[q]
    d = d.detach().cpu().numpy() if isinstance(d, torch.Tensor) else np.asarray(d)
    g_pids, g_cams = np.asarray(ranking.gallery.pids), np.asarray(ranking.gallery.camids)
    order = np.argsort(d, kind="stable")
    keep = ~((g_pids[order] == ranking.query.pids[q]) & (g_cams[order] == ranking.query.camids[q]))
    return order[keep]


def top_k(ranking: Ranking, q: int, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(gallery indices, is-match booleans) of the first k entries of query q's cleaned ranking."""
    order = _valid(ranking, q)[:k]
    return order, np.asarray(ranking.gallery.pids)[order] == ranking.query.pids[q]


def _check_same_queries(rankings: Mapping[str, Ranking]) -> None:
    if not rankings:
        raise ValueError("rankings: expected at least one {name: Ranking}")
    first_name, first = next(iter(rankings.items()))
    for name, r in rankings.items():
        if (r.distmat.shape != first.distmat.shape or not np.array_equal(r.query.pids, first.query.pids)
                or not np.array_equal(r.gallery.pids, first.gallery.pids)):
            raise ValueError(f"rankings {first_name!r} and {name!r} rank different queries or galleries "
                             f"({tuple(first.distmat.shape)} vs {tuple(r.distmat.shape)}); expected the same data")


def _first(ranking: Ranking, chunk: int = 256) -> np.ndarray:
    """(Q,) gallery index of every query's rank-1 entry (-1 when the protocol leaves none):
    the smallest distance among the kept entries, the lowest index on ties, as a stable sort.
    ``chunk`` queries at a time, to bound memory on Market-1501-size matrices."""
    d = ranking.distmat.detach().cpu().numpy() if isinstance(ranking.distmat, torch.Tensor) else np.asarray(ranking.distmat)
    q_pids, q_cams = np.asarray(ranking.query.pids), np.asarray(ranking.query.camids)
    g_pids, g_cams = np.asarray(ranking.gallery.pids), np.asarray(ranking.gallery.camids)
    out = np.full(len(d), -1)
    for s in range(0, len(d) if d.shape[1] else 0, chunk):
        removed = (q_pids[s:s + chunk, None] == g_pids[None]) & (q_cams[s:s + chunk, None] == g_cams[None])
        kept = np.where(removed, np.inf, d[s:s + chunk].astype(np.float64))
        first = np.argmin(kept, axis=1)  # argmin returns the first of equal minima
        for r in np.flatnonzero(removed[np.arange(len(first)), first]):  # every kept entry is +inf (or none is kept)
            left = np.flatnonzero(~removed[r])
            first[r] = left[0] if len(left) else -1
        out[s:s + chunk] = first
    return out


def rank1_correct(rankings: Mapping[str, Ranking]) -> tuple[np.ndarray, np.ndarray]:
    """``(correct, valid)``: ``correct`` (Q, M) bool, is model m's rank-1 image a match for query
    q (models in the dict's order); ``valid`` (Q,) bool, does query q have a match at all in the
    cleaned gallery (queries without one are skipped by the protocol)."""
    _check_same_queries(rankings)
    ref = next(iter(rankings.values()))
    q_pids, q_cams = np.asarray(ref.query.pids), np.asarray(ref.query.camids)
    g_pids, g_cams = np.asarray(ref.gallery.pids), np.asarray(ref.gallery.camids)
    valid = np.array([bool(np.any((g_pids == pid) & (g_cams != cam))) for pid, cam in zip(q_pids, q_cams)], dtype=bool)
    correct = np.zeros((len(q_pids), len(rankings)), dtype=bool)
    for m, r in enumerate(rankings.values()):
        first = _first(r)
        correct[:, m] = (first >= 0) & (g_pids[first] == q_pids)
    return correct, valid


def pick_queries(rankings: Mapping[str, Ranking], count: int = 4, seed: int = 0) -> list[int]:
    """Up to ``count`` queries on which the models disagree at rank 1, drawn, not hand-picked.

    The queries with a match whose rank-1 correctness differs between models are grouped by
    pattern (which models are right); a ``numpy`` generator seeded with ``seed`` shuffles each
    group, and one query of each group is taken in turn (largest group first). So the draw
    shows every pattern of disagreement that occurs, whichever model it favours, when there
    are at most ``count`` patterns, and one query of each of the ``count`` most frequent
    otherwise. When fewer than ``count`` queries disagree, the rest are drawn from the
    queries whose rank-1 images differ between models, then from all valid queries.
    Returned in increasing order.
    """
    if count < 1:
        raise ValueError(f"pick_queries: count={count!r}: expected >= 1")
    correct, valid = rank1_correct(rankings)
    rng = np.random.default_rng(seed)
    disagree = valid & correct.any(1) & ~correct.all(1)
    groups: dict[tuple, list[int]] = {}
    for q in np.flatnonzero(disagree):
        groups.setdefault(tuple(correct[q]), []).append(int(q))
    pools = [rng.permutation(g).tolist() for _, g in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    picked: list[int] = []
    while len(picked) < count and any(pools):
        for pool in pools:
            if pool and len(picked) < count:
                picked.append(pool.pop(0))
    if len(picked) < count:
        firsts = np.stack([_first(r) for r in rankings.values()], axis=1)  # (Q, M)
        differ = valid & (firsts != firsts[:, :1]).any(1)
        for candidates in (np.flatnonzero(differ), np.flatnonzero(valid)):
            rest = [int(q) for q in rng.permutation(candidates) if int(q) not in picked]
            picked += rest[:count - len(picked)]
    return sorted(picked)

