"""Figures for the book. Every function returns a matplotlib Figure and never calls plt.show().

* :func:`retrieval_grid`: a query and its top-k gallery images, green border for a match,
  red for a non-match, with distances (the paper's Fig. 4).
* :func:`activation_maps`: the backbone map's activation over the image, the stripe borders
  and the location that global max pooling picks in each stripe (Figs. 3 and 6).
* :func:`cmc_curve`, :func:`ap_histogram`, :func:`ranking_toy`.
* :func:`seed_strip`: values over seeds per variant with their t interval, new runs marked.
"""

from __future__ import annotations

import matplotlib

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

__all__ = ["use_style", "retrieval_grid", "activation_maps", "cmc_curve", "ap_histogram", "ranking_toy", "seed_strip",
           "MATCH", "NON_MATCH"]

MATCH, NON_MATCH = "#2ca02c", "#d62728"  # green, red


def use_style() -> None:
    """The one style every figure of the book uses."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({"figure.dpi": 100, "axes.titlesize": "medium"})


def _image(x):
    """A path, PIL image, (3, H, W) tensor or (H, W, 3) array -> an (H, W, 3) array for imshow."""
    if isinstance(x, (str, bytes)) or hasattr(x, "__fspath__"):
        from PIL import Image
        return np.asarray(Image.open(x).convert("RGB"))
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float()
        if x.ndim == 3 and x.shape[0] in (1, 3):
            x = x.permute(1, 2, 0)
        x = x.numpy()
        return (x - x.min()) / max(float(x.max() - x.min()), 1e-12)
    return np.asarray(x)


def _border(ax, colour, width=4):
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)
    ax.set_xticks([])
    ax.set_yticks([])


def retrieval_grid(query_paths, gallery_paths, distmat, q_pids, g_pids, q_camids, g_camids,
                   queries=(0, 1, 2), topk: int = 5):
    """One row per query: the query, then its top-k gallery images under the Market-1501
    protocol (same-identity same-camera gallery images are skipped), bordered green for a
    match and red for a non-match, titled with the distance."""
    use_style()
    d = distmat.detach().cpu().numpy() if isinstance(distmat, torch.Tensor) else np.asarray(distmat)
    q_pids, g_pids, q_camids, g_camids = map(np.asarray, (q_pids, g_pids, q_camids, g_camids))
    queries = list(queries)
    fig, axes = plt.subplots(len(queries), topk + 1, figsize=(1.4 * (topk + 1), 2.8 * len(queries)), squeeze=False)
    for row, q in zip(axes, queries):
        row[0].imshow(_image(query_paths[q]))
        row[0].set_title(f"query {q_pids[q]}")
        _border(row[0], "black", 2)
        order = np.argsort(d[q], kind="stable")
        order = order[~((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q]))][:topk]
        for ax, g in zip(row[1:], order):
            ax.imshow(_image(gallery_paths[g]))
            ax.set_title(f"{d[q, g]:.3f}")
            _border(ax, MATCH if g_pids[g] == q_pids[q] else NON_MATCH)
        for ax in row[1 + len(order):]:
            ax.axis("off")
    fig.tight_layout()
    return fig


def activation_maps(model, image_tensor, image_for_display=None, num_stripes: int = 6):
    """The channel-summed activation of ``model.backbone`` over the image, with the borders of
    ``num_stripes`` horizontal stripes and, in each stripe, the location of the maximum: the
    cell that global max pooling of that stripe picks (the paper's Figs. 3 and 6)."""
    use_style()
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        fmap = model.backbone(image_tensor.unsqueeze(0) if image_tensor.ndim == 3 else image_tensor[:1])
    model.train(was_training)
    act = fmap[0].float().sum(0).cpu().numpy()  # (h, w)
    h, w = act.shape
    img = _image(image_tensor if image_for_display is None else image_for_display)
    H, W = img.shape[:2]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(4, 4.5))
    ax0.imshow(img)
    ax0.set_title("image")
    ax1.imshow(img)
    ax1.imshow(act, cmap="jet", alpha=0.5, extent=(0, W, H, 0), interpolation="bilinear")
    ax1.set_title("activation, GMP argmax")
    bounds = np.linspace(0, h, num_stripes + 1).round().astype(int)
    for top, bottom in zip(bounds[:-1], bounds[1:]):
        ax1.axhline(top * H / h, color="white", lw=1)
        stripe = act[top:bottom]
        y, x = np.unravel_index(np.argmax(stripe), stripe.shape)
        ax1.plot((x + 0.5) * W / w, (top + y + 0.5) * H / h, "w*", ms=12, mec="black")
    for ax in (ax0, ax1):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
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


def seed_strip(values: dict, marks: dict | None = None, ylabel: str = "mAP (%)", title: str | None = None,
               confidence: float = 0.95):
    """One column per key of ``values`` (e.g. "row 4": the committed mAP of each seed): the
    seeds as dots, their mean and ``confidence`` t interval (``rrid.stats.mean_interval``) as a
    bar with caps, and ``marks[key]`` (e.g. a run trained just now) as a red diamond."""
    from rrid.stats import mean_interval

    marks = marks or {}
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(values), 3.4))
    for i, (key, vals) in enumerate(values.items()):
        vals = np.asarray(vals, dtype=float)
        jitter = np.linspace(-0.12, 0.12, len(vals)) if len(vals) > 1 else np.zeros(1)
        ax.plot(i + jitter, vals, "o", color="C0", alpha=0.6, ms=5, label="committed seeds" if i == 0 else None)
        m = mean_interval(vals, confidence)
        if not np.isnan(m.low):
            ax.errorbar(i + 0.3, m.mean, yerr=[[m.mean - m.low], [m.high - m.mean]], fmt="_", color="k", capsize=4,
                        label=f"mean, {confidence:.0%} CI" if i == 0 else None)
        if key in marks:
            ax.plot(i, marks[key], "D", color=NON_MATCH, ms=8, label="this run" if i == 0 else None)
    ax.set(xticks=range(len(values)), xticklabels=list(values), ylabel=ylabel, title=title)
    ax.set_xlim(-0.6, len(values) - 0.4)
    ax.legend(frameon=False, fontsize="small")
    fig.tight_layout()
    return fig
