"""Figures of the relation module and GCP (chapters 4, 5 and 8); the numbers come from
:mod:`rrid.explain` and :mod:`rrid.cost`.

* :func:`relation_activation_maps`: per-part maps of R_p for the rest-only model and Eq. (1),
  with each model's top-k retrievals (the paper's Fig. 6; the maps are defined in
  :func:`rrid.explain.relation_maps`).
* Widget figures, each drawn from a few tensors and the one or two values a widget sets:
  :func:`rest_composition` (stripe i and its rest r_i), :func:`relation_on_off` (q_i with and
  without R_p), :func:`relation_cost` (n against parameters, MACs and feature size, from
  :func:`rrid.cost.relation_cost`), :func:`gcp_panel` (one channel's p_i, p_max, p_avg,
  p_cont, any n).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from rrid import explain
from rrid.cost import relation_cost as cost
from rrid.retrieval import top_k
from rrid.viz.style import MATCH, NON_MATCH, as_rgb, gallery_cell, use_style

__all__ = ["relation_activation_maps", "rest_composition", "relation_on_off", "relation_cost", "gcp_panel"]


# ----------------------------------------------------------------------------- Fig. 6


def _stripe_outline(ax, first: float, stop: float, width: float, colour="white", lw=2.0):
    ax.add_patch(plt.Rectangle((0, first), width, stop - first, fill=False, ec=colour, lw=lw))


def relation_activation_maps(models, image, display=None, parts=None, scale: str = "P6", rankings=None,
                             query: int | None = None, k: int = 3, normalize: str = "row", alpha: float = 0.55):
    """Per-part activation maps of R_p, one row per model (the paper's Fig. 6).

    ``models``: ``{label: RRID}``, typically ``{"R_p(r̄_i)": rest-only model, "R_p(T(p̄_i, r̄_i))":
    row-5 model}``; ``image``: the (3, H, W) normalised input; ``display``: what to draw under
    the maps (a path, PIL image or array; default: ``image`` rescaled). Column i shows
    A_i = max(0, sum_k x_k d||R_p(.)_i||^2 / d x_k) (:func:`rrid.explain.relation_maps`) on the
    feature map's cells (nearest-neighbour upsampling: one coloured block per cell), stripe i
    outlined, and the share of A_i outside stripe i ("map all 0" where A_i = 0). ``normalize``:
    "row" (one colour scale per model, parts comparable) or "panel". With ``rankings``
    (``{label: Ranking}``, same keys) and ``query`` (the image's index in them) each row ends
    with that model's top-k retrievals.
    """
    use_style()
    if normalize not in ("row", "panel"):
        raise ValueError(f"relation_activation_maps: normalize={normalize!r}: expected 'row' or 'panel'")
    if rankings is not None and (query is None or set(rankings) != set(models)):
        raise ValueError("relation_activation_maps: rankings needs one Ranking per model (same keys as models) "
                         f"and the query index; got keys {list(rankings)} for models {list(models)}, query={query!r}")
    results = {name: explain.relation_maps(m, image, scale, parts) for name, m in models.items()}
    img = as_rgb(image if display is None else display)
    H, W = img.shape[:2]
    P = len(next(iter(results.values())).parts)
    extra = (1 + k) if rankings is not None else 0  # a gap column, then the retrievals
    ratios = [1.0] * P + ([0.3] + [1.0] * k if extra else [])
    fig, axes = plt.subplots(len(models), P + extra, squeeze=False, gridspec_kw={"width_ratios": ratios},
                             figsize=(1.2 * sum(ratios) + 1.0, 2.9 * len(models)))
    for r, (row, (name, res)) in enumerate(zip(axes, results.items())):
        maps = res.maps[0].numpy()
        h = maps.shape[1]
        share = res.rest_share()[0]
        for col, i in enumerate(res.parts):
            ax = row[col]
            vmax = float(maps.max() if normalize == "row" else maps[col].max()) or 1.0
            ax.imshow(img)
            ax.imshow(maps[col], cmap="jet", alpha=alpha, vmin=0, vmax=vmax, extent=(0, W, H, 0),
                      interpolation="nearest")
            first, stop = res.rows[i - 1]
            _stripe_outline(ax, first * H / h, stop * H / h, W)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            share_i = float(share[col])
            ax.set_xlabel("map all 0" if share_i != share_i else f"rest {100 * share_i:.0f}%", fontsize="small")
            if r == 0:
                ax.set_title(f"i = {i}")
        row[0].set_ylabel(name)
        if extra:
            row[P].axis("off")
            order, matches = top_k(rankings[name], query, k)
            for j, ax in enumerate(row[P + 1:]):
                if j < len(order):
                    gallery_cell(ax, rankings[name].gallery.paths[order[j]], matches[j],
                                  f"rank {j + 1}" if r == 0 else "")
                else:
                    ax.axis("off")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- chapter 4 widgets


def _strips(ax, rows, labels, title, vmin=None, vmax=None, cmap="viridis"):
    ax.imshow(np.stack([np.asarray(r, dtype=float) for r in rows]), cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax,
              interpolation="nearest")
    ax.set(title=title, yticks=range(len(labels)), yticklabels=labels, xlabel="channel")
    ax.grid(False)


def rest_composition(features, i: int, image=None, index: int = 0, channels: int = 48):
    """Stripe i and the stripes that form its rest r_i = 1/(n-1) sum_{j != i} p_j.

    ``features``: one scale of ``model.forward_features(images)`` (``f["P6"]``) or p (N, n, C);
    ``i``: the stripe, 1..n (the widget's value); ``image``: drawn with stripe i in orange and
    its rest in blue (equal bands of the image, exact when n divides the map height). Panels:
    all p_j with their weights in r_i, then p_i and r_i, then p̄_i and r̄_i when the features have
    them (first ``channels`` channels; p_j, p_i and r_i share one colour scale).
    """
    use_style()
    comp = explain.rest_composition(features, i, index)
    p = explain._one(features["p"] if not isinstance(features, torch.Tensor) else features, index, 2).float()
    n, ch = p.shape[0], min(channels, p.shape[1])
    w = comp["weights"].numpy()
    has_bar = "p_bar_i" in comp
    panels = (1 if image is not None else 0) + 2 + has_bar
    ratios = ([0.6] if image is not None else []) + [2.2, 2.0] + ([2.0] if has_bar else [])
    fig, axes = plt.subplots(1, panels, figsize=(2.6 * sum(ratios), 3.0), gridspec_kw={"width_ratios": ratios})
    axes = list(np.atleast_1d(axes))
    if image is not None:
        ax = axes.pop(0)
        img = as_rgb(image)
        H, W = img.shape[:2]
        ax.imshow(img)
        for j in range(n):
            colour = "tab:orange" if j == i - 1 else "tab:blue"
            ax.add_patch(plt.Rectangle((0, j * H / n), W, H / n, fc=colour, alpha=0.35 if j == i - 1 else 0.2,
                                       ec=colour, lw=1.5))
        ax.set(title=f"i = {i}", xticks=[], yticks=[])
        ax.grid(False)
    vmax = float(p[:, :ch].max()) or 1.0
    ax = axes[0]
    _strips(ax, p[:, :ch].numpy(), [f"p{j + 1}  ×{'0' if w[j] == 0 else f'1/{n - 1}'}" for j in range(n)],
            f"p_j (weights of r_{i})", 0, vmax)
    ax.add_patch(plt.Rectangle((-0.5, i - 1.5), ch, 1, fill=False, ec="tab:orange", lw=2.5))
    _strips(axes[1], [comp["p_i"][:ch].float().numpy(), comp["r_i"][:ch].float().numpy()], [f"p{i}", f"r{i}"],
            f"p_{i} and r_{i} = mean of the other {n - 1}", 0, vmax)
    if has_bar:
        bars = [comp["p_bar_i"].float().numpy(), comp["r_bar_i"].float().numpy()]
        cb = min(ch, len(bars[0]))
        _strips(axes[2], [b[:cb] for b in bars], [f"p̄{i}", f"r̄{i}"], f"p̄_{i}, r̄_{i} (C -> c reductions)", 0,
                float(max(b[:cb].max() for b in bars)) or 1.0)
    fig.tight_layout()
    return fig


def relation_on_off(features, relation: bool = True, index: int = 0, channels: int = 64):
    """q_i of one image with the relation module on (Eq. 1) or off (q_i = p̄_i), same weights.

    ``features``: one scale of ``model.forward_features(images)`` of a model with a relation
    module; ``relation``: the widget's toggle. Left: the n local features (first ``channels``
    channels) in the state shown, on a colour scale shared by both states; right: ||p̄_i|| and
    ||q_i|| per stripe (the state shown in full colour) and ||R_p(.)_i|| = ||q_i - p̄_i||.
    """
    use_style()
    sw = explain.relation_switch(features, index)
    shown = (sw["on"] if relation else sw["off"]).float()
    n, ch = shown.shape[0], min(channels, shown.shape[1])
    vmax = float(torch.maximum(sw["on"][:, :ch], sw["off"][:, :ch]).max()) or 1.0
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [2, 1.3]})
    label = "q_i = p̄_i + R_p(.)  (relation on)" if relation else "q_i = p̄_i  (relation off)"
    _strips(left, shown[:, :ch].numpy(), [f"q{i + 1}" for i in range(n)], label, 0, vmax)
    x = np.arange(1, n + 1)
    right.bar(x - 0.2, sw["norm_off"].numpy(), 0.4, label="||p̄_i|| (off)", alpha=0.35 if relation else 1.0)
    right.bar(x + 0.2, sw["norm_on"].numpy(), 0.4, label="||q_i|| (on)", alpha=1.0 if relation else 0.35)
    right.plot(x, sw["norm_residual"].numpy(), "ko-", ms=4, label="||R_p(.)_i||")
    right.set(xlabel="stripe i (1: top)", ylabel="norm", xticks=x, title="relation on / off")
    right.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))  # beside the bars, not on them
    fig.tight_layout()
    return fig


def relation_cost(n: int = 6, C: int = 2048, c: int = 256, ns=range(2, 13),
                  designs=("one_vs_rest", "all_pairs")):
    """Parameters, MACs per image and feature size of the local features of one scale P_n
    against the number of stripes ``ns``, for each of ``designs`` (:func:`rrid.cost.relation_cost`:
    "one_vs_rest" = Eq. 1, "rest_only", "none", "all_pairs" = the book's own design), with the
    widget's ``n`` marked and its numbers in the titles."""
    use_style()
    labels = {"one_vs_rest": "one-vs.-rest (Eq. 1)", "rest_only": "rest-only R_p(r̄_i)",
              "none": "no relation (q_i = p̄_i)", "all_pairs": "all pairs (the book's design)"}
    # one-vs.-rest, rest-only and no relation share the feature size n c: dashed lines and hollow
    # markers of other sizes keep a line that lies on another one visible
    styles = {"one_vs_rest": dict(marker="o", ms=3), "all_pairs": dict(marker="^", ms=4),
              "rest_only": dict(marker="s", ms=7, mfc="none", ls=":"),
              "none": dict(marker="D", ms=6, mfc="none", ls="--")}
    ns = list(ns)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), layout="constrained")
    for ax, field, scale, title in [(axes[0], "params", 1e6, "parameters (M)"),
                                    (axes[1], "macs", 1e6, "MACs / image (M)"),
                                    (axes[2], "feature_dim", 1, "feature size")]:
        at_n = []
        for design in designs:
            values = [getattr(cost(m, C, c, design), field) / scale for m in ns]
            ax.plot(ns, values, label=labels[design], **styles[design])
            at_n.append(getattr(cost(n, C, c, design), field) / scale)
        ax.axvline(n, color="grey", ls=":", lw=1)
        fmt = (lambda v: f"{v:.2f}") if scale != 1 else (lambda v: f"{v:,.0f}")
        ax.set(xlabel="stripes n", title=f"{title}\nn = {n}: " + " vs ".join(fmt(v) for v in at_n))
    # one legend below the three panels, off the curves
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=len(designs),
               fontsize="small", frameon=False)
    fig.suptitle(f"local features of one scale P_n, C = {C}, c = {c}", fontsize="medium")
    return fig


# ----------------------------------------------------------------------------- chapter 5 widget


def gcp_panel(x, channel: int, contrast: str = "official", n: int = 6, image=None, index: int = 0):
    """One channel of GCP's inputs (Eq. 2) from a feature map x (N, C, H, W) or (C, H, W).

    Bars: p_i = GMP of stripe i (1: top) for ``n`` stripes, the stripe of p_max in red;
    lines: p_max, p_avg and p_cont, ``contrast`` "official" ((sum_i p_i - p_max)/(n-1), the
    authors' code) or "paper" (p_avg - p_max). With ``image``: each stripe's max cell boxed
    (red: p_max's). The widget sets ``channel``, ``contrast`` and ``n``.
    """
    use_style()
    g = explain.gcp_channel(x, channel, n, contrast, index)
    if image is None:
        fig, ax = plt.subplots(figsize=(8.5, 3.6))
        axes = [ax]
    else:
        fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.6), gridspec_kw={"width_ratios": [0.5, 2]})
        axes = list(axes)
    if image is not None:
        ax = axes.pop(0)
        img = as_rgb(image)
        H, W = img.shape[:2]
        h, w = explain._one(x, index, 3).shape[1:]
        ax.imshow(img)
        for s, ((first, stop), (r, col)) in enumerate(zip(g["rows"], g["cells"])):
            if s:
                ax.axhline(first * H / h, color="cyan", lw=0.8)
            ax.add_patch(plt.Rectangle((col * W / w, r * H / h), W / w, H / h, fill=False, lw=2.5,
                                       ec=NON_MATCH if s + 1 == g["max_stripe"] else MATCH))
        ax.set(title=f"channel {channel}", xticks=[], yticks=[])
        ax.grid(False)
    ax = axes[0]
    stripes = np.arange(1, n + 1)
    colours = [NON_MATCH if s == g["max_stripe"] else "tab:blue" for s in stripes]
    ax.barh(stripes, g["p"].float().numpy(), color=colours)
    ax.invert_yaxis()
    ax.axvline(g["p_max"], color=NON_MATCH, ls="--", label=f"p_max = {g['p_max']:.3f}")
    ax.axvline(g["p_avg"], color="grey", ls=":", label=f"p_avg = {g['p_avg']:.3f}")
    formula = "(Σ p_i - p_max)/(n-1)" if contrast == "official" else "p_avg - p_max"
    ax.axvline(g["p_cont"], color=MATCH, lw=2, label=f"p_cont = {formula} = {g['p_cont']:.3f}")
    ax.axvline(0, color="black", lw=0.6)
    ax.set(yticks=stripes, yticklabels=[f"p{s}" for s in stripes], xlabel="value",
           title=f"channel {channel}, n = {n}, contrast: {contrast}")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig

