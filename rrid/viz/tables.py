"""Figures of published tables and of result tables: Table 1, the Market-1501 landscape, seeds
and paired intervals.

* :func:`table1_tradeoff`: mAP against feature size for every method of Table 1.
* :func:`market1501_landscape`: Market-1501 mAP against rank-1 for Table 1 and for later methods
  (``rrid.paper.LATER_METHODS``, published numbers with their sources).
* :func:`seed_strip`: values over seeds per variant with their t interval, new runs marked.
* :func:`forest`: paired differences with their intervals beside the paper's differences, one
  row per comparison, coloured by verdict (chapters 5 and 9).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.patches import Rectangle
from matplotlib.transforms import Bbox, ScaledTranslation

from rrid import paper
from rrid.stats import AGREES, CANNOT_TELL, CONTRADICTS, LARGER, NO_EFFECT, SMALLER, mean_interval
from rrid.viz.style import NON_MATCH, use_style

__all__ = ["table1_tradeoff", "market1501_landscape", "seed_strip", "forest", "VERDICT_COLOURS"]


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
    markers = [Bbox.from_bounds(*(to_display((x, y)) - size / 2), size, size)
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
             "re-organised code's run.\nBackbones, input sizes and training recipes differ: "
             "see rrid.paper.LATER_METHODS "
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


def seed_strip(values: dict, marks: dict | None = None, ylabel: str = "mAP (%)", title: str | None = None,
               confidence: float = 0.95):
    """One column per key of ``values`` (e.g. "row 4": the committed mAP of each seed): the
    seeds as dots, their mean and ``confidence`` t interval (``rrid.stats.mean_interval``) as a
    bar with caps, and ``marks[key]`` (e.g. a run trained just now) as a red diamond."""
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


VERDICT_COLOURS = {AGREES: "C2", SMALLER: "yellowgreen", LARGER: "C9", CONTRADICTS: "C3",
                   NO_EFFECT: "C4", CANNOT_TELL: "grey"}
"""The colour of each ``rrid.stats.verdict`` category in :func:`forest`, one per category."""


def forest(ax, comparisons, labels, title):
    """A forest plot of paired differences on ``ax``: one row per comparison, top to bottom.

    ``comparisons``: objects with ``quick`` (a paired interval: ``mean``, ``low``, ``high``,
    e.g. ``rrid.stats.paired_difference``), ``paper`` (the paper's difference) and ``verdict``
    (``rrid.stats.verdict``), as ``rrid.ablation.comparisons`` and ``block_comparisons`` return
    them; ``labels``: one per comparison. Each interval is drawn with its mean in the colour of its
    verdict's category (:data:`VERDICT_COLOURS`: green agrees, light green agrees in sign and is
    smaller, light blue agrees in sign and is larger, red contradicts, purple rules out the
    paper's size, grey cannot tell; the legend names the categories drawn); the paper's
    difference is an open diamond; a line marks 0. The legend sits below the axes. Returns ``ax``.
    """
    ys, seen = np.arange(len(comparisons))[::-1], set()
    for y, c in zip(ys, comparisons):
        d, category = c.quick, c.verdict.category
        ax.errorbar(d.mean, y, xerr=[[d.mean - d.low], [d.high - d.mean]], fmt="o", color=VERDICT_COLOURS[category],
                    capsize=3, label=None if category in seen else category)
        ax.plot(c.paper, y, "D", color="k", mfc="none", label="paper (Market-1501)" if y == ys[0] else None)
        seen.add(category)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set(yticks=ys, yticklabels=labels, xlabel="difference in mAP (points)", title=title)
    # half an inch below the axes, whatever their height: clear of the tick labels and the x label
    below = ax.transAxes + ScaledTranslation(0, -0.5, ax.figure.dpi_scale_trans)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below, ncol=2,
              frameon=False)
    return ax
