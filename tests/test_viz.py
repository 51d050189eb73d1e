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


def test_activation_maps_marks_the_gmp_argmax():
    class Backbone(torch.nn.Module):
        def forward(self, x):
            fmap = torch.zeros(1, 2, 6, 2)
            fmap[0, 0, torch.arange(6), torch.tensor([0, 1, 0, 1, 0, 1])] = 1.0
            return fmap

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Backbone()

    fig = viz.activation_maps(Model(), torch.rand(3, 12, 4), num_stripes=6)
    assert len(fig.axes) == 2
    stars = [line for line in fig.axes[1].lines if line.get_marker() == "*"]
    xs = [float(s.get_xdata()[0]) for s in stars]
    assert xs == [1.0, 3.0, 1.0, 3.0, 1.0, 3.0]  # (column + 0.5) * W / w with W = 4, w = 2


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
