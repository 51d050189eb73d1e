"""Figures of rankings: what a query retrieves, and how the metrics read a ranking.

* :func:`retrieval_grid`: a query and its top-k gallery images, green border for a match,
  red for a non-match, with distances (the paper's Fig. 4).
* :func:`retrieval_comparison`: the top-k of several models for the same queries (Fig. 5).
* :func:`activation_maps`: the backbone map's channel sum over the image, the stripe borders
  and, per stripe, its peak and the cell that holds the most channels' maxima under GMP
  (:func:`rrid.explain.backbone_marks`; not the paper's Fig. 6, which
  :func:`rrid.viz.relation_activation_maps` draws).
* :func:`cmc_curve`, :func:`ap_histogram`, :func:`ranking_toy`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.lines import Line2D

from rrid.evaluation import Features
from rrid.explain import backbone_marks
from rrid.retrieval import Ranking, _check_same_queries, top_k
from rrid.viz.style import MATCH, NON_MATCH, as_rgb, border, gallery_cell, use_style

__all__ = ["retrieval_grid", "retrieval_comparison", "activation_maps", "cmc_curve", "ap_histogram", "ranking_toy"]


def retrieval_grid(query_paths, gallery_paths, distmat, q_pids, g_pids, q_camids, g_camids,
                   queries=(0, 1, 2), topk: int = 5):
    """One row per query: the query, then its top-k gallery images under the Market-1501
    protocol (same-identity same-camera gallery images are skipped), bordered green for a
    match and red for a non-match, titled with the distance."""
    use_style()
    d = distmat.detach().cpu() if isinstance(distmat, torch.Tensor) else torch.as_tensor(np.asarray(distmat))
    none = torch.empty(0, 0)
    ranking = Ranking(d, Features(none, np.asarray(q_pids), np.asarray(q_camids), list(query_paths)),
                      Features(none, np.asarray(g_pids), np.asarray(g_camids), list(gallery_paths)))
    queries = list(queries)
    fig, axes = plt.subplots(len(queries), topk + 1, figsize=(1.4 * (topk + 1), 2.8 * len(queries)), squeeze=False)
    for row, q in zip(axes, queries):
        row[0].imshow(as_rgb(query_paths[q]))
        row[0].set_title(f"query {ranking.query.pids[q]}")
        border(row[0], "black", 2)
        order, matches = top_k(ranking, q, topk)
        for ax, g, match in zip(row[1:], order, matches):
            gallery_cell(ax, gallery_paths[g], match, f"{float(d[q, g]):.3f}")
        for ax in row[1 + len(order):]:
            ax.axis("off")
    fig.tight_layout()
    return fig


def activation_maps(model, image_tensor, image_for_display=None, num_stripes: int = 6):
    """Where the backbone responds on one image, and where GMP reads each stripe.

    Right panel: the channel sum sum_k x_k(h, w) of ``model.backbone``'s feature map x over the
    image (bilinear), the borders of ``num_stripes`` stripes as ``stripe_pool`` cuts them
    (:func:`rrid.explain.stripe_rows`), and two marks per stripe
    (:func:`rrid.explain.backbone_marks` finds them):

    * a star on the peak of the channel sum in the stripe: the brightest cell of this picture,
      which is *not* the cell GMP picks (GMP picks one cell per channel);
    * a circle on the cell that holds the maxima of the most channels of p_i
      (:func:`rrid.explain.gmp_holders`): the cell GMP reads most often. The title gives, per
      stripe from top to bottom, that cell's share of the stripe's channels.

    The two marks sit on the same cell only where one cell dominates both. This is a picture of
    the backbone, not the paper's Fig. 6 (per-part maps of R_p): see
    :func:`rrid.viz.relation_activation_maps`.
    """
    use_style()
    marks = backbone_marks(model, image_tensor, num_stripes)
    act = marks.activation.numpy()
    h, w = act.shape
    img = as_rgb(image_tensor if image_for_display is None else image_for_display)
    H, W = img.shape[:2]
    # constrained layout: the title sits just above the panels, with no band between
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(4.4, 4.3), layout="constrained")
    ax0.imshow(img)
    ax0.set_title("image")
    ax1.imshow(img)
    ax1.imshow(act, cmap="jet", alpha=0.5, extent=(0, W, H, 0), interpolation="bilinear")
    ax1.set_title("channel sum of x")
    for (top, _), (y, c), (gy, gc) in zip(marks.rows, marks.peaks, marks.gmp_cells):
        ax1.axhline(top * H / h, color="white", lw=1)
        ax1.plot((c + 0.5) * W / w, (y + 0.5) * H / h, "w*", ms=12, mec="black")
        ax1.plot((gc + 0.5) * W / w, (gy + 0.5) * H / h, "o", ms=17, mfc="none", mec="white", mew=2)
    ax1.legend(handles=[Line2D([], [], marker="*", ls="", color="w", mec="black", ms=10, label="peak of the sum"),
                        Line2D([], [], marker="o", ls="", mfc="none", mec="black", ms=10,
                               label="most channel maxima (GMP)")],
               loc="upper center", bbox_to_anchor=(-0.05, -0.02), fontsize="small", frameon=False)
    fig.suptitle("share of channels held by the circled cell,\nstripes 1 to 6: "
                 + " ".join(f"{100 * s:.0f}%" for s in marks.shares), fontsize="medium")
    for ax in (ax0, ax1):
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def cmc_curve(results: dict, max_rank: int = 20):
    """CMC curves, one per entry of ``{label: metrics}`` (metrics from ``evaluate_ranking``)."""
    use_style()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, m in results.items():
        cmc = np.asarray(m["cmc"])[:max_rank]
        ax.plot(np.arange(1, len(cmc) + 1), 100 * cmc, marker="o", ms=3,
                label=f"{label} (R-1 {100 * cmc[0]:.1f}, mAP {100 * m['mAP']:.1f})")
    ax.set(xlabel="rank", ylabel="matching rate (%)", title="CMC")
    ax.legend()
    fig.tight_layout()
    return fig


def ap_histogram(metrics: dict, bins: int = 20):
    """The distribution of the per-query AP (skipped queries left out)."""
    use_style()
    ap = np.asarray(metrics["all_AP"], dtype=float)
    ap = ap[~np.isnan(ap)]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(ap, bins=bins, range=(0, 1))
    ax.axvline(ap.mean(), color="black", ls="--", label=f"mAP {ap.mean():.3f}")
    ax.set(xlabel="AP of a query", ylabel="queries", title="per-query AP")
    ax.legend()
    fig.tight_layout()
    return fig


def ranking_toy(matches, max_rank: int = 5):
    """One ranking as a row of boxes (green = match, red = non-match) with its AP, CMC and INP.

    ``matches``: booleans in rank order (the cleaned ranking of one query).
    """
    use_style()
    matches = np.asarray(matches, dtype=bool)
    ranks = np.flatnonzero(matches)
    ap = np.mean(np.arange(1, len(ranks) + 1) / (ranks + 1)) if len(ranks) else 0.0
    inp = len(ranks) / (ranks[-1] + 1) if len(ranks) else 0.0
    fig, ax = plt.subplots(figsize=(0.6 * len(matches) + 1, 1.6))
    for i, m in enumerate(matches):
        ax.add_patch(plt.Rectangle((i, 0), 0.9, 0.9, facecolor=MATCH if m else NON_MATCH, edgecolor="black"))
        ax.text(i + 0.45, -0.3, str(i + 1), ha="center", va="center")
    cmc = " ".join(str(int(len(ranks) and ranks[0] < k)) for k in range(1, max_rank + 1))
    ax.set_title(f"AP = {ap:.3f}   CMC@1..{max_rank} = {cmc}   INP = {inp:.3f}")
    ax.set_xlim(-0.1, len(matches))
    ax.set_ylim(-0.6, 1)
    ax.axis("off")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- Fig. 5


def _comparison_columns(count: int, k: int) -> tuple[list, list[float]]:
    """The columns of :func:`retrieval_comparison`: (query block, rank) or None for the narrow
    gap between two blocks, and their width ratios."""
    columns, ratios = [], []
    for b in range(count):
        if b:
            ratios.append(0.25)
            columns.append(None)
        columns += [(b, j) for j in range(k)]
        ratios += [1.0] * k
    return columns, ratios


def retrieval_comparison(rankings, queries, k: int = 5, distances: bool = True):
    """The top-k retrievals of several models for the same queries (the paper's Fig. 5).

    ``rankings``: ``{model name: rrid.retrieval.Ranking}`` over the same queries and gallery
    (``Ranking.from_features(qf, gf)`` or ``rrid.retrieval.rank(model, data, H, W)``);
    ``queries``: query indices (``rrid.retrieval.pick_queries`` draws informative ones).
    One block of k columns per query: its image on top, below it one row per model with that
    model's top-k under the Market-1501 protocol, bordered green for a match and red for a
    non-match (titled with the distance when ``distances``). ``k=1`` is the paper's layout.
    """
    use_style()
    _check_same_queries(rankings)
    queries, names = list(queries), list(rankings)
    first = rankings[names[0]]
    columns, ratios = _comparison_columns(len(queries), k)
    fig, axes = plt.subplots(1 + len(names), len(columns), squeeze=False, gridspec_kw={"width_ratios": ratios},
                             figsize=(1.25 * sum(ratios) + 0.9, 2.5 * (1 + len(names))))
    for col, spec in enumerate(columns):
        for ax in axes[:, col]:
            ax.axis("off")
        if spec is None:
            continue
        b, j = spec
        q = queries[b]
        if j == 0:
            axes[0, col].axis("on")
            axes[0, col].imshow(as_rgb(first.query.paths[q]))
            axes[0, col].set_title(f"query {first.query.pids[q]}")
            border(axes[0, col], "black", 2)
        for m, name in enumerate(names):
            order, matches = top_k(rankings[name], q, k)
            if j < len(order):
                ax = axes[1 + m, col]
                ax.axis("on")
                d = rankings[name].distmat[q, order[j]]
                gallery_cell(ax, rankings[name].gallery.paths[order[j]], matches[j],
                             f"{float(d):.3f}" if distances else "")
                if j == 0 and b == 0:
                    ax.set_ylabel(name)
    fig.tight_layout()
    return fig
