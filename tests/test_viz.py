"""rrid.viz: figures have the expected axes and match / non-match borders."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from rrid import viz  # noqa: E402


def test_retrieval_grid_borders_follow_the_protocol():
    imgs = [np.full((16, 8, 3), i / 10) for i in range(6)]
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    g_pids, g_cams = np.array([1, 2, 1, 1, 3]), np.array([0, 1, 1, 2, 1])  # gallery 0: same cam, skipped
    fig = viz.retrieval_grid(imgs[:1], imgs[1:], d, [1], g_pids, [0], g_cams, queries=[0], topk=3)
    axes = fig.axes
    assert len(axes) == 4
    colours = [mcolors.to_hex(ax.spines["top"].get_edgecolor()) for ax in axes[1:]]
    assert colours == [viz.NON_MATCH, viz.MATCH, viz.MATCH]  # gallery 1, 2, 3
    assert [ax.get_title() for ax in axes[1:]] == ["0.200", "0.300", "0.400"]


def test_ranking_toy_colours_and_title():
    fig = viz.ranking_toy([False, True, False, True], max_rank=3)
    faces = [mcolors.to_hex(p.get_facecolor()) for p in fig.axes[0].patches]
    assert faces == [viz.NON_MATCH, viz.MATCH, viz.NON_MATCH, viz.MATCH]
    assert "AP = 0.500" in fig.axes[0].get_title() and "0 1 1" in fig.axes[0].get_title()


def test_cmc_and_ap_histogram():
    m = {"mAP": 0.5, "cmc": np.linspace(0.5, 1, 50), "all_AP": np.array([0.2, np.nan, 0.8])}
    fig = viz.cmc_curve({"a": m, "b": m}, max_rank=10)
    assert len(fig.axes[0].lines) == 2 and len(fig.axes[0].lines[0].get_xdata()) == 10
    fig = viz.ap_histogram(m, bins=4)
    assert sum(p.get_height() for p in fig.axes[0].patches) == 2


def test_activation_maps_marks_the_channel_sum_peak_and_the_gmp_cell():
    # 6 x 2 map, 6 stripes of one row. Row 0: cell (0, 0) has the larger channel sum (1 + 1 + 1 + 5 = 8 > 6)
    # but cell (0, 1) holds the maxima of three of the four channels: star at column 0, circle at column 1.
    # Rows 1..5: one channel, alternating columns, so both marks sit on the same cell.
    class Backbone(torch.nn.Module):
        def forward(self, x):
            fmap = torch.zeros(1, 4, 6, 2)
            fmap[0, :, 0, 0] = torch.tensor([1.0, 1.0, 1.0, 5.0])
            fmap[0, :, 0, 1] = torch.tensor([2.0, 2.0, 2.0, 0.0])
            fmap[0, 0, torch.arange(1, 6), torch.tensor([1, 0, 1, 0, 1])] = 1.0
            return fmap

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Backbone()

    fig = viz.activation_maps(Model(), torch.rand(3, 12, 4), num_stripes=6)
    assert len(fig.axes) == 2
    stars = [line for line in fig.axes[1].lines if line.get_marker() == "*"]
    circles = [line for line in fig.axes[1].lines if line.get_marker() == "o"]
    x_star = [float(s.get_xdata()[0]) for s in stars]
    x_circle = [float(c.get_xdata()[0]) for c in circles]
    y_star = [float(s.get_ydata()[0]) for s in stars]
    assert x_star == [1.0, 3.0, 1.0, 3.0, 1.0, 3.0]    # (column + 0.5) * W / w with W = 4, w = 2
    assert x_circle == [3.0, 3.0, 1.0, 3.0, 1.0, 3.0]  # row 0: the cell holding 3 of the 4 channel maxima
    assert y_star == [1.0, 3.0, 5.0, 7.0, 9.0, 11.0]   # (row + 0.5) * H / h with H = 12, h = 6
    assert "75% 100% 100% 100% 100% 100%" in fig._suptitle.get_text()
    assert fig.axes[1].get_title() == "channel sum of x"
    plt.close(fig)


# ----------------------------------------------------------------------------- Table 1, architecture

import re  # noqa: E402


from rrid import paper  # noqa: E402
from rrid.model import RRID, RRIDConfig  # noqa: E402


def test_table1_tradeoff_points_labels_axes():
    fig = viz.table1_tradeoff()
    fields = ["market_map", "cuhk03_labeled_map", "cuhk03_detected_map"]
    assert [ax.get_title() for ax in fig.axes] == ["Market-1501", "CUHK03 labeled", "CUHK03 detected"]
    for ax, field in zip(fig.axes, fields):
        rows = [r for r in paper.TABLE1 if getattr(r, field) is not None]
        points = {c.get_gid(): c.get_offsets() for c in ax.collections}
        drawn = np.concatenate([points["points:others"], points["points:ours"]])
        assert len(drawn) == len(rows) and len(points["points:ours"]) == 2  # Ours-S and Ours-F, highlighted
        expected = sorted((float(r.feature_dim), getattr(r, field)) for r in rows)
        assert sorted(map(tuple, drawn.tolist())) == expected
        labels = {t.get_gid()[6:]: t for t in ax.texts if (t.get_gid() or "").startswith("label:")}
        assert sorted(labels) == sorted(r.method for r in rows)
        for r in rows:  # each label is anchored at its own point
            assert labels[r.method].xy == (r.feature_dim, getattr(r, field))
        assert labels["Ours-F"].get_fontweight() == "bold" and labels[rows[0].method].get_fontweight() == "normal"
        assert ax.get_xlabel().startswith("feature size") and ax.get_ylabel() == "mAP (%)" and ax.get_xscale() == "log"
    assert len(fig.axes[0].collections[0].get_offsets()) + 2 == 11  # every method has a Market-1501 mAP
    assert any("not in the paper text" in t.get_text() for t in fig.texts)


def _shape_texts(fig) -> dict:
    return {t.get_gid()[6:]: t.get_text() for t in fig.findobj(matplotlib.text.Text)
            if (t.get_gid() or "").startswith("shape:")}


def _ints(text: str) -> tuple:
    return tuple(int(v.replace(",", "")) for v in re.findall(r"\d[\d,]*", text))


def _expected_shapes(cfg, height, width) -> dict:
    """Shapes read off a real forward pass on the CPU, in the figure's order (H x W x C for maps)."""
    model = RRID(cfg, num_classes=3).eval()
    with torch.no_grad():
        f = model.forward_features(torch.rand(1, 3, height, width))
        emb = model(torch.rand(1, 3, height, width))
    C, h, w = f["x"].shape[1:]
    out = {"image": (height, width, 3), "x": (h, w, C), "embedding": (emb.shape[1],)}
    for s, d in f.items():
        if s == "x":
            continue
        n = int(s[1:])
        if "q" in d:
            # the stripe rows as stripe_pool's docstring defines them: floor(i h/n) .. ceil((i+1) h/n) - 1
            rows = {-(-(i + 1) * h // n) - (i * h) // n for i in range(n)}
            assert len(rows) == 1, "test configs have stripes of one height"
            out[f"{s}/stripe"] = (rows.pop(), w, C)
            out[f"{s}/p"] = tuple(d["p"].shape[1:])
            out[f"{s}/q"] = tuple(d["q"].shape[1:])
        if "q0" in d:
            out[f"{s}/q0"] = tuple(d["q0"].shape[1:])
        if "p_max" in d and "q" not in d:
            out[f"{s}/gcp_in"] = (n, C)
    return out, model


QUICK = dict(backbone="resnet18")
MODEL_CASES = [(RRIDConfig.table2(r, **QUICK), (96, 32)) for r in (1, 2, 4, 5, 10, 13)]
MODEL_CASES += [(RRIDConfig.table2(8), (384, 128)),                                  # the paper's 24 x 8 x 2048
                (RRIDConfig(backbone="resnet18", scales=(3,), local_pool=None, relation=False), (96, 32))]  # GCP, no local
MODEL_CASES.append((RRIDConfig(relation="rest_only", scales=(6,), backbone="resnet18"), (96, 32)))  # Fig. 6's model


@pytest.mark.parametrize("cfg, size", MODEL_CASES, ids=lambda c: getattr(c, "scales", None) and
                         f"{c.backbone}-{c.scales}-{c.global_pool}-{c.local_pool}-{c.relation}")
def test_architecture_shows_the_shapes_of_a_real_forward_pass(cfg, size):
    fig = viz.architecture(cfg, input_size=size)
    texts = _shape_texts(fig)
    expected, _ = _expected_shapes(cfg, *size)
    for key, shape in expected.items():
        assert _ints(texts[key]) == shape, key
    assert _ints(texts["embedding"]) == (cfg.feature_dim,)
    branches = [p.get_gid() for p in fig.axes[0].patches if (p.get_gid() or "").startswith("branch:")]
    assert sorted(branches) == sorted(f"branch:P{n}" for n in cfg.scales)
    drawn = [a.get_gid() or "" for a in fig.axes[0].patches]
    words = " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
    has_relation = cfg.relation is not False and cfg.local_pool is not None
    assert (sum(g.startswith("R_p:") for g in drawn) == len(cfg.scales)) == has_relation
    assert ("R_p" in words) == has_relation
    assert sum(g.startswith("R_g:") for g in drawn) == (len(cfg.scales) if cfg.global_pool == "gcp" else 0)
    if size == (384, 128) and cfg.backbone == "resnet50":
        assert texts["x"] == "24 × 8 × 2,048" and _ints(texts["P6/p"]) == (6, 2048) and texts["P6/q"] == "6 × 256"


SCALE_CASES = [(RRIDConfig(backbone="resnet18"), 4), (RRIDConfig.table2(4, **QUICK), 6),
               (RRIDConfig(backbone="resnet18", contrast="paper", scales=(2,)), 2)]
SCALE_CASES.append((RRIDConfig(relation="rest_only", scales=(6,), backbone="resnet18"), 6))


@pytest.mark.parametrize("cfg, n", SCALE_CASES, ids=lambda c: getattr(c, "scales", None) and f"{c.relation}-{c.global_pool}")
def test_architecture_scale_detail(cfg, n):
    fig = viz.architecture(cfg, input_size=(96, 32), detail="scale", scale=n)
    texts = _shape_texts(fig)
    _, model = _expected_shapes(cfg, 96, 32)
    with torch.no_grad():
        f = model.forward_features(torch.rand(1, 3, 96, 32))[f"P{n}"]
    (C, h, w), c = model.backbone(torch.zeros(1, 3, 96, 32)).shape[1:], cfg.reduced_dim
    assert _ints(texts[f"P{n}/p1"]) == (C,) and _ints(texts[f"P{n}/q1"]) == (f["q"].shape[2],) == (c,)
    head = model.heads[f"P{n}"]
    if cfg.relation is not False:
        assert _ints(texts[f"P{n}/p_rest"]) == (n - 1, C) and _ints(texts[f"P{n}/r1"]) == (C,)
        assert _ints(texts[f"P{n}/p_bar1"]) == _ints(texts[f"P{n}/r_bar1"]) == (c,)
        r_p_in = head.local.R_p[0].conv.in_channels     # 2c for T(p̄_1, r̄_1), c for r̄_1 alone
        assert (_ints(texts[f"P{n}/T"]) == (r_p_in,) == (2 * c,)) if cfg.relation is True else f"P{n}/T" not in texts
        assert _ints(texts[f"P{n}/R_p_out"]) == (c,)
    else:
        assert not any(k.startswith(f"P{n}/R_p") for k in texts)
    if cfg.global_pool == "gcp":
        assert _ints(texts[f"P{n}/gcp_in"]) == tuple(f["p"].shape[1:]) == (n, C)
        assert _ints(texts[f"P{n}/p_max"]) == _ints(texts[f"P{n}/p_cont"]) == (C,)
        assert _ints(texts[f"P{n}/T_g"]) == (head.glob.R_g.conv.in_channels,) == (2 * c,)
        assert _ints(texts[f"P{n}/q0"]) == tuple(f["q0"].shape[1:])
        formula = "p_{avg} - p_{max}" if cfg.contrast == "paper" else f"/{n - 1}"
        assert any(formula in t.get_text() for t in fig.findobj(matplotlib.text.Text))
    else:
        assert _ints(texts[f"P{n}/pooled"]) == (C,) and _ints(texts["x"]) == (h, w, C)


def test_architecture_bad_arguments():
    with pytest.raises(ValueError, match="scale=3"):
        viz.architecture(RRIDConfig(backbone="resnet18"), input_size=(96, 32), detail="scale", scale=3)
    with pytest.raises(ValueError, match="detail='fig1'"):
        viz.architecture(detail="fig1")


# ----------------------------------------------------------------------------- augmentation


def _augmentation_figure_checks(fig, n, source_images):
    from rrid.data import build_transforms

    assert len(fig.axes) == 3 * n
    rows = [fig.axes[r * n:(r + 1) * n] for r in range(3)]
    assert rows[1][0].get_ylabel().startswith("authors' code: p = 0.75") and rows[2][0].get_ylabel().startswith("Zhong")
    # row 1: the resized input, denormalised back to [0, 1] (the test transform, undone)
    for ax in rows[0]:
        shown = ax.images[0].get_array()
        assert shown.shape == (96, 32, 3) and 0 <= shown.min() and shown.max() <= 1
    for row in rows[1:]:
        for ax in row:
            flip, erase = ax.get_title().split("\n")
            assert flip in ("flipped", "not flipped")
            boxes = [p for p in ax.patches if p.get_gid() == "erased"]
            assert (erase == "not erased") == (not boxes) and (erase == "not erased" or re.fullmatch(r"erased \d+ %", erase))
    if source_images is not None:
        plain = build_transforms(96, 32, train=False)
        mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        resized = [(plain(img).permute(1, 2, 0) * std + mean).clamp(0, 1).numpy() for img in source_images]
        shown = [ax.images[0].get_array() for ax in rows[0]]
        # values in [0, 1], the same x * std + mean (an FMA or not: 1 ulp, 6e-8); another image differs by far more
        assert any(np.allclose(shown[0], r, atol=1e-6) for r in resized)


def test_augmentation_batch_synthetic_is_reproducible(synthetic_small):
    from PIL import Image

    from rrid.data import Market1501

    fig = viz.augmentation_batch(synthetic_small, n=4, seed=0, height=96, width=32)
    images = [Image.open(r.path).convert("RGB") for r in Market1501(synthetic_small).train]
    _augmentation_figure_checks(fig, 4, images)
    again = viz.augmentation_batch(synthetic_small, n=4, seed=0, height=96, width=32)
    other = viz.augmentation_batch(synthetic_small, n=4, seed=1, height=96, width=32)
    arrays = lambda f: [ax.images[0].get_array() for ax in f.axes]  # noqa: E731
    assert all(np.array_equal(a, b) for a, b in zip(arrays(fig), arrays(again)))
    assert not all(np.array_equal(a, b) for a, b in zip(arrays(fig), arrays(other)))
    with pytest.raises(ValueError, match="at least n=500"):
        viz.augmentation_batch(synthetic_small, n=500)


@pytest.mark.market_mini
def test_augmentation_batch_real_images(market_mini):
    fig = viz.augmentation_batch(market_mini, n=3, seed=0, height=96, width=32)
    _augmentation_figure_checks(fig, 3, None)


def test_market1501_landscape_points_zoom_and_labels():
    fig = viz.market1501_landscape()
    left, right = fig.axes[:2]
    x0, x1, y0, y1 = 93.5, 96.5, 80.0, 91.0  # the default zoom
    groups = {"table1": [r for r in paper.TABLE1 if not r.ours], "ours": [r for r in paper.TABLE1 if r.ours],
              "later": [r for r in paper.LATER_METHODS if not r.rerun],
              "rerun": [r for r in paper.LATER_METHODS if r.rerun]}
    for ax in (left, right):
        points = {c.get_gid()[7:]: c.get_offsets() for c in ax.collections if (c.get_gid() or "").startswith("points:")}
        assert sorted(points) == sorted(groups)
        for gid, rows in groups.items():
            assert sorted(map(tuple, points[gid].tolist())) == sorted((r.market_rank1, r.market_map) for r in rows)
    assert right.get_xlim() == (x0, x1) and right.get_ylim() == (y0, y1)
    (box,) = [p for p in left.patches if p.get_gid() == "zoom"]
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (x0, y0, x1 - x0, y1 - y0)

    def labels(ax):
        return {t.get_gid()[6:]: t for t in ax.texts if (t.get_gid() or "").startswith("label:")}

    everyone = [r for rows in groups.values() for r in rows]
    inside = {r.method for r in everyone if x0 <= r.market_rank1 <= x1 and y0 <= r.market_map <= y1}
    assert set(labels(right)) == inside and set(labels(left)) == {r.method for r in everyone} - inside
    assert {"Ours-F", "TransReID*", "ABD-Net", "OSNet"} <= inside and "SVDNet" not in inside
    for r in everyone:  # each label is anchored at its own point
        assert {**labels(left), **labels(right)}[r.method].xy == (r.market_rank1, r.market_map)
    assert labels(right)["Ours-F"].get_fontweight() == "bold"

    only_published = viz.market1501_landscape(later=[r for r in paper.LATER_METHODS if not r.rerun])
    gids = {c.get_gid() for c in only_published.axes[1].collections}
    assert "points:rerun" not in gids and "points:later" in gids
    import matplotlib.pyplot as plt

    plt.close(fig), plt.close(only_published)


def _marker_centres(ax):
    """(display centre, width in pixels) of every scatter marker of ``ax`` as drawn: the point,
    moved by its own path's centre (the dodge of rrid.viz.tables), sizes in points^2."""
    px = ax.figure.dpi / 72
    drawn = []
    for c in ax.collections:
        if not (c.get_gid() or "").startswith("points:"):
            continue
        unit = float(c.get_sizes()[0]) ** 0.5  # one path unit = sqrt(s) points
        paths, offsets = c.get_paths(), ax.transData.transform(c.get_offsets())
        for i, xy in enumerate(offsets):
            vertices = paths[i % len(paths)].vertices
            shift = (vertices.min(0) + vertices.max(0)) / 2 * unit * px
            drawn.append((xy + shift, unit * px))
    return drawn


@pytest.mark.parametrize("figure", ["table1_tradeoff", "market1501_landscape"])
def test_no_marker_hides_another(figure):
    """Markers that coincide on the page (Deep-Person and AlignedReID at 2k, OSNet and HPM at
    94.2 / 82.6-82.7) are drawn side by side: no two centres closer than half the smaller width."""
    fig = getattr(viz, figure)()
    fig.canvas.draw()
    for ax in fig.axes[:3]:
        drawn = [(xy, w) for xy, w in _marker_centres(ax) if ax.bbox.contains(*xy)]
        for i, (a, wa) in enumerate(drawn):
            for b, wb in drawn[:i]:
                assert np.hypot(*(a - b)) >= min(wa, wb) / 2 - 1e-6, (ax.get_title(), a, b)
    plt.close(fig)


def test_dodge_spreads_only_coinciding_markers():
    from rrid.viz.tables import _dodge

    fig, ax = plt.subplots(figsize=(4, 4), dpi=72)  # 1 point = 1 pixel
    ax.set(xlim=(0, 100), ylim=(0, 100))
    shifts = _dodge(ax, [(50, 50), (50, 50.1), (10, 10), (90, 90)], [10, 6, 10, 10])
    assert shifts[2:] == [0.0, 0.0] and shifts[:2] == [-5.0, 5.0]  # a width (the larger) apart
    plt.close(fig)


def test_landscape_labels_keep_off_the_zoom_box():
    fig = viz.market1501_landscape()
    fig.canvas.draw()
    left = fig.axes[0]
    (box,) = [p for p in left.patches if p.get_gid() == "zoom"]
    frame = box.get_window_extent()
    for t in left.texts:
        if (t.get_gid() or "").startswith("label:"):
            assert not t.get_window_extent().overlaps(frame), t.get_text()
    plt.close(fig)


def test_seed_strip_marks_and_intervals():
    from scipy import stats as st

    values = {"row 4": [77.1, 77.3, 77.0, 77.4, 77.2], "row 5": [78.5, 78.3, 78.6, 78.2, 78.4]}
    fig = viz.seed_strip(values, marks={"row 5": 79.0})
    ax = fig.axes[0]
    dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert [list(d.get_ydata()) for d in dots] == list(values.values())
    diamonds = [line for line in ax.get_lines() if line.get_marker() == "D"]
    assert len(diamonds) == 1 and list(diamonds[0].get_xdata()) == [1] and list(diamonds[0].get_ydata()) == [79.0]
    for container, key in zip(ax.containers, values):     # one error bar per column: the t interval
        x = np.array(values[key])
        lo, hi = st.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=st.sem(x))
        caps = sorted(float(y) for line in container.lines[1] for y in line.get_ydata())
        assert caps == pytest.approx([lo, hi])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["row 4", "row 5"]
    plt.close(fig)


def test_augmentation_batch_reads_market1501_mini_by_default(monkeypatch, synthetic_small):
    monkeypatch.setenv("RRID_MARKET_MINI", str(synthetic_small))      # any folder in Market-1501's layout
    arrays = lambda f: [ax.images[0].get_array() for ax in f.axes]  # noqa: E731
    default = viz.augmentation_batch(n=3, seed=2, height=96, width=32)
    given = viz.augmentation_batch(synthetic_small, n=3, seed=2, height=96, width=32)
    assert all(np.array_equal(a, b) for a, b in zip(arrays(default), arrays(given)))
    monkeypatch.setenv("RRID_MARKET_MINI", "none")
    with pytest.raises(ValueError, match="market1501-mini.*rrid.book.synthetic"):
        viz.augmentation_batch(n=3)


# ----------------------------------------------------------------------------- forest plot


def test_forest_draws_each_interval_in_its_verdict_colour():
    from types import SimpleNamespace

    from rrid.stats import AGREES, CANNOT_TELL, CONTRADICTS, PairedDifference, verdict

    def comparison(mean, low, high, paper_diff):
        return SimpleNamespace(quick=PairedDifference(mean, low, high, 5), paper=paper_diff,
                               verdict=verdict((low, high), paper_diff))

    comparisons = [comparison(1.0, 0.5, 1.5, 1.2), comparison(-1.0, -1.6, -0.2, 0.8),
                   comparison(0.1, -0.4, 0.7, 0.6)]
    assert [c.verdict.category for c in comparisons] == [AGREES, CONTRADICTS, CANNOT_TELL]
    fig, ax = plt.subplots()
    assert viz.forest(ax, comparisons, ["a", "b", "c"], "title") is ax
    ticks = {float(y): t.get_text() for y, t in zip(ax.get_yticks(), ax.get_yticklabels())}
    assert ticks == {2.0: "a", 1.0: "b", 0.0: "c"}                                # the first on top
    assert ax.get_title() == "title" and ax.get_xlabel() == "difference in mAP (points)"
    for container, c, y, colour in zip(ax.containers, comparisons, (2, 1, 0), ("C2", "C3", "grey")):
        point, _, (bars,) = container.lines
        assert (float(point.get_xdata()[0]), float(point.get_ydata()[0])) == (c.quick.mean, y)
        assert mcolors.same_color(point.get_color(), colour)
        assert np.allclose(bars.get_segments()[0], [[c.quick.low, y], [c.quick.high, y]])
    diamonds = [line for line in ax.get_lines() if line.get_marker() == "D"]
    assert [(float(d.get_xdata()[0]), float(d.get_ydata()[0])) for d in diamonds] == [(1.2, 2), (0.8, 1), (0.6, 0)]
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert names == ["paper (Market-1501)", AGREES, CONTRADICTS, CANNOT_TELL]    # each category drawn, once
    fig.canvas.draw()
    legend, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.y1 < axes_box.y0, "the legend sits below the axes"
    plt.close(fig)


# ----------------------------------------------------------------------------- LivePlot


class _Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _logs(step):
    return {"total": float(step), "triplet": 3.0 * step + 1, "ce": 0.5, "acc": 0.25, "lr": {"head": 1.0 / step}}


def test_liveplot_redraws_at_most_once_per_interval(monkeypatch):
    """Live: a step redraws only when ``interval`` seconds have passed since the last draw; an
    evaluation and the end of the run always redraw. Every step is recorded either way."""
    from types import SimpleNamespace

    import rrid.viz.live

    shown = []

    class Handle:
        def update(self, fig):
            shown.append(clock.now)

    def display(fig, display_id):
        shown.append(clock.now)
        return Handle()

    monkeypatch.setattr(rrid.viz.live, "display", display)
    clock = _Clock()
    plot = viz.LivePlot(interval=1.5, live=True, clock=clock)
    for step in range(1, 41):                      # a step every 0.25 s for 10 s (binary fractions: exact)
        clock.now = (step - 1) * 0.25
        plot.on_step(SimpleNamespace(step=step), _logs(step))
    assert shown == [0.0, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0], "the first step, then every 1.5 s"
    plot.on_eval(SimpleNamespace(step=40), {"mAP": 0.5, "rank1": 0.6})
    plot.on_fit_end(SimpleNamespace(step=40))
    assert shown[-2:] == [9.75, 9.75] and len(shown) == 9
    assert plot.steps == list(range(1, 41)) and plot.parts["total"] == [float(s) for s in range(1, 41)]
    assert plot.fig is not None and len(plot.fig.axes) == 3


def _finished_plot(steps: int):
    """A static LivePlot after ``steps`` logged steps, one evaluation at the end and the run's end."""
    from types import SimpleNamespace

    plot = viz.LivePlot(live=False)
    for step in range(1, steps + 1):
        plot.on_step(SimpleNamespace(step=step), _logs(step))
    plot.on_eval(SimpleNamespace(step=steps), {"mAP": 0.5, "rank1": 0.6})
    plot.on_fit_end(SimpleNamespace(step=steps))
    return plot


def test_liveplot_draws_at_most_max_points_per_curve_and_keeps_every_value():
    plot = _finished_plot(5000)
    assert len(plot.steps) == len(plot.parts["triplet"]) == len(plot.lr["head"]) == 5000, "all values recorded"
    ax_loss, ax_lr, ax_map = plot.fig.axes
    lines = {line.get_label(): line for line in ax_loss.get_lines() + ax_lr.get_lines()}
    # 5,000 steps into 1,000 runs of 5: the mean step of run k is 5k + 3, its mean total loss the same number
    means = np.arange(1, 5001, dtype=float).reshape(1000, 5).mean(axis=1)
    for label in ("total", "triplet", "CE", "head"):
        assert len(lines[label].get_xdata()) == 1000 and np.array_equal(lines[label].get_xdata(), means)
    assert np.array_equal(lines["total"].get_ydata(), means)
    # float64 means of at most 5 values near 1e4: rounding ~1e-12, far below 1e-9
    assert np.allclose(lines["triplet"].get_ydata(), 3 * means + 1, rtol=0, atol=1e-9)
    assert np.allclose(lines["head"].get_ydata(), (1.0 / np.arange(1, 5001)).reshape(1000, 5).mean(axis=1))
    assert [list(line.get_xdata()) for line in ax_map.get_lines()] == [[5000], [5000]], "evaluations are not thinned"


def test_liveplot_legends_sit_below_their_axes():
    """No legend entry is drawn over a curve: every panel's legend lies below its axes."""
    plot = _finished_plot(23)
    plot.fig.canvas.draw()
    for ax in plot.fig.axes:
        legend, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert legend.y1 < axes_box.y0, f"the legend of {ax.get_title()!r} sits below the axes"
    plt.close(plot.fig)


def test_thin_splits_into_even_runs_of_consecutive_points():
    from rrid.viz.live import thin

    steps = np.arange(2501)
    x, y = thin(steps, 2.0 * steps - 7, 1000)             # runs of 2 or 3 points
    assert len(x) == 1000 and np.all(np.diff(x) > 0) and x[0] < 2 and x[-1] > 2498
    assert np.allclose(y, 2 * x - 7, rtol=0, atol=1e-9)    # the same runs averaged in x and y
    short_x, short_y = thin([1, 2, 3], [4.0, 5.0, 6.0], 1000)
    assert short_x.tolist() == [1, 2, 3] and short_y.tolist() == [4.0, 5.0, 6.0]
