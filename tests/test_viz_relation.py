"""The figures of Figs. 5-6 and the chapter 4-5 widgets: their panels show the numbers computed independently."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from rrid import explain, viz  # noqa: E402
from rrid.evaluation import Features  # noqa: E402
from rrid.model import RRID, RRIDConfig  # noqa: E402
from rrid.cost import relation_cost  # noqa: E402
from rrid.retrieval import Ranking  # noqa: E402

from test_retrieval import top_k_by_hand  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def hexes(ax):
    return mcolors.to_hex(ax.spines["top"].get_edgecolor())


def toy_rankings(names=("a", "b"), Q=3, G=8, seed=0):
    rng = np.random.default_rng(seed)
    q_pids, g_pids = np.array([0, 1, 2])[:Q], rng.integers(0, 3, G)
    q_cams, g_cams = np.zeros(Q, int), rng.integers(0, 2, G)
    imgs = lambda n, base: [np.full((16, 8, 3), (base + i) / 40) for i in range(n)]
    q = Features(torch.empty(Q, 0), q_pids, q_cams, imgs(Q, 0))
    g = Features(torch.empty(G, 0), g_pids, g_cams, imgs(G, 10))
    return {name: Ranking(torch.from_numpy(rng.random((Q, G))), q, g) for name in names}


def test_retrieval_comparison_frames_are_the_protocols_matches():
    rankings = toy_rankings()
    queries, k = [0, 2], 3
    fig = viz.retrieval_comparison(rankings, queries, k=k)
    axes = np.array(fig.axes).reshape(3, 2 * k + 1)  # query row + one row per model; a gap column between blocks
    assert all(not ax.axison for ax in axes[:, k])  # the gap
    for b, q in enumerate(queries):
        block = axes[:, b * (k + 1): b * (k + 1) + k]
        assert block[0, 0].get_title() == f"query {q}" and not block[0, 1].axison
        for m, (name, r) in enumerate(rankings.items()):
            d = r.distmat[q].numpy()
            order, matches = top_k_by_hand(d, q, 0, r.gallery.pids, r.gallery.camids, k)
            colours = [hexes(ax) for ax in block[1 + m]]
            assert colours == [viz.MATCH if mt else viz.NON_MATCH for mt in matches]
            assert [ax.get_title() for ax in block[1 + m]] == [f"{d[g]:.3f}" for g in order]
    assert [axes[1 + m, 0].get_ylabel() for m in range(2)] == ["a", "b"] and axes[1, k + 1].get_ylabel() == ""


@pytest.fixture(scope="module")
def fig6_models():
    torch.manual_seed(0)
    return {"R_p(r̄_i)": RRID(RRIDConfig.table2(5, backbone="resnet18", relation="rest_only"), num_classes=3).eval(),
            "R_p(T(p̄_i, r̄_i))": RRID(RRIDConfig.table2(5, backbone="resnet18"), num_classes=3).eval()}


def test_relation_activation_maps_panels(fig6_models):
    image = torch.randn(3, 96, 32, generator=torch.Generator().manual_seed(0))
    display = np.zeros((120, 40, 3))
    rankings = toy_rankings(tuple(fig6_models))
    fig = viz.relation_activation_maps(fig6_models, image, display=display, rankings=rankings, query=1, k=3)
    axes = np.array(fig.axes).reshape(2, 6 + 1 + 3)
    assert [ax.get_title() for ax in axes[0, :6]] == [f"i = {i}" for i in range(1, 7)]
    for row, (name, model) in zip(axes, fig6_models.items()):
        assert row[0].get_ylabel() == name
        res = explain.relation_maps(model, image)
        for i, ax in enumerate(row[:6], start=1):  # the figure's maps are relation_maps' own: equal bit for bit
            np.testing.assert_allclose(np.asarray(ax.images[1].get_array()), res.maps[0, i - 1].numpy())
            (outline,) = [p for p in ax.patches if isinstance(p, plt.Rectangle)]
            assert (outline.get_y(), outline.get_height()) == pytest.approx(((i - 1) * 20, 20))  # 120 rows / 6
        if model.config.relation == "rest_only":
            assert [ax.get_xlabel() for ax in row[:6]] == ["rest 100%"] * 6
        assert not row[6].axison
        r = rankings[name]
        _, matches = top_k_by_hand(r.distmat[1].numpy(), 1, 0, r.gallery.pids, r.gallery.camids, 3)
        assert [hexes(ax) for ax in row[7:]] == [viz.MATCH if m else viz.NON_MATCH for m in matches]
    with pytest.raises(ValueError, match="one Ranking per model"):
        viz.relation_activation_maps(fig6_models, image, rankings={"x": rankings[name]}, query=0)


def test_rest_composition_highlights_stripe_i_and_its_rest():
    # float64: the figure's rest and the one below add in different orders; rounding ~1e-16 then
    p = torch.rand(1, 6, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fig = viz.rest_composition({"p": p}, 4, image=np.zeros((60, 20, 3)), channels=10)
    image_ax, all_ax, pair_ax = fig.axes
    faces = [mcolors.to_hex(r.get_facecolor()[:3]) for r in image_ax.patches]
    assert faces == [mcolors.to_hex("tab:orange") if j == 3 else mcolors.to_hex("tab:blue") for j in range(6)]
    assert [r.get_y() for r in image_ax.patches] == pytest.approx([10 * j for j in range(6)])
    np.testing.assert_allclose(all_ax.images[0].get_array(), p[0, :, :10].numpy())
    rest = (p[0].sum(0) - p[0, 3]) / 5
    np.testing.assert_allclose(pair_ax.images[0].get_array(), np.stack([p[0, 3, :10], rest[:10]]), rtol=1e-6)
    assert [t.get_text() for t in all_ax.get_yticklabels()][3] == "p4  ×0"


def test_relation_on_off_shows_q_or_p_bar():
    g = torch.Generator().manual_seed(0)
    # float64: the figure recovers R as q - p̄, which float32 would round to ~1e-7 relative
    p_bar, R = (torch.rand(2, 4, 8, generator=g, dtype=torch.float64) for _ in range(2))
    features = {"p": torch.rand(2, 4, 16, dtype=torch.float64), "p_bar": p_bar, "r_bar": p_bar, "q": p_bar + R}
    for relation in (True, False):
        fig = viz.relation_on_off(features, relation=relation, index=1, channels=8)
        left, right = fig.axes
        np.testing.assert_allclose(left.images[0].get_array(), (p_bar + R if relation else p_bar)[1].numpy(), rtol=1e-6)
        bars = right.patches
        np.testing.assert_allclose([b.get_height() for b in bars[:4]], p_bar[1].norm(dim=1).numpy(), rtol=1e-6)
        np.testing.assert_allclose([b.get_height() for b in bars[4:]], (p_bar + R)[1].norm(dim=1).numpy(), rtol=1e-6)
        np.testing.assert_allclose(right.lines[0].get_ydata(), R[1].norm(dim=1).numpy(), rtol=1e-5)
        assert (bars[0].get_alpha(), bars[4].get_alpha()) == ((0.35, 1.0) if relation else (1.0, 0.35))


def test_relation_cost_plots_the_formulas():
    fig = viz.relation_cost(n=4, C=512, c=64, ns=range(2, 9), designs=("one_vs_rest", "all_pairs", "rest_only"))
    params_ax, macs_ax, dim_ax = fig.axes
    for ax, field, scale in ((params_ax, "params", 1e6), (macs_ax, "macs", 1e6), (dim_ax, "feature_dim", 1)):
        for line, design in zip(ax.lines, ("one_vs_rest", "all_pairs", "rest_only")):
            assert list(line.get_xdata()) == list(range(2, 9))
            np.testing.assert_allclose(line.get_ydata(), [getattr(relation_cost(m, 512, 64, design), field) / scale
                                                          for m in range(2, 9)])
        assert list(ax.lines[-1].get_xdata()) == [4, 4]  # the widget's n
    assert dim_ax.get_title().endswith("n = 4: 256 vs 384 vs 256")
    (legend,) = fig.legends  # one legend for the three panels, below them
    assert "all pairs (the book's design)" in [t.get_text() for t in legend.get_texts()]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert legend.get_window_extent(renderer).y1 < min(ax.get_tightbbox(renderer).y0 for ax in fig.axes) + 1


@pytest.mark.parametrize("contrast", ["official", "paper"])
def test_gcp_panel_bars_and_lines(contrast):
    # float64, like the Python floats it is compared with (float32 would leave ~1e-7 relative)
    x = torch.zeros(2, 6, 2, dtype=torch.float64)
    x[0] = torch.tensor([[0.1, 0.3], [0.2, 0.0], [0.9, 0.4], [0.5, 0.6], [0.0, 0.7], [0.2, 0.1]])
    for n, p in ((6, [0.3, 0.2, 0.9, 0.6, 0.7, 0.2]), (3, [0.3, 0.9, 0.7])):
        fig = viz.gcp_panel(x, 0, contrast=contrast, n=n, image=np.zeros((60, 20, 3)))
        image_ax, ax = fig.axes
        np.testing.assert_allclose([b.get_width() for b in ax.patches], p, rtol=1e-6)
        reds = [i for i, b in enumerate(ax.patches) if mcolors.to_hex(b.get_facecolor()) == viz.NON_MATCH]
        assert reds == [int(np.argmax(p))]
        p_max, p_avg = max(p), np.mean(p)
        p_cont = (sum(p) - p_max) / (n - 1) if contrast == "official" else p_avg - p_max
        xs = [line.get_xdata()[0] for line in ax.lines]
        np.testing.assert_allclose(xs[:3], [p_max, p_avg, p_cont], rtol=1e-6)
        boxes = [r for r in image_ax.patches]
        assert len(boxes) == n and sum(mcolors.to_hex(b.get_edgecolor()) == viz.NON_MATCH for b in boxes) == 1
        plt.close(fig)
