"""Figures for the book. Every function returns a matplotlib Figure and never calls plt.show().

* :func:`retrieval_grid`: a query and its top-k gallery images, green border for a match,
  red for a non-match, with distances (the paper's Fig. 4).
* :func:`activation_maps`: the backbone map's channel sum over the image, the stripe borders
  and, per stripe, its peak and the cell that holds the most channels' maxima under GMP (not
  the paper's Fig. 6, which :func:`relation_activation_maps` draws).
* :func:`cmc_curve`, :func:`ap_histogram`, :func:`ranking_toy`.
* :func:`retrieval_comparison`: the top-k of several models for the same queries (Fig. 5).
* :func:`relation_activation_maps`: per-part maps of R_p for the rest-only model and Eq. (1),
  with each model's top-k retrievals (Fig. 6; the maps are defined in :mod:`rrid.explain`).
* Widget figures, each drawn from a few tensors and the one or two values a widget sets:
  :func:`rest_composition` (stripe i and its rest r_i), :func:`relation_on_off` (q_i with and
  without R_p), :func:`relation_cost` (n against parameters, MACs and feature size, from
  :mod:`rrid.profile`), :func:`gcp_panel` (one channel's p_i, p_max, p_avg, p_cont, any n).
* :func:`table1_tradeoff`: mAP against feature size for every method of Table 1.
* :func:`market1501_landscape`: Market-1501 mAP against rank-1 for Table 1 and for later methods
  (``rrid.paper.LATER_METHODS``, published numbers with their sources).
* :func:`architecture`: the network of any ``RRIDConfig`` (Figs. 1 and 2), annotated with the
  shapes of its own forward pass (:func:`architecture_shapes`).
* :func:`augmentation_batch`: real images as the training transform hands them to the model
  (flip, the authors' random erasing, Zhong et al.'s), from :func:`augmentation_samples`.
* :func:`seed_strip`: values over seeds per variant with their t interval, new runs marked.
"""

from __future__ import annotations

import dataclasses

import matplotlib

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

__all__ = ["use_style", "retrieval_grid", "activation_maps", "cmc_curve", "ap_histogram", "ranking_toy",
           "retrieval_comparison", "relation_activation_maps", "rest_composition", "relation_on_off",
           "relation_cost", "gcp_panel", "MATCH", "NON_MATCH", "table1_tradeoff", "architecture",
           "architecture_shapes", "augmentation_batch", "augmentation_samples", "market1501_landscape", "seed_strip"]

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


def _gallery_cell(ax, image, match: bool, title: str = "") -> None:
    """One retrieved image, bordered green (match) or red (non-match)."""
    ax.imshow(_image(image))
    ax.set_title(title)
    _border(ax, MATCH if match else NON_MATCH)


def retrieval_grid(query_paths, gallery_paths, distmat, q_pids, g_pids, q_camids, g_camids,
                   queries=(0, 1, 2), topk: int = 5):
    """One row per query: the query, then its top-k gallery images under the Market-1501
    protocol (same-identity same-camera gallery images are skipped), bordered green for a
    match and red for a non-match, titled with the distance."""
    from rrid.evaluation import Features
    from rrid.retrieval import Ranking, top_k

    use_style()
    d = distmat.detach().cpu() if isinstance(distmat, torch.Tensor) else torch.as_tensor(np.asarray(distmat))
    none = torch.empty(0, 0)
    ranking = Ranking(d, Features(none, np.asarray(q_pids), np.asarray(q_camids), list(query_paths)),
                      Features(none, np.asarray(g_pids), np.asarray(g_camids), list(gallery_paths)))
    queries = list(queries)
    fig, axes = plt.subplots(len(queries), topk + 1, figsize=(1.4 * (topk + 1), 2.8 * len(queries)), squeeze=False)
    for row, q in zip(axes, queries):
        row[0].imshow(_image(query_paths[q]))
        row[0].set_title(f"query {ranking.query.pids[q]}")
        _border(row[0], "black", 2)
        order, matches = top_k(ranking, q, topk)
        for ax, g, match in zip(row[1:], order, matches):
            _gallery_cell(ax, gallery_paths[g], match, f"{float(d[q, g]):.3f}")
        for ax in row[1 + len(order):]:
            ax.axis("off")
    fig.tight_layout()
    return fig


def activation_maps(model, image_tensor, image_for_display=None, num_stripes: int = 6):
    """Where the backbone responds on one image, and where GMP reads each stripe.

    Right panel: the channel sum sum_k x_k(h, w) of ``model.backbone``'s feature map x over the
    image (bilinear), the borders of ``num_stripes`` stripes as ``stripe_pool`` cuts them
    (:func:`rrid.explain.stripe_rows`), and two marks per stripe:

    * a star on the peak of the channel sum in the stripe: the brightest cell of this picture,
      which is *not* the cell GMP picks (GMP picks one cell per channel);
    * a circle on the cell that holds the maxima of the most channels of p_i
      (:func:`rrid.explain.gmp_holders`): the cell GMP reads most often. The title gives, per
      stripe, that cell's share of the stripe's channels.

    The two marks sit on the same cell only where one cell dominates both. This is a picture of
    the backbone, not the paper's Fig. 6 (per-part maps of R_p): see :func:`relation_activation_maps`.
    """
    from matplotlib.lines import Line2D

    from rrid.explain import gmp_holders, stripe_rows

    use_style()
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        fmap = model.backbone(image_tensor.unsqueeze(0) if image_tensor.ndim == 3 else image_tensor[:1])
    model.train(was_training)
    x = fmap[0].detach().cpu().double()                                # (C, h, w)
    act = x.sum(0).numpy()                                             # (h, w)
    holders = gmp_holders(x, num_stripes).numpy()                      # (n, h, w)
    h, w = act.shape
    img = _image(image_tensor if image_for_display is None else image_for_display)
    H, W = img.shape[:2]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(4.4, 4.8))
    ax0.imshow(img)
    ax0.set_title("image")
    ax1.imshow(img)
    ax1.imshow(act, cmap="jet", alpha=0.5, extent=(0, W, H, 0), interpolation="bilinear")
    ax1.set_title("channel sum of x")
    shares = []
    for i, (top, bottom) in enumerate(stripe_rows(h, num_stripes)):
        ax1.axhline(top * H / h, color="white", lw=1)
        y, c = np.unravel_index(np.argmax(act[top:bottom]), (bottom - top, w))
        ax1.plot((c + 0.5) * W / w, (top + y + 0.5) * H / h, "w*", ms=12, mec="black")
        stripe = holders[i, top:bottom]
        y, c = np.unravel_index(np.argmax(stripe), stripe.shape)
        ax1.plot((c + 0.5) * W / w, (top + y + 0.5) * H / h, "o", ms=17, mfc="none", mec="white", mew=2)
        shares.append(stripe.max() / max(stripe.sum(), 1e-12))
    ax1.legend(handles=[Line2D([], [], marker="*", ls="", color="w", mec="black", ms=10, label="peak of the sum"),
                        Line2D([], [], marker="o", ls="", mfc="none", mec="black", ms=10,
                               label="most channel maxima (GMP)")],
               loc="upper center", bbox_to_anchor=(0.0, -0.02), fontsize="x-small", frameon=False)
    fig.suptitle("share of channels held by the circled cell: "
                 + " ".join(f"{100 * s:.0f}%" for s in shares), fontsize="x-small")
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


# ----------------------------------------------------------------------------- Fig. 5


def retrieval_comparison(rankings, queries, k: int = 5, distances: bool = True):
    """The top-k retrievals of several models for the same queries (the paper's Fig. 5).

    ``rankings``: ``{model name: rrid.retrieval.Ranking}`` over the same queries and gallery
    (``Ranking.from_features(qf, gf)`` or ``rrid.retrieval.rank(model, data, H, W)``);
    ``queries``: query indices (``rrid.retrieval.pick_queries`` draws informative ones).
    One block of k columns per query: its image on top, below it one row per model with that
    model's top-k under the Market-1501 protocol, bordered green for a match and red for a
    non-match (titled with the distance when ``distances``). ``k=1`` is the paper's layout.
    """
    from rrid.retrieval import _check_same_queries, top_k

    use_style()
    _check_same_queries(rankings)
    queries, names = list(queries), list(rankings)
    first = rankings[names[0]]
    columns, ratios = [], []
    for b in range(len(queries)):
        if b:
            ratios.append(0.25)  # a narrow gap between query blocks
            columns.append(None)
        columns += [(b, j) for j in range(k)]
        ratios += [1.0] * k
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
            axes[0, col].imshow(_image(first.query.paths[q]))
            axes[0, col].set_title(f"query {first.query.pids[q]}")
            _border(axes[0, col], "black", 2)
        for m, name in enumerate(names):
            order, matches = top_k(rankings[name], q, k)
            if j < len(order):
                ax = axes[1 + m, col]
                ax.axis("on")
                d = rankings[name].distmat[q, order[j]]
                _gallery_cell(ax, rankings[name].gallery.paths[order[j]], matches[j], f"{float(d):.3f}" if distances else "")
                if j == 0 and b == 0:
                    ax.set_ylabel(name)
    fig.tight_layout()
    return fig


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
    outlined, and the share of A_i outside stripe i ("map all 0" where A_i = 0). ``normalize``: "row" (one colour scale per
    model, parts comparable) or "panel". With ``rankings`` (``{label: Ranking}``, same keys) and
    ``query`` (the image's index in them) each row ends with that model's top-k retrievals.
    """
    from rrid import explain
    from rrid.retrieval import top_k

    use_style()
    if normalize not in ("row", "panel"):
        raise ValueError(f"relation_activation_maps: normalize={normalize!r}: expected 'row' or 'panel'")
    if rankings is not None and (query is None or set(rankings) != set(models)):
        raise ValueError("relation_activation_maps: rankings needs one Ranking per model (same keys as models) "
                         f"and the query index; got keys {list(rankings)} for models {list(models)}, query={query!r}")
    results = {name: explain.relation_maps(m, image, scale, parts) for name, m in models.items()}
    img = _image(image if display is None else display)
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
                    _gallery_cell(ax, rankings[name].gallery.paths[order[j]], matches[j],
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
    from rrid import explain

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
        img = _image(image)
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
    from rrid import explain

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
    right.legend(fontsize="small")
    fig.tight_layout()
    return fig


def relation_cost(n: int = 6, C: int = 2048, c: int = 256, ns=range(2, 13),
                  designs=("one_vs_rest", "all_pairs")):
    """Parameters, MACs per image and feature size of the local features of one scale P_n
    against the number of stripes ``ns``, for each of ``designs`` (:func:`rrid.profile.relation_cost`:
    "one_vs_rest" = Eq. 1, "rest_only", "none", "all_pairs" = the book's own design), with the
    widget's ``n`` marked and its numbers in the titles."""
    from rrid.profile import relation_cost as cost

    use_style()
    labels = {"one_vs_rest": "one-vs.-rest (Eq. 1)", "rest_only": "rest-only R_p(r̄_i)",
              "none": "no relation (q_i = p̄_i)", "all_pairs": "all pairs (the book's design)"}
    ns = list(ns)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, field, scale, title in [(axes[0], "params", 1e6, "parameters (M)"), (axes[1], "macs", 1e6, "MACs / image (M)"),
                                    (axes[2], "feature_dim", 1, "feature size")]:
        at_n = []
        for design in designs:
            values = [getattr(cost(m, C, c, design), field) / scale for m in ns]
            ax.plot(ns, values, marker="o", ms=3, label=labels[design])
            at_n.append(getattr(cost(n, C, c, design), field) / scale)
        ax.axvline(n, color="grey", ls=":", lw=1)
        fmt = (lambda v: f"{v:.2f}") if scale != 1 else (lambda v: f"{v:,.0f}")
        ax.set(xlabel="stripes n", title=f"{title}\nn = {n}: " + " vs ".join(fmt(v) for v in at_n))
    axes[0].legend(fontsize="small")
    fig.suptitle(f"local features of one scale P_n, C = {C}, c = {c}", fontsize="medium")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- chapter 5 widget


def gcp_panel(x, channel: int, contrast: str = "official", n: int = 6, image=None, index: int = 0):
    """One channel of GCP's inputs (Eq. 2) from a feature map x (N, C, H, W) or (C, H, W).

    Bars: p_i = GMP of stripe i (1: top) for ``n`` stripes, the stripe of p_max in red;
    lines: p_max, p_avg and p_cont, ``contrast`` "official" ((sum_i p_i - p_max)/(n-1), the
    authors' code) or "paper" (p_avg - p_max). With ``image``: each stripe's max cell boxed
    (red: p_max's). The widget sets ``channel``, ``contrast`` and ``n``.
    """
    from rrid import explain

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
        img = _image(image)
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


# ----------------------------------------------------------------------------- Table 1


def _label_points(ax, points, fontsize=8, marker_px=None):
    """Label each (x, y, text, bold) point without overlaps where possible: for each label in
    turn the first of a few offsets (right, left, above, below, diagonals) whose box stays
    inside the axes and clear of the labels placed so far and of every marker (``marker_px``:
    the width of each marker in pixels, 10 by default); the least overlapping offset
    otherwise. Returns the text artists (gid ``"label:<text>"``)."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    candidates = [((8, 0), "left", "center"), ((-8, 0), "right", "center"), ((0, 8), "center", "bottom"),
                  ((0, -8), "center", "top"), ((7, 7), "left", "bottom"), ((7, -7), "left", "top"),
                  ((-7, 7), "right", "bottom"), ((-7, -7), "right", "top"), ((0, 16), "center", "bottom"),
                  ((0, -16), "center", "top"), ((14, 12), "left", "bottom"), ((-14, -12), "right", "top")]
    to_display = ax.transData.transform
    sizes = marker_px or [10] * len(points)
    markers = [matplotlib.transforms.Bbox.from_bounds(*(to_display((x, y)) - size / 2), size, size)
               for (x, y, _, _), size in zip(points, sizes)]
    inside = ax.get_window_extent(renderer)
    placed, texts = [], []

    def overlap(a, b):
        w = min(a.x1, b.x1) - max(a.x0, b.x0)
        h = min(a.y1, b.y1) - max(a.y0, b.y0)
        return max(w, 0) * max(h, 0)

    for i, (x, y, text, bold) in enumerate(points):
        best = None
        for offset, ha, va in candidates:
            t = ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", ha=ha, va=va,
                            fontsize=fontsize, fontweight="bold" if bold else "normal")
            box = t.get_window_extent(renderer)
            cost = sum(overlap(box, b) for b in placed) + sum(overlap(box, m) for j, m in enumerate(markers) if j != i)
            cost += box.width * box.height - overlap(box, inside)  # the part outside the axes
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, t, box)
            else:
                t.remove()
            if cost == 0:
                break
        _, t, box = best
        t.set_gid(f"label:{text}")
        placed.append(box)
        texts.append(t)
    return texts


def table1_tradeoff():
    """mAP against feature size for every method of the paper's Table 1 (``rrid.paper.TABLE1``).

    Three panels: Market-1501, CUHK03 labeled, CUHK03 detected; a method appears in a panel
    when the table gives its mAP there. Ours-S and Ours-F are highlighted. The feature axis is
    logarithmic (128 to 3,840 numbers per image). Table 1's DukeMTMC-reID columns are not in
    the paper text available here, so there is no Duke panel (the figure says so).
    """
    from rrid import paper

    use_style()
    panels = [("market_map", "Market-1501"), ("cuhk03_labeled_map", "CUHK03 labeled"),
              ("cuhk03_detected_map", "CUHK03 detected")]
    colours = sns.color_palette("colorblind")
    styles = {False: dict(marker="o", s=30, color=colours[7], label="other methods"),
              True: dict(marker="*", s=170, color=colours[1], edgecolor="black", linewidth=0.5,
                         label="Ours-S, Ours-F (Park & Ham)")}
    fig, axes = plt.subplots(1, 3, figsize=(10, 4.1))
    for ax, (field, title) in zip(axes, panels):
        rows = [r for r in paper.TABLE1 if getattr(r, field) is not None]
        for ours, style in styles.items():
            chosen = [r for r in rows if r.ours == ours]
            ax.scatter([r.feature_dim for r in chosen], [getattr(r, field) for r in chosen], zorder=3,
                       gid=f"points:{'ours' if ours else 'others'}", **style)
        values = [getattr(r, field) for r in rows]
        ax.set_xscale("log", base=2)
        ax.set_xlim(80, 10000)
        ax.set_ylim(min(values) - 6, max(values) + 5)
        ax.set_xticks([128, 256, 512, 1024, 2048, 4096], ["128", "256", "512", "1k", "2k", "4k"])
        ax.minorticks_off()
        ax.set(title=title, xlabel="feature size (F-dim, log scale)", ylabel="mAP (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower left", ncol=2, fontsize="small", frameon=False)
    fig.text(0.99, 0.01, "Park & Ham (AAAI 2020), Table 1. The DukeMTMC-reID columns of Table 1\n"
             "are not in the paper text available here: no Duke panel.", ha="right", va="bottom",
             fontsize="small", style="italic")
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    px = fig.dpi / 72  # scatter sizes are in points^2
    for ax, (field, _) in zip(axes, panels):
        rows = [r for r in paper.TABLE1 if getattr(r, field) is not None]
        rows.sort(key=lambda r: (not r.ours, -getattr(r, field)))  # ours first, then from the top
        _label_points(ax, [(r.feature_dim, getattr(r, field), r.method, r.ours) for r in rows],
                      marker_px=[px * styles[r.ours]["s"] ** 0.5 for r in rows])
    return fig


def market1501_landscape(later=None, zoom=(93.5, 96.5, 80.0, 91.0)):
    """Market-1501 mAP against rank-1 for Table 1's methods and for later ones, in two panels.

    The points are ``rrid.paper.TABLE1`` (grey circles; Ours-S and Ours-F as stars) and
    ``later`` (default ``rrid.paper.LATER_METHODS``: diamonds, filled when the numbers are the
    method's authors' own, hollow when ``rerun``). The left panel holds every point and a box
    around ``zoom`` = (rank-1 low, high, mAP low, high); the right panel is that box, where the
    methods crowd together. Each point is labelled in the panel where it is not crowded out
    (the right panel for the points in the box). Nothing is computed: the numbers are the
    published ones, with their different backbones, input sizes and recipes.
    """
    from matplotlib.patches import Rectangle

    from rrid import paper

    later = paper.LATER_METHODS if later is None else list(later)
    use_style()
    colours = sns.color_palette("colorblind")
    groups = [  # gid, rows, style, whose labels are bold
        ("table1", [r for r in paper.TABLE1 if not r.ours],
         dict(marker="o", s=30, color=colours[7], label="Table 1 of Park & Ham (2020)"), False),
        ("ours", [r for r in paper.TABLE1 if r.ours],
         dict(marker="*", s=170, color=colours[1], edgecolor="black", linewidth=0.5, label="Ours-S, Ours-F"), True),
        ("later", [r for r in later if not r.rerun],
         dict(marker="D", s=45, color=colours[0], edgecolor="black", linewidth=0.5,
              label="later, authors' numbers"), False),
        ("rerun", [r for r in later if r.rerun],
         dict(marker="D", s=45, facecolor="none", edgecolor=colours[0], linewidth=1.5,
              label="later, re-run"), False),
    ]
    x0, x1, y0, y1 = zoom

    def inside(r):
        return x0 <= r.market_rank1 <= x1 and y0 <= r.market_map <= y1

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax in axes:
        for gid, rows, style, _ in groups:
            if rows:
                ax.scatter([r.market_rank1 for r in rows], [r.market_map for r in rows], zorder=3,
                           gid=f"points:{gid}", **style)
        ax.set(xlabel="rank-1 (%)", ylabel="mAP (%)")
    axes[0].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linestyle="--", edgecolor="black",
                                linewidth=0.8, gid="zoom"))
    axes[0].set_title("Market-1501: every method")
    axes[1].set(xlim=(x0, x1), ylim=(y0, y1), title="the dashed box, enlarged")
    axes[1].legend(*axes[0].get_legend_handles_labels(), loc="lower right", fontsize="small", frameon=True)
    fig.text(0.99, 0.01, "RRID's and the later methods' numbers are without re-ranking. Re-run: a model zoo's or "
             "re-organised code's run.\nBackbones, input sizes and training recipes differ: see rrid.paper.LATER_METHODS "
             "(source and note of each row).", ha="right", va="bottom",
             fontsize="small", style="italic")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    px = fig.dpi / 72  # scatter sizes are in points^2
    for ax, here in ((axes[0], lambda r: not inside(r)), (axes[1], inside)):
        points, sizes = [], []
        for _, rows, style, bold in groups:
            for r in rows:
                if here(r):
                    points.append((r.market_rank1, r.market_map, r.method, bold))
                    sizes.append(px * style["s"] ** 0.5)
        _label_points(ax, points, marker_px=sizes)
    return fig


# ----------------------------------------------------------------------------- architecture (Figs. 1, 2)

_FILL = {"input": "#eeeeee", "backbone": "#d9d9d9", "map": "#cfe3f2", "local": "#d6ecd2", "global": "#fbe3c4",
         "relation": "#b9dcb3", "gcp": "#f6c88f", "out": "#e4d7ef"}
_BACKBONE_NAMES = {"resnet50": "ResNet-50", "resnet34": "ResNet-34", "resnet18": "ResNet-18"}
# How each value of RRIDConfig.relation is drawn: the title of its box in Fig. 1, the input of
# R_p (in q_1 = p̄_1 + R_p(input)) and whether that input is the concatenation T(p̄_1, r̄_1).
# None: no relation module (q_i = p̄_i). A new variant needs one entry here.
_RELATION_DRAWING = {
    True: dict(title="relation module", argument=r"T(\bar{p}_1, \bar{r}_1)", concat=True),
    "rest_only": dict(title="rest-only relation", argument=r"\bar{r}_1", concat=False),
    False: None,
}


def architecture_shapes(config=None, input_size=None, model=None) -> dict:
    """The shapes (batch dimension dropped) of one forward pass of the model, by name.

    Runs a zero image of ``input_size`` (default: the paper's 384 x 128) through
    ``RRID.forward_features`` and ``RRID.forward`` (eval mode, no gradients), with forward
    hooks on the layers the returned dict does not show. Keys: ``"image"`` (3, H, W), ``"x"``
    (C, h, w), ``"embedding"`` (feature_dim,) and per scale ``"P6/..."``: ``stripes`` (the
    rows of each stripe, measured with ``stripe_pool`` itself), every entry of
    ``ScaleHead.features`` (``p`` (n, C), ``p_bar``, ``r_bar``, ``q`` (n, c), ``p_max``,
    ``p_cont`` (C,), ``p_bar_max``, ``p_bar_cont``, ``q0`` (c,)), and from the hooks ``r``
    (r_1, C), ``R_p_in`` / ``R_p_out`` (stripe 1's R_p), ``R_g_in`` / ``R_g_out``,
    ``gcp_in`` (the p_i GCP pools) and ``pooled`` (x pooled by GMP / GAP / GAP+GMP).
    ``model`` (an ``RRID``) is used as it is when given; otherwise one is built from
    ``config`` (an ``RRIDConfig`` or a Table 2 row number) on PyTorch's "meta" device, which
    runs every layer's shape logic without computing anything (a second for ResNet-50).
    """
    from rrid.model import RRID, RRIDConfig, stripe_pool

    if model is None:
        config = RRIDConfig.table2(config) if isinstance(config, int) else (config or RRIDConfig())
        with torch.device("meta"):  # shapes without arithmetic: the same code, no weights, no time
            model = RRID(dataclasses.replace(config, pretrained=False), num_classes=1)
    height, width = input_size or (384, 128)
    shapes, hooks = {}, []

    def hook(name, take):
        def record(module, inputs, output):
            shapes[name] = tuple((inputs[0] if take == "in" else output).shape[1:])
        return record

    for scale, head in model.heads.items():
        local, glob = head.local, head.glob
        for attr, index, name, take in (("r_layers", 0, "r", "in"), ("R_p", 0, "R_p_in", "in"),
                                        ("R_p", 0, "R_p_out", "out")):
            layers = getattr(local, attr, None)
            if layers is not None:
                hooks.append(layers[index].register_forward_hook(hook(f"{scale}/{name}", take)))
        if glob is not None and hasattr(glob, "R_g"):
            hooks.append(glob.register_forward_hook(hook(f"{scale}/gcp_in", "in")))
            hooks.append(glob.R_g.register_forward_hook(hook(f"{scale}/R_g_in", "in")))
            hooks.append(glob.R_g.register_forward_hook(hook(f"{scale}/R_g_out", "out")))
        elif glob is not None and hasattr(glob, "layer"):
            hooks.append(glob.layer.register_forward_hook(hook(f"{scale}/pooled", "in")))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        image = torch.zeros(1, 3, height, width, device=device)
        with torch.no_grad():
            feats = model.forward_features(image)
            embedding = model(image)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    shapes["image"] = (3, height, width)
    shapes["x"] = tuple(feats["x"].shape[1:])
    shapes["embedding"] = tuple(embedding.shape[1:])
    rows = torch.arange(shapes["x"][1], dtype=torch.float32).view(1, 1, -1, 1)
    for scale, f in feats.items():
        if scale == "x":
            continue
        n = model.heads[scale].n
        top, bottom = -stripe_pool(-rows, n, "gmp")[0, :, 0], stripe_pool(rows, n, "gmp")[0, :, 0]
        shapes[f"{scale}/stripes"] = tuple(int(b - t + 1) for t, b in zip(top, bottom))
        shapes.update({f"{scale}/{k}": tuple(v.shape[1:]) for k, v in f.items()})
    return shapes


def _dims(shape, order=None) -> str:
    """(C, h, w) -> "h × w × C" (the paper's H x W x C order), (n, C) -> "n × C", (C,) -> "C"."""
    if order == "hwc":
        shape = (shape[1], shape[2], shape[0])
    return " × ".join(f"{d:,}" for d in shape)


def _stripe_text(heights, x_shape, each=True) -> str:
    lo, hi = min(heights), max(heights)
    rows = f"{lo}" if lo == hi else f"{lo}-{hi}"
    return f"{rows} × {x_shape[2]} × {x_shape[0]:,}" + (" each" if each else "")


class _Canvas:
    """Boxes and arrows in inches (one data unit = one inch of the figure)."""

    def __init__(self, width, height, fontsize=9):
        self.fig = plt.figure(figsize=(width, height))
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(0, height)
        self.ax.axis("off")
        self.fontsize = fontsize

    def box(self, cx, cy, w, title, shape=None, key=None, fill="map", gid=None, h=0.5):
        """A rounded box centred at (cx, cy): ``title`` above, ``shape`` (gid ``shape:<key>``) below."""
        from matplotlib.patches import FancyBboxPatch

        self.ax.add_patch(FancyBboxPatch((cx - w / 2, cy - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.06",
                                         fc=_FILL[fill], ec="#444444", lw=0.8, gid=gid))
        if shape is None:
            self.ax.text(cx, cy, title, ha="center", va="center", fontsize=self.fontsize)
        else:
            self.ax.text(cx, cy + h * 0.2, title, ha="center", va="center", fontsize=self.fontsize)
            self.ax.text(cx, cy - h * 0.24, shape, ha="center", va="center", fontsize=self.fontsize - 0.5,
                         color="#222222", gid=f"shape:{key}", fontweight="bold")
        return dict(cx=cx, cy=cy, w=w, h=h)

    def arrow(self, a, b, dx_a=0.0, dx_b=0.0):
        """From the bottom of box ``a`` to the top of box ``b`` (x offsets ``dx_a``, ``dx_b``)."""
        self.ax.annotate("", xy=(b["cx"] + dx_b, b["cy"] + b["h"] / 2), xytext=(a["cx"] + dx_a, a["cy"] - a["h"] / 2),
                         arrowprops=dict(arrowstyle="-|>", lw=0.8, color="#444444", shrinkA=0, shrinkB=1))

    def path(self, points):
        """A polyline ending in an arrow head (the skip connections)."""
        xs, ys = zip(*points)
        self.ax.plot(xs[:-1], ys[:-1], color="#444444", lw=0.8)
        self.ax.annotate("", xy=points[-1], xytext=points[-2],
                         arrowprops=dict(arrowstyle="-|>", lw=0.8, color="#444444", shrinkA=0, shrinkB=0))


def _describe(config) -> str:
    from rrid.paper import TABLE2

    arch = (tuple(sorted(config.scales)), config.global_pool, config.local_pool, config.relation)
    for t in TABLE2:
        if (tuple(sorted(t.scales)), t.global_pool, t.local_pool, t.relation) == arch:
            return f"Table 2, row {t.row}" + (f" ({t.name})" if t.name else "")
    if config.relation == "rest_only":
        return "rest-only variant (Fig. 6)"
    return "custom variant"


def architecture(config=None, input_size=None, detail: str = "model", scale: int | None = None, model=None):
    """The network drawn with the shapes of its own forward pass (the paper's Figs. 1 and 2).

    ``config``: an ``RRIDConfig`` or a Table 2 row number (default: Ours-F); ``model``: an
    ``RRID`` to draw instead (its ``config`` is used). ``input_size``: (H, W) of the dummy
    image, default the paper's (384, 128). Every shape printed in the figure comes from
    :func:`architecture_shapes` (one real forward pass), so the drawing cannot drift from the
    code; shapes are written in the paper's order (H × W × C for maps).

    ``detail="model"`` (Fig. 1): image -> backbone -> feature map x -> one branch per scale P_n
    (n stripes, p_i by GMP/GAP, the relation module or a plain reduction -> q_1..q_n, GCP or a
    global pooling -> q_0) -> the concatenated embedding of ``config.feature_dim`` numbers.
    ``detail="scale"`` (Fig. 2): one scale (``scale``, default the largest n) in detail: (a)
    how q_1 is made (p_1, r_1, p̄_1, r̄_1, T, R_p, the skip connection) and (b) GCP (p_max,
    p_cont, p̄_max, p̄_cont, T, R_g, the skip connection). Returns the Figure.
    """
    from rrid.model import BACKBONES, RRIDConfig

    if detail not in ("model", "scale"):
        raise ValueError(f"architecture(detail={detail!r}): expected 'model' (Fig. 1) or 'scale' (Fig. 2)")
    if model is not None:
        config = model.config
    else:
        config = RRIDConfig.table2(config) if isinstance(config, int) else (config or RRIDConfig())
    if config.relation not in _RELATION_DRAWING:
        raise ValueError(f"architecture: no drawing for RRIDConfig.relation={config.relation!r}; "
                         f"expected one of {list(_RELATION_DRAWING)} (add it to rrid.viz._RELATION_DRAWING)")
    shapes = architecture_shapes(config, input_size, model)
    use_style()
    title = (f"{_describe(config)}: {_BACKBONE_NAMES[config.backbone]}, input {shapes['image'][1]} × {shapes['image'][2]}, "
             f"C = {BACKBONES[config.backbone]:,}, c = {config.reduced_dim}")
    if detail == "model":
        return _draw_model(config, shapes, title)
    scale = max(config.scales) if scale is None else scale
    if scale not in config.scales:
        raise ValueError(f"architecture(scale={scale!r}): expected one of the config's scales {list(config.scales)}")
    return _draw_scale(config, shapes, scale, title)


def _pool_name(mode) -> str:
    return {"gmp": "GMP", "gap": "GAP", "gap+gmp": "GAP + GMP", "gcp": "GCP"}[mode]


def _draw_model(config, shapes, title):
    scales = sorted(config.scales, reverse=True)  # the model's head order: P6, P4, P2
    bw, sw, gap = 2.75, 1.15, 0.15                 # branch, sub-box width, margin (inches)
    width = max(len(scales) * bw, 2 * bw) + 2 * gap
    height = 7 * 0.82 + 1.25
    ys = [height - 0.75 - 0.82 * k for k in range(8)]
    cv = _Canvas(width, height)
    mid = width / 2
    cv.ax.text(gap, height - 0.2, title, ha="left", va="center", fontsize=cv.fontsize, style="italic")
    img = cv.box(mid, ys[0], 2.6, "input image", _dims(shapes["image"], "hwc"), "image", "input")
    bb = cv.box(mid, ys[1], 2.6, f"{_BACKBONE_NAMES[config.backbone]}, no GAP / fc, last stride {config.last_stride}",
                fill="backbone", h=0.42)
    cv.arrow(img, bb)
    x = cv.box(mid, ys[2], 2.6, "feature map x", _dims(shapes["x"], "hwc"), "x", "map")
    cv.arrow(bb, x)
    relation = _RELATION_DRAWING[config.relation]
    outputs = []
    start = (width - len(scales) * bw) / 2
    for k, n in enumerate(scales):
        s = f"P{n}"
        left, cx = start + k * bw, start + (k + 0.5) * bw
        from matplotlib.patches import FancyBboxPatch
        cv.ax.add_patch(FancyBboxPatch((left + 0.05, ys[6] - 0.3), bw - 0.1, ys[3] - ys[6] + 0.62,
                                       boxstyle="round,pad=0,rounding_size=0.1", fc="none", ec="#999999",
                                       lw=0.8, ls="--", gid=f"branch:{s}"))
        cv.ax.text(left + 0.12, ys[3] + 0.27, f"scale {s}", ha="left", va="bottom", fontsize=cv.fontsize - 1,
                   color="#555555")
        gcp = config.global_pool == "gcp"
        shared = gcp or config.global_pool is None      # the stripes feed every box of the branch
        lx = cx if shared else cx - (sw + gap) / 2
        gx = cx if config.local_pool is None else cx + (sw + gap) / 2
        if config.local_pool is None and config.global_pool != "gcp":
            gx = cx
        parts = None
        if config.local_pool or gcp:
            sub = bw - 0.3 if shared else sw
            stripes = cv.box(lx, ys[3], sub, f"{n} horizontal stripes" if shared else f"{n} stripes, each",
                             _stripe_text(shapes[f"{s}/stripes"], shapes["x"], shared), f"{s}/stripe", "map")
            cv.arrow(x, stripes, dx_a=(lx - mid) * 0.2)
            pool = config.local_pool or "gmp"
            key = f"{s}/p" if f"{s}/p" in shapes else f"{s}/gcp_in"
            what = f"{_pool_name(pool)} per stripe:" if shared else f"{_pool_name(pool)}:"
            parts = cv.box(lx, ys[4], sub, f"{what} $p_1 \\ldots p_{{{n}}}$",
                           _dims(shapes[key]), key, "map")
            cv.arrow(stripes, parts)
        if config.local_pool:
            mx = cx - (sw + gap) / 2 if config.global_pool else cx
            if relation:
                module = cv.box(mx, ys[5], sw, relation["title"], None, fill="relation", gid=f"R_p:{s}", h=0.42)
                cv.ax.text(mx, ys[5] - 0.3, "$R_p$, skip", ha="center", va="top", fontsize=cv.fontsize - 1)
            else:
                module = cv.box(mx, ys[5], sw, "1×1 conv", None, fill="local", gid=f"reduce:{s}", h=0.42)
            cv.arrow(parts, module, dx_a=mx - lx)
            q = cv.box(mx, ys[6], sw, f"$q_1 \\ldots q_{{{n}}}$", _dims(shapes[f"{s}/q"]), f"{s}/q", "out")
            cv.ax.annotate("", xy=(mx, ys[6] + 0.25), xytext=(mx, ys[5] - 0.21 - (0.2 if relation else 0)),
                           arrowprops=dict(arrowstyle="-|>", lw=0.8, color="#444444"))
            outputs.append(q)
        if config.global_pool:
            gx = cx + (sw + gap) / 2 if config.local_pool else cx
            if gcp:
                module = cv.box(gx, ys[5], sw, "GCP", None, fill="gcp", gid=f"R_g:{s}", h=0.42)
                cv.ax.text(gx, ys[5] - 0.3, "$R_g$, skip", ha="center", va="top", fontsize=cv.fontsize - 1)
                cv.arrow(parts, module, dx_a=gx - lx)
            else:
                pooled = cv.box(gx, ys[3], sw, f"{_pool_name(config.global_pool)} of x", _dims(shapes[f"{s}/pooled"]),
                                f"{s}/pooled", "global")
                cv.arrow(x, pooled, dx_a=(gx - mid) * 0.2)
                module = cv.box(gx, ys[5], sw, "1×1 conv", None, fill="global", gid=f"pool:{s}", h=0.42)
                cv.arrow(pooled, module)
            q0 = cv.box(gx, ys[6], sw, "$q_0$", _dims(shapes[f"{s}/q0"]), f"{s}/q0", "out")
            cv.ax.annotate("", xy=(gx, ys[6] + 0.25), xytext=(gx, ys[5] - 0.21 - (0.2 if gcp else 0)),
                           arrowprops=dict(arrowstyle="-|>", lw=0.8, color="#444444"))
            outputs.append(q0)
    count = sum(shapes[f"P{n}/q"][0] for n in scales if f"P{n}/q" in shapes)
    count += sum(f"P{n}/q0" in shapes for n in scales)
    what = "the embedding" if count == 1 else f"concatenate the {count} blocks: the embedding"
    cat = cv.box(mid, ys[7], min(width - 0.4, 5.2), what,
                 _dims(shapes["embedding"]), "embedding", "out")
    for o in outputs:
        cv.arrow(o, cat, dx_b=(o["cx"] - mid) * 0.3)
    return cv.fig


def _draw_scale(config, shapes, n, title):
    s = f"P{n}"
    relation = _RELATION_DRAWING[config.relation]
    panels = [p for p in ("local", "global") if (config.local_pool if p == "local" else config.global_pool)]
    pw, bwid = 4.0, 1.7                              # panel width, box width (inches)
    width = pw * len(panels) + 0.3
    rows = max(6 if (panel == "local" and relation) or (panel == "global" and config.global_pool == "gcp")
               else 2 if panel == "local" else 3 for panel in panels)
    height = 0.9 + 0.8 * rows
    ys = [height - 0.9 - 0.8 * k for k in range(rows)]
    cv = _Canvas(max(width, 4.3), height)
    cv.ax.text(0.15, height - 0.15, title, ha="left", va="center", fontsize=cv.fontsize, style="italic")
    for k, panel in enumerate(panels):
        x0 = 0.15 + k * pw
        left, right, mid = x0 + 0.1 + bwid / 2, x0 + pw - 0.1 - bwid / 2, x0 + pw / 2
        if panel == "local":
            name = relation["title"] if relation else "no relation module"
            cv.ax.text(mid, ys[0] + 0.42, f"(a) {name}: stripe 1 of {s}", ha="center", fontsize=cv.fontsize,
                       fontweight="bold")
            p_shape = shapes[f"{s}/p"]
            p1 = cv.box(left, ys[0], bwid, "$p_1$", _dims(p_shape[1:]), f"{s}/p1", "map")
            if not relation:
                q = cv.box(left, ys[1], bwid, r"1×1 conv: $q_1 = \bar{p}_1$", _dims(shapes[f"{s}/q"][1:]), f"{s}/q1",
                           "out")
                cv.arrow(p1, q)
                continue
            rest = cv.box(right, ys[0], bwid, f"$p_2 \\ldots p_{{{n}}}$", _dims((p_shape[0] - 1, p_shape[1])),
                          f"{s}/p_rest", "map")
            r1 = cv.box(right, ys[1], bwid, f"$r_1$ = mean of $p_2 \\ldots p_{{{n}}}$", _dims(shapes[f"{s}/r"]),
                        f"{s}/r1", "map")
            cv.arrow(rest, r1)
            pb = cv.box(left, ys[2], bwid, r"1×1 conv: $\bar{p}_1$", _dims(shapes[f"{s}/p_bar"][1:]), f"{s}/p_bar1",
                        "local")
            rb = cv.box(right, ys[2], bwid, r"1×1 conv: $\bar{r}_1$", _dims(shapes[f"{s}/r_bar"][1:]), f"{s}/r_bar1",
                        "local")
            cv.arrow(p1, pb)
            cv.arrow(r1, rb)
            if relation["concat"]:
                t = cv.box(mid, ys[3], bwid, f"${relation['argument']}$", _dims(shapes[f"{s}/R_p_in"]), f"{s}/T", "local")
                cv.arrow(pb, t, dx_b=-0.3)
                cv.arrow(rb, t, dx_b=0.3)
                into = t
            else:
                into = rb
            rp = cv.box(mid, ys[4], bwid, "$R_p$: conv, BN, ReLU", _dims(shapes[f"{s}/R_p_out"]),
                        f"{s}/R_p_out", "relation", gid=f"R_p:{s}")
            cv.arrow(into, rp, dx_a=(mid - into["cx"]) * 0.5 if into is rb else 0)
            argument = r"\cdot" if relation["concat"] else relation["argument"]
            q = cv.box(mid, ys[5], bwid, f"$q_1 = \\bar{{p}}_1 + R_p({argument})$", _dims(shapes[f"{s}/q"][1:]),
                       f"{s}/q1", "out")
            cv.arrow(rp, q)
            skip_x = x0 + 0.05
            cv.path([(left - bwid / 2, ys[2]), (skip_x, ys[2]), (skip_x, ys[5]), (mid - bwid / 2, ys[5])])
            cv.ax.text(skip_x + 0.05, (ys[3] + ys[4]) / 2, "skip", rotation=90, va="center", ha="left",
                       fontsize=cv.fontsize - 1, color="#555555")
        elif config.global_pool == "gcp":
            cv.ax.text(mid, ys[0] + 0.42, f"(b) GCP of {s}", ha="center", fontsize=cv.fontsize, fontweight="bold")
            ps = cv.box(mid, ys[0], bwid, f"$p_1 \\ldots p_{{{n}}}$ (GMP)", _dims(shapes[f"{s}/gcp_in"]), f"{s}/gcp_in",
                        "map")
            cont = (r"$(\Sigma_i\, p_i - p_{max})/%d$" % (n - 1)) if config.contrast == "official" else r"$p_{avg} - p_{max}$"
            pmax = cv.box(left, ys[1], bwid, r"$p_{max} = \mathrm{max}_i\, p_i$", _dims(shapes[f"{s}/p_max"]), f"{s}/p_max", "map")
            pcont = cv.box(right, ys[1], bwid, r"$p_{cont}$ = " + cont, _dims(shapes[f"{s}/p_cont"]), f"{s}/p_cont",
                           "map")
            cv.arrow(ps, pmax, dx_a=-0.3)
            cv.arrow(ps, pcont, dx_a=0.3)
            pbm = cv.box(left, ys[2], bwid, r"1×1 conv: $\bar{p}_{max}$", _dims(shapes[f"{s}/p_bar_max"]),
                         f"{s}/p_bar_max", "global")
            pbc = cv.box(right, ys[2], bwid, r"1×1 conv: $\bar{p}_{cont}$", _dims(shapes[f"{s}/p_bar_cont"]),
                         f"{s}/p_bar_cont", "global")
            cv.arrow(pmax, pbm)
            cv.arrow(pcont, pbc)
            t = cv.box(mid, ys[3], bwid, r"$T(\bar{p}_{max}, \bar{p}_{cont})$", _dims(shapes[f"{s}/R_g_in"]),
                       f"{s}/T_g", "global")
            cv.arrow(pbm, t, dx_b=-0.3)
            cv.arrow(pbc, t, dx_b=0.3)
            rg = cv.box(mid, ys[4], bwid, "$R_g$: conv, BN, ReLU", _dims(shapes[f"{s}/R_g_out"]), f"{s}/R_g_out",
                        "gcp", gid=f"R_g:{s}")
            cv.arrow(t, rg)
            q0 = cv.box(mid, ys[5], bwid, r"$q_0 = \bar{p}_{max} + R_g(\cdot)$", _dims(shapes[f"{s}/q0"]), f"{s}/q0",
                        "out")
            cv.arrow(rg, q0)
            cv.path([(left - bwid / 2, ys[2]), (x0 + 0.05, ys[2]), (x0 + 0.05, ys[5]), (mid - bwid / 2, ys[5])])
        else:
            cv.ax.text(mid, ys[0] + 0.42, f"(b) {_pool_name(config.global_pool)} global feature of {s}", ha="center",
                       fontsize=cv.fontsize, fontweight="bold")
            x = cv.box(mid, ys[0], bwid, "feature map x", _dims(shapes["x"], "hwc"), "x", "map")
            pooled = cv.box(mid, ys[1], bwid, f"{_pool_name(config.global_pool)} of x", _dims(shapes[f"{s}/pooled"]),
                            f"{s}/pooled", "global")
            q0 = cv.box(mid, ys[2], bwid, "1×1 conv: $q_0$", _dims(shapes[f"{s}/q0"]), f"{s}/q0", "out")
            cv.arrow(x, pooled)
            cv.arrow(pooled, q0)
    return cv.fig


# ----------------------------------------------------------------------------- augmentation

ERASING_LABELS = {
    "official": "authors' code: p = 0.75,\n2-20 % of the area,\none random colour",
    "zhong": "Zhong et al. defaults: p = 0.5,\n2-40 % of the area,\nImageNet-mean fill",
    None: "flip only",
}


def _augmentation_records(source, n: int, seed: int):
    """``n`` images to augment: from a data set (its ``train``), a data-set folder, a list of
    ``ImageRecord`` / paths / PIL images, or None: market1501-mini, else the synthetic set."""
    from PIL import Image

    from rrid import book
    from rrid.data import Market1501

    if source is None:
        source = book.market_mini() or book.synthetic()
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        source = Market1501(source)
    items = list(getattr(source, "train", source))
    if len(items) < n:
        raise ValueError(f"augmentation_batch: expected at least n={n} images, got {len(items)}")
    picks = sorted(np.random.default_rng(seed).choice(len(items), n, replace=False))
    images = []
    for i in picks:
        item = items[i]
        path = getattr(item, "path", item)
        images.append(item if isinstance(item, Image.Image) else Image.open(path).convert("RGB"))
    return images


def augmentation_samples(images, erasing="official", height: int = 384, width: int = 128, seed: int = 0,
                         flip: bool = True) -> list:
    """The training transform applied once to each PIL image, seeded: a list of
    ``rrid.data.transforms.Augmented`` (the tensor, whether it was flipped, the erased box).

    Torch's global RNG is forked, seeded with ``seed`` and restored afterwards, so the result
    depends on ``seed`` only and the caller's random state is untouched.
    """
    from rrid.data.transforms import observe_train_transform

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return [observe_train_transform(img, height, width, erasing, flip) for img in images]


def augmentation_batch(source=None, n: int = 8, seed: int = 0, height: int = 384, width: int = 128,
                       variants=("official", "zhong")):
    """Real images as the training transform hands them to the model (denormalised to show).

    Row 1: ``n`` images picked (seeded) from ``source`` (a data set, a data-set folder, records,
    paths or PIL images; default market1501-mini, or the synthetic set when it is absent),
    resized to ``height`` x ``width`` (the paper's 384 x 128). Then one row per entry of
    ``variants``: the training transform with that random erasing (``"official"``: the
    authors' p = 0.75, 2-20 % of the area, aspect 0.3-3.3, one random colour; ``"zhong"``:
    Zhong et al.'s defaults, p = 0.5, 2-40 %, filled with the ImageNet mean; None: flip only),
    each after a horizontal flip with probability 0.5. Each image is titled with what happened
    to it ("flipped", "erased 12 %"), measured by ``observe_train_transform``, and the erased
    rectangle is outlined. The same ``seed`` gives the same figure.
    """
    from rrid.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms

    use_style()
    images = _augmentation_records(source, n, seed)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    show = lambda x: (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()  # noqa: E731
    rows = [("resized input", [build_transforms(height, width, train=False)(img) for img in images], None)]
    for k, erasing in enumerate(variants):
        samples = augmentation_samples(images, erasing, height, width, seed=seed + 1 + k)
        rows.append((ERASING_LABELS[erasing], [s.image for s in samples], samples))
    col = 0.95
    fig, axes = plt.subplots(len(rows), n, figsize=(col * n + 1.4, len(rows) * (col * height / width + 0.45)),
                             squeeze=False)
    for r, (label, tensors, samples) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.imshow(show(tensors[c]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if samples is not None:
                s = samples[c]
                ax.set_title(("flipped" if s.flipped else "not flipped") + "\n"
                             + (f"erased {100 * s.erased_fraction:.0f} %" if s.box else "not erased"), fontsize="x-small")
                if s.box:
                    top, left, h, w = s.box
                    ax.add_patch(plt.Rectangle((left - 0.5, top - 0.5), w, h, fill=False, ec="white", lw=0.8,
                                               ls=":", gid="erased"))
        axes[r][0].set_ylabel(label, fontsize="x-small", rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.3)
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
