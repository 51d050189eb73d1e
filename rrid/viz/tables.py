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
from matplotlib.transforms import Affine2D, Bbox, ScaledTranslation

from rrid import paper
from rrid.stats import AGREES, CANNOT_TELL, CONTRADICTS, LARGER, NO_EFFECT, SMALLER, mean_interval
from rrid.viz.style import NON_MATCH, use_style

__all__ = ["table1_tradeoff", "market1501_landscape", "seed_strip", "forest", "VERDICT_COLOURS"]


def _label_points(ax, points, fontsize=8, marker_px=None, shifts=None, avoid=()):
    """Label each (x, y, text, bold) point without overlaps where possible: for each label in
    turn the first of a few offsets (right, left, above, below, diagonals) whose box stays
    inside the axes and clear of the labels placed so far, of every marker (``marker_px``:
    the width of each marker in pixels, 10 by default) and of the display boxes ``avoid``; the
    least overlapping offset otherwise. ``shifts``: how far (points, to the right) each marker
    is drawn from its point (:func:`_dodge`); its label moves with it. Returns the text
    artists (gid ``"label:<text>"``), each anchored at its point."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    candidates = [((8, 0), "left", "center"), ((-8, 0), "right", "center"), ((0, 8), "center", "bottom"),
                  ((0, -8), "center", "top"), ((7, 7), "left", "bottom"), ((7, -7), "left", "top"),
                  ((-7, 7), "right", "bottom"), ((-7, -7), "right", "top"), ((0, 16), "center", "bottom"),
                  ((0, -16), "center", "top"), ((14, 12), "left", "bottom"), ((-14, -12), "right", "top")]
    to_display = ax.transData.transform
    sizes = marker_px or [10] * len(points)
    shifts = shifts or [0.0] * len(points)
    px = fig.dpi / 72
    markers = [Bbox.from_bounds(*(to_display((x, y)) + (dx * px, 0) - size / 2), size, size)
               for (x, y, _, _), size, dx in zip(points, sizes, shifts)]
    inside = ax.get_window_extent(renderer)
    placed, texts = [], []

    def overlap(a, b):
        w = min(a.x1, b.x1) - max(a.x0, b.x0)
        h = min(a.y1, b.y1) - max(a.y0, b.y0)
        return max(w, 0) * max(h, 0)

    for i, (x, y, text, bold) in enumerate(points):
        best = None
        for (ox, oy), ha, va in candidates:
            t = ax.annotate(text, (x, y), xytext=(ox + shifts[i], oy), textcoords="offset points", ha=ha,
                            va=va, fontsize=fontsize, fontweight="bold" if bold else "normal")
            box = t.get_window_extent(renderer)
            cost = sum(overlap(box, b) for b in [*placed, *avoid])
            cost += sum(overlap(box, m) for j, m in enumerate(markers) if j != i)
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


def _dodge(ax, points, diameters):
    """Horizontal shifts (points) that set side by side the markers that would hide each other.

    ``points``: (x, y) in data; ``diameters``: each marker's width in points. Two markers whose
    centres lie closer on the page than half the smaller one's width join a group (transitively);
    a group's markers are set in a row, left to right as their points lie (then in the order
    given), a width (the group's widest) apart and centred on the group's mean; the others stay.
    Spreading a group can bring it near another marker: then the two groups join, until no two
    markers hide each other. The data do not move, only where each marker is drawn
    (:func:`_shift_markers`)."""
    px = ax.figure.dpi / 72
    centres = ax.transData.transform(np.asarray(points, dtype=float)) / px  # in points
    n = len(points)
    group, shifts = list(range(n)), [0.0] * n

    def root(i):
        while group[i] != i:
            i = group[i]
        return i

    for _ in range(n):  # each round joins at least two groups, or ends
        drawn = centres + np.column_stack([shifts, np.zeros(n)])
        joined = False
        for i in range(n):
            for j in range(i):
                close = np.hypot(*(drawn[i] - drawn[j])) < min(diameters[i], diameters[j]) / 2
                if close and root(i) != root(j):
                    group[root(i)], joined = root(j), True
        if not joined:
            break
        for r in {root(i) for i in range(n)}:
            members = sorted((i for i in range(n) if root(i) == r), key=lambda i: (centres[i][0], i))
            if len(members) > 1:
                width, middle = max(diameters[i] for i in members), np.mean([centres[i][0] for i in members])
                for k, i in enumerate(members):
                    shifts[i] = float(middle + (k - (len(members) - 1) / 2) * width - centres[i][0])
    return shifts


def _shift_markers(collection, shifts):
    """Draw each marker of a scatter ``collection`` ``shifts[i]`` points right of its point
    (:func:`_dodge`). The offsets stay the data; each marker gets its own path, moved in the
    marker's own units (one unit is sqrt(s) points, the marker's width)."""
    if any(shifts):
        (path,) = collection.get_paths()
        unit = float(collection.get_sizes()[0]) ** 0.5
        collection.set_paths([path.transformed(Affine2D().translate(dx / unit, 0)) for dx in shifts])


def _dodge_and_label(ax, groups, avoid=()):
    """Dodge (:func:`_dodge`) then label (:func:`_label_points`) the points of ``ax``.

    ``groups``: (collection, rows, bold) with ``rows`` the (x, y, text) of each point of the
    scatter ``collection``, in its order (text None: dodged, not labelled). ``avoid``: display
    boxes the labels keep clear of. Call after the figure's layout is final."""
    points, diameters = [], []
    for collection, rows, bold in groups:
        size = float(collection.get_sizes()[0]) ** 0.5
        points += [(x, y, text, bold) for x, y, text in rows]
        diameters += [size] * len(rows)
    shifts = _dodge(ax, [(x, y) for x, y, _, _ in points], diameters)
    start = 0
    for collection, rows, _ in groups:
        _shift_markers(collection, shifts[start:start + len(rows)])
        start += len(rows)
    px = ax.figure.dpi / 72
    named = [i for i, (_, _, text, _) in enumerate(points) if text is not None]
    return _label_points(ax, [points[i] for i in named], marker_px=[px * diameters[i] for i in named],
                         shifts=[shifts[i] for i in named], avoid=avoid)


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
    styles = {False: dict(marker="o", s=30, color=colours[7], edgecolor="white", linewidth=0.5,
                          label="other methods"),
              True: dict(marker="*", s=170, color=colours[1], edgecolor="black", linewidth=0.5,
                         label="Ours-S, Ours-F (Park & Ham)")}
    fig, axes = plt.subplots(1, 3, figsize=(10, 4.1))
    drawn = []
    for ax, (field, title) in zip(axes, panels):
        rows = [r for r in paper.TABLE1 if getattr(r, field) is not None]
        groups = []
        for ours, style in styles.items():
            # ours first, then from the top; the small dots drawn over the stars
            chosen = sorted((r for r in rows if r.ours == ours), key=lambda r: -getattr(r, field))
            points = ax.scatter([r.feature_dim for r in chosen], [getattr(r, field) for r in chosen],
                                zorder=3 if ours else 4, gid=f"points:{'ours' if ours else 'others'}", **style)
            groups.insert(0 if ours else 1, (points, [(r.feature_dim, getattr(r, field), r.method) for r in chosen],
                                             ours))
        drawn.append(groups)
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
             "are not in the paper text available here: no Duke panel.\n"
             "Markers that would hide each other are drawn side by side.", ha="right", va="bottom",
             fontsize="small", style="italic")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    for ax, groups in zip(axes, drawn):
        _dodge_and_label(ax, groups)
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
         dict(marker="o", s=30, color=colours[7], edgecolor="white", linewidth=0.5,
              label="Table 1 of Park & Ham (2020)"), False),
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
    drawn = {ax: [] for ax in axes}
    for ax in axes:
        for gid, rows, style, bold in groups:
            if rows:
                points = ax.scatter([r.market_rank1 for r in rows], [r.market_map for r in rows],
                                    zorder=4 if gid == "table1" else 3, gid=f"points:{gid}", **style)
                drawn[ax].append((points, rows, bold))
        ax.set(xlabel="rank-1 (%)", ylabel="mAP (%)")
    box = Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linestyle="--", edgecolor="black", linewidth=0.8,
                    gid="zoom")
    axes[0].add_patch(box)
    axes[0].set_title("Market-1501: every method")
    axes[1].set(xlim=(x0, x1), ylim=(y0, y1), title="the dashed box, enlarged")
    axes[1].legend(*axes[0].get_legend_handles_labels(), loc="lower right", fontsize="small", frameon=True)
    fig.text(0.99, 0.01, "RRID's and the later methods' numbers are without re-ranking. Re-run: a model zoo's or "
             "re-organised code's run.\nBackbones, input sizes and training recipes differ: "
             "see rrid.paper.LATER_METHODS (source and note of each row).\nMarkers that would hide each other "
             "are drawn side by side.", ha="right", va="bottom", fontsize="small", style="italic")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    # each point labelled in the panel where it is not crowded out; no label over the dashed box
    for ax, here, avoid in ((axes[0], lambda r: not inside(r), [box.get_window_extent()]), (axes[1], inside, [])):
        _dodge_and_label(ax, [(points, [(r.market_rank1, r.market_map, r.method if here(r) else None)
                                        for r in rows], bold) for points, rows, bold in drawn[ax]], avoid=avoid)
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
