"""rrid.explain against direct computations: Fig. 6's maps, the rest of a stripe, the relation switch, GCP's channel."""

import functools

import pytest
import torch

from rrid import explain
from rrid.model import RRID, GlobalContrastivePooling, RelationModule, RRIDConfig, stripe_pool

from test_model import float64, randomise_bn, reduce_by_hand  # noqa: F401 (float64 is a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

N_STRIPES = 6


@functools.lru_cache(maxsize=None)
def build(relation):
    """Row 5 (P6, GMP) with either relation, float64, random head BN, in eval mode."""
    torch.manual_seed(0)
    m = RRID(RRIDConfig.table2(5, backbone="resnet18", relation=relation), num_classes=3).double()
    randomise_bn(m.heads, seed=1)
    return m.eval()


@pytest.fixture(scope="module", params=[True, "rest_only"], ids=["eq1", "rest_only"])
def model(request):
    return build(request.param)


def inputs(n=2, h=96, w=32, seed=0):
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def energy_by_hand(module, p, i):
    """s_i = ||R_p(.)_i||^2 from the part features p (N, n, C), written with the layers' weights."""
    n = p.shape[1]
    r_i = torch.stack([p[:, j] for j in range(n) if j != i]).mean(0)
    pb, rb = reduce_by_hand(module.p_layers[i], p[:, i]), reduce_by_hand(module.r_layers[i], r_i)
    R_in = rb if module.R_p[i].conv.in_channels == rb.shape[1] else torch.cat([pb, rb], 1)
    return reduce_by_hand(module.R_p[i], R_in).square().sum(1), r_i


def test_stripe_rows_are_the_rows_stripe_pool_uses():
    for H in (6, 7, 24):
        x = torch.eye(H).reshape(1, H, H, 1)  # channel h is 1 on row h only
        for n in (2, 4, 6):
            used = stripe_pool(x, n, "gmp")[0]  # (n, H): 1 where stripe i contains row h
            expected = torch.zeros(n, H)
            for i, (first, stop) in enumerate(explain.stripe_rows(H, n)):
                expected[i, first:stop] = 1
            torch.testing.assert_close(used, expected)
    with pytest.raises(ValueError, match="n=7 stripes on a feature map of 6 rows"):
        explain.stripe_rows(6, 7)


def test_relation_maps_shapes_clamp_and_energy(model):
    images = inputs()
    res = explain.relation_maps(model, images)
    assert res.maps.shape == res.raw.shape == (2, 6, 6, 2) and res.energy.shape == (2, 6)
    assert res.parts == (1, 2, 3, 4, 5, 6) and res.rows == [(i, i + 1) for i in range(6)]
    assert res.rest_only == (model.config.relation == "rest_only")
    torch.testing.assert_close(res.maps, res.raw.clamp(min=0))
    with torch.no_grad():
        f = model.forward_features(images)["P6"]
    torch.testing.assert_close(res.energy, (f["q"] - f["p_bar"]).square().sum(2))  # s_i = ||q_i - p̄_i||^2
    assert bool((res.energy > 0).all())  # otherwise the maps below would be trivially zero
    sub = explain.relation_maps(model, images[1], parts=[5, 2])  # one image, two parts, any order
    assert sub.parts == (5, 2)
    torch.testing.assert_close(sub.raw[0], res.raw[1, [4, 1]])


def test_each_stripe_of_the_map_sums_to_its_share_of_the_energy(model):
    # sum over stripe j of M_i = sum_k p_jk d s_i / d p_jk, with s_i written by hand from p.
    images = inputs()
    res = explain.relation_maps(model, images)
    with torch.no_grad():
        x = model.backbone(images)
    p = stripe_pool(x, N_STRIPES, "gmp").requires_grad_(True)
    module = model.heads["P6"].local
    for i in range(N_STRIPES):
        s, _ = energy_by_hand(module, p, i)
        torch.testing.assert_close(s.detach(), res.energy[:, i])
        (g,) = torch.autograd.grad(s.sum(), p)
        share = (p * g).sum(2).detach()  # (N, n): stripe j's first-order share of s_i
        per_stripe = res.raw[:, i].sum(2)  # (N, n): stripe j = row j on this 6-row map
        scale = share.abs().max()
        torch.testing.assert_close(per_stripe, share, atol=1e-10 * float(scale), rtol=1e-9)


def test_maps_live_on_the_cells_gmp_picks(model):
    images = inputs()
    res = explain.relation_maps(model, images)
    with torch.no_grad():
        x = model.backbone(images)  # (N, C, 6, 2): stripe j = row j
    picked = (x == x.amax(dim=3, keepdim=True)) & (x != 0)  # a channel's max in its stripe (row), non-zero
    support = picked.any(dim=1)  # (N, 6, 2)
    assert bool((res.raw[:, :, ~support[0]][0] == 0).all()) and bool((res.raw[1][:, ~support[1]] == 0).all())
    assert bool((res.raw != 0).any())


def test_rest_only_maps_are_zero_on_their_own_stripe(model):
    res = explain.relation_maps(model, inputs())
    own = torch.stack([res.raw[:, k, i - 1] for k, i in enumerate(res.parts)], 1)  # (N, P, w): stripe i's row
    scale = float(res.raw.abs().max())
    if model.config.relation == "rest_only":
        # R_p(r̄_i) sees x only through r_i, which does not contain p_i: exactly 0 (tolerance for the float64 sum order)
        assert float(own.abs().max()) <= 1e-12 * scale
        assert bool((res.rest_share() == 1).all())
    else:
        assert float(own.abs().max()) > 1e-3 * scale  # Eq. (1): stripe i also feeds R_p through p̄_i
        assert bool((res.rest_share() < 1).any())


def test_rest_only_weights_every_other_stripe_with_one_channel_vector():
    # sum over stripe j of M_i = 1/(n-1) sum_k p_jk d s_i / d r_ik for every j != i
    model = build("rest_only")
    images = inputs()
    res = explain.relation_maps(model, images)
    with torch.no_grad():
        p = stripe_pool(model.backbone(images), N_STRIPES, "gmp")
    module = model.heads["P6"].local
    for i in range(N_STRIPES):
        r_i = torch.stack([p[:, j] for j in range(N_STRIPES) if j != i]).mean(0).requires_grad_(True)
        R = reduce_by_hand(module.R_p[i], reduce_by_hand(module.r_layers[i], r_i))
        (g,) = torch.autograd.grad(R.square().sum(), r_i)
        expected = torch.einsum("njc,nc->nj", p, g) / (N_STRIPES - 1)
        expected[:, i] = 0
        torch.testing.assert_close(res.raw[:, i].sum(2), expected, atol=1e-10 * float(expected.abs().max()), rtol=1e-9)


def test_relation_maps_errors_and_mode():
    plain = RRID(RRIDConfig.table2(4, backbone="resnet18"), num_classes=3)
    with pytest.raises(ValueError, match="no relation module"):
        explain.relation_maps(plain, inputs(1).float())
    model = RRID(RRIDConfig.table2(5, backbone="resnet18"), num_classes=3).train()
    with pytest.raises(ValueError, match="scale='P4'"):
        explain.relation_maps(model, inputs(1).float(), scale="P4")
    with pytest.raises(ValueError, match=r"i in 1\.\.6"):
        explain.relation_maps(model, inputs(1).float(), parts=[0])
    explain.relation_maps(model, inputs(1).float(), parts=[1])
    assert model.training and all(p.grad is None for p in model.parameters())


@pytest.mark.usefixtures("float64")  # the equations in float64: default tolerances see only a wrong formula
def test_rest_composition_and_relation_switch():
    torch.manual_seed(0)
    module = randomise_bn(RelationModule(4, 5, 3))
    p = torch.rand(2, 4, 5)
    q, p_bar, r_bar = module(p)
    features = {"p": p, "q": q, "p_bar": p_bar, "r_bar": r_bar}
    comp = explain.rest_composition(features, 3, index=1)
    torch.testing.assert_close(comp["weights"], torch.tensor([1 / 3, 1 / 3, 0, 1 / 3]))
    torch.testing.assert_close(comp["r_i"], (p[1, 0] + p[1, 1] + p[1, 3]) / 3)
    torch.testing.assert_close(comp["r_i"], comp["weights"] @ p[1])
    assert torch.equal(comp["p_i"], p[1, 2]) and torch.equal(comp["p_bar_i"], p_bar[1, 2])
    assert torch.equal(comp["r_bar_i"], r_bar[1, 2])
    assert set(explain.rest_composition(p[0], 1)) == {"weights", "p_i", "r_i"}  # p alone, (n, C)
    with pytest.raises(ValueError, match=r"1\.\.4"):
        explain.rest_composition(p, 0)

    sw = explain.relation_switch(features, index=0)
    assert sw["residual"].shape == sw["on"].shape == sw["off"].shape == (4, 3)
    for i in range(4):  # residual = R_p(T(p̄_i, r̄_i)) of stripe i
        R = reduce_by_hand(module.R_p[i], torch.cat([p_bar[:1, i], r_bar[:1, i]], 1))[0]
        torch.testing.assert_close(sw["residual"][i], R)
    assert torch.equal(sw["on"], q[0]) and torch.equal(sw["off"], p_bar[0])
    torch.testing.assert_close(sw["norm_on"], q[0].norm(dim=1))
    torch.testing.assert_close(sw["norm_residual"], (q[0] - p_bar[0]).norm(dim=1))
    with pytest.raises(ValueError, match="no r̄"):
        explain.relation_switch({"p": p, "q": p_bar, "p_bar": p_bar})


@pytest.mark.usefixtures("float64")  # like the Python floats it is compared with
def test_gcp_channel_on_a_hand_made_map():
    x = torch.zeros(3, 6, 2)
    x[1] = torch.tensor([[0.1, 0.3], [0.2, 0.0], [0.9, 0.4], [0.5, 0.6], [0.0, 0.7], [0.2, 0.1]])
    g = explain.gcp_channel(x, 1, n=6, contrast="official")
    torch.testing.assert_close(g["p"], torch.tensor([0.3, 0.2, 0.9, 0.6, 0.7, 0.2]))
    assert g["p_max"] == pytest.approx(0.9) and g["p_avg"] == pytest.approx(2.9 / 6)
    assert g["p_cont"] == pytest.approx((2.9 - 0.9) / 5)
    assert g["max_stripe"] == 3 and g["cells"] == [(0, 1), (1, 0), (2, 0), (3, 1), (4, 1), (5, 0)]
    paper = explain.gcp_channel(x[None], 1, n=6, contrast="paper")
    assert paper["p_cont"] == pytest.approx(2.9 / 6 - 0.9)
    # n = 3: stripes of two rows, maxima 0.3, 0.9, 0.7; n = 2: 0.9, 0.7
    g3 = explain.gcp_channel(x, 1, n=3)
    torch.testing.assert_close(g3["p"], torch.tensor([0.3, 0.9, 0.7]))
    assert g3["p_cont"] == pytest.approx(0.5) and g3["cells"] == [(0, 1), (2, 0), (4, 1)] and g3["rows"] == [(0, 2), (2, 4), (4, 6)]
    assert explain.gcp_channel(x, 1, n=2, contrast="paper")["p_cont"] == pytest.approx(0.8 - 0.9)
    # the same numbers as the module that trains, on every channel
    for contrast in ("official", "paper"):
        module = GlobalContrastivePooling(3, 2, contrast)
        p_max, p_cont = module.contrastive(stripe_pool(x[None], 6, "gmp"))
        for k in range(3):
            g = explain.gcp_channel(x, k, 6, contrast)
            assert (g["p_max"], g["p_cont"]) == pytest.approx((float(p_max[0, k]), float(p_cont[0, k])))
    with pytest.raises(ValueError, match="contrast='mean'"):
        explain.gcp_channel(x, 1, contrast="mean")
    with pytest.raises(ValueError, match=r"channel=3: expected 0\.\.2"):
        explain.gcp_channel(x, 3)


def test_pooling_share_on_a_hand_made_map():
    # C = 2 channels, H = 4 rows, W = 2 columns, n = 2 stripes of 2 rows
    x = torch.zeros(2, 4, 2, dtype=torch.float64)
    x[0, 0, 0], x[0, 1, 1] = 3.0, 1.0     # stripe 1, channel 0: max 3 at (0, 0)
    x[1, 1, 0] = 1.0                      # stripe 1, channel 1: max 1 at (1, 0)
    x[0, 2:, :] = 2.0                     # stripe 2, channel 0: max 2 tied on all four cells
    gmp = explain.pooling_share(x, 2, "gmp")
    expected = torch.zeros(2, 4, 2, dtype=torch.float64)
    expected[0, 0, 0], expected[0, 1, 0] = 3 / 4, 1 / 4          # ||p_1||_1 = 3 + 1; (1, 1) holds no max
    expected[1, 2:, :] = 1 / 4                                   # a tie is split evenly
    torch.testing.assert_close(gmp, expected)
    gap = explain.pooling_share(x, 2, "gap")
    expected = torch.zeros(2, 4, 2, dtype=torch.float64)
    expected[0, 0, 0], expected[0, 1, 1], expected[0, 1, 0] = 3 / 5, 1 / 5, 1 / 5  # channel sums / their total
    expected[1, 2:, :] = 1 / 4
    torch.testing.assert_close(gap, expected)


def test_pooling_share_sums_to_one_per_stripe_and_follows_stripe_pool():
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(2, 16, 6, 3, generator=g, dtype=torch.float64))
    for n in (1, 2, 4, 6):  # n = 4 on 6 rows: neighbouring stripes share a row
        for mode in ("gmp", "gap"):
            share = explain.pooling_share(x, n, mode, index=1)
            assert share.shape == (n, 6, 3) and share.dtype == torch.float64 and (share >= 0).all()
            torch.testing.assert_close(share.sum(dim=(1, 2)), torch.ones(n, dtype=torch.float64))
            p = stripe_pool(x[1:], n, mode)[0]
            for i, (first, stop) in enumerate(explain.stripe_rows(6, n)):
                assert share[i, :first].sum() == 0 and share[i, stop:].sum() == 0, "nothing outside stripe i"
                cells = x[1, :, first:stop]
                if mode == "gap":  # each cell's channel sum over the stripe's total
                    torch.testing.assert_close(share[i, first:stop], cells.sum(0) / cells.sum())
                else:  # random values: no ties; each channel's p_ik goes to its argmax cell
                    by_hand = torch.zeros(stop - first, 3, dtype=torch.float64)
                    for k in range(16):
                        r, c = divmod(int(cells[k].argmax()), 3)
                        by_hand[r, c] += p[i, k]
                    torch.testing.assert_close(share[i, first:stop], by_hand / p[i].sum())


def test_pooling_share_zero_stripe_and_errors():
    x = torch.zeros(3, 4, 2, dtype=torch.float64)
    x[:, :2] = 1.0
    share = explain.pooling_share(x, 2, "gmp")
    assert share[1].abs().sum() == 0, "a stripe whose p_i is zero has no share anywhere"
    with pytest.raises(ValueError, match="non-negative"):
        explain.pooling_share(-x, 2)
    with pytest.raises(ValueError, match="mode='max'"):
        explain.pooling_share(x, 2, "max")


def test_gmp_holders_counts_channel_maxima_per_cell():
    # C = 3 channels, H = 4 rows, W = 2 columns, n = 2 stripes of 2 rows
    x = torch.zeros(3, 4, 2, dtype=torch.float64)
    x[0, 0, 0], x[0, 1, 1] = 3.0, 1.0     # stripe 1, channel 0: max at (0, 0)
    x[1, 0, 0], x[1, 1, 0] = 2.0, 2.0     # stripe 1, channel 1: tied at (0, 0) and (1, 0)
    x[2, 2:, :] = 5.0                     # stripe 2: channel 2 tied on all four cells; channels 0, 1 zero
    holders = explain.gmp_holders(x, 2)
    expected = torch.zeros(2, 4, 2, dtype=torch.float64)
    expected[0, 0, 0], expected[0, 1, 0] = 1.5, 0.5   # channel 0 whole, channel 1 split; channel 2 is zero there
    expected[1, 2:, :] = 0.25                          # only channel 2 is non-zero in stripe 2
    torch.testing.assert_close(holders, expected)


def test_gmp_holders_follow_the_argmax_of_every_channel():
    g = torch.Generator().manual_seed(1)
    x = torch.relu(torch.randn(2, 16, 6, 3, generator=g, dtype=torch.float64))
    for n in (1, 4, 6):  # n = 4 on 6 rows: neighbouring stripes share a row
        holders = explain.gmp_holders(x, n, index=1)
        p = stripe_pool(x[1:], n, "gmp")[0]
        for i, (first, stop) in enumerate(explain.stripe_rows(6, n)):
            assert holders[i, :first].sum() == 0 and holders[i, stop:].sum() == 0, "nothing outside stripe i"
            cells = x[1, :, first:stop]
            by_hand = torch.zeros(stop - first, 3, dtype=torch.float64)
            for k in range(16):   # random values: no ties
                if p[i, k] > 0:
                    r, c = divmod(int(cells[k].argmax()), 3)
                    by_hand[r, c] += 1
            torch.testing.assert_close(holders[i, first:stop], by_hand)
            assert holders[i].sum() == int((p[i] > 0).sum())


def test_global_share_on_a_hand_made_map():
    # C = 2 channels, H = 4 rows, W = 1 column; n = 2 stripes (rows 0-1 and 2-3)
    x = torch.zeros(2, 4, 1, dtype=torch.float64)
    x[0, :, 0] = torch.tensor([3.0, 1.0, 2.0, 0.0])   # p_1 = 3 (row 0), p_2 = 2 (row 2): p_max = 3 at row 0
    x[1, :, 0] = torch.tensor([0.0, 1.0, 0.0, 4.0])   # p_1 = 1 (row 1), p_2 = 4 (row 3): p_max = 4 at row 3
    expected = {
        "gmp": [3 / 7, 0, 0, 4 / 7],                                   # v = (3, 4)
        "gap": [0.75 / 2.75, 0.5 / 2.75, 0.5 / 2.75, 1.0 / 2.75],      # v = (1.5, 1.25): channel sums / 4
        "gap+gmp": [3.75 / 9.75, 0.5 / 9.75, 0.5 / 9.75, 5.0 / 9.75],  # both, over ||v||_1 = 2.75 + 7
        "p_max": [3 / 7, 0, 0, 4 / 7],
    }
    for feature, column in expected.items():
        share = explain.global_share(x, feature, n=2)
        torch.testing.assert_close(share, torch.tensor(column, dtype=torch.float64)[:, None], msg=feature)
    # the code's p_cont, n = 2: the stripe that did not win, v = (2, 1); the winning cells give 0
    torch.testing.assert_close(explain.global_share(x, "p_cont", n=2, contrast="official"),
                               torch.tensor([[0.0], [1 / 3], [2 / 3], [0.0]], dtype=torch.float64))
    # the paper's, v = p_avg - p_max = (-0.5, -1.5): +p_ik/2 at each stripe's max, -p_max/2 net at the winner's
    torch.testing.assert_close(explain.global_share(x[None], "p_cont", n=2, contrast="paper"),
                               torch.tensor([[-1.5 / 2], [0.5 / 2], [1.0 / 2], [-2.0 / 2]], dtype=torch.float64))


def test_global_share_adds_up_and_follows_the_pooling_code():
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(2, 16, 6, 3, generator=g, dtype=torch.float64))
    for mode in ("gap", "gmp"):
        torch.testing.assert_close(explain.global_share(x, mode, index=1), explain.pooling_share(x, 1, mode, index=1)[0])
    xi = x[1]
    gap, gmp = xi.mean(dim=(1, 2)), xi.amax(dim=(1, 2))
    mixed = (gap.sum() * explain.global_share(xi, "gap") + gmp.sum() * explain.global_share(xi, "gmp")) / (gap + gmp).sum()
    torch.testing.assert_close(explain.global_share(xi, "gap+gmp"), mixed)
    for n in (2, 4, 6):  # n = 4 on 6 rows: neighbouring stripes share a row
        p = stripe_pool(xi[None], n, "gmp")[0]                    # (n, C), no ties in random data
        win = p.argmax(dim=0)
        official, paper = torch.zeros(6, 3, dtype=torch.float64), torch.zeros(6, 3, dtype=torch.float64)
        for k in range(16):
            for i, (first, stop) in enumerate(explain.stripe_rows(6, n)):
                r, c = divmod(int(xi[k, first:stop].argmax()), 3)
                if i != win[k]:
                    official[first + r, c] += p[i, k] / (n - 1)
                paper[first + r, c] += p[i, k] / n - (p[i, k] if i == win[k] else 0)
        cont_official, cont_paper = (p.sum(0) - p.amax(0)) / (n - 1), p.mean(0) - p.amax(0)
        torch.testing.assert_close(explain.global_share(xi, "p_cont", n, "official"), official / cont_official.abs().sum())
        torch.testing.assert_close(explain.global_share(xi, "p_cont", n, "paper"), paper / cont_paper.abs().sum())
        assert explain.global_share(xi, "p_cont", n, "paper").sum().item() == pytest.approx(-1.0)
        torch.testing.assert_close(explain.global_share(xi, "p_max", n), explain.global_share(xi, "gmp"))


def test_global_share_leaves_the_rng_alone_and_checks_its_input():
    x = torch.rand(8, 6, 2, dtype=torch.float64)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    explain.global_share(x, "p_cont")
    explain.global_share(x, "gap+gmp")
    assert torch.equal(torch.rand(3), expected), "no weights are drawn"
    assert explain.global_share(torch.zeros(4, 6, 2), "gmp").abs().sum() == 0
    with pytest.raises(ValueError, match="non-negative"):
        explain.global_share(-x, "gap")
    with pytest.raises(ValueError, match="feature='gcp'"):
        explain.global_share(x, "gcp")
    with pytest.raises(ValueError, match="contrast='mean'"):
        explain.global_share(x, "p_cont", contrast="mean")
    with pytest.raises(ValueError, match="n=1 stripes"):
        explain.global_share(x, "p_cont", n=1)


# ----------------------------------------------------------------------------- the network's shapes, the backbone map


def test_architecture_shapes_are_those_of_a_real_forward_pass():
    """On the meta device (no arithmetic) the shapes equal those of a CPU forward pass of real weights."""
    cfg = RRIDConfig.table2(13, backbone="resnet18")          # Ours-F: three scales, relation module, GCP
    shapes = explain.architecture_shapes(cfg, (96, 32))
    model = RRID(cfg, num_classes=3).train()
    assert explain.architecture_shapes(cfg, (96, 32), model=model) == shapes and model.training, "its mode back"
    with torch.no_grad():
        f = model.eval().forward_features(torch.rand(1, 3, 96, 32))
        embedding = model(torch.rand(1, 3, 96, 32))
    assert shapes["image"] == (3, 96, 32) and shapes["x"] == tuple(f["x"].shape[1:]) == (512, 6, 2)
    assert shapes["embedding"] == tuple(embedding.shape[1:]) == (cfg.feature_dim,)
    c = cfg.reduced_dim
    for n in cfg.scales:
        s = f"P{n}"
        for key, value in f[s].items():
            assert shapes[f"{s}/{key}"] == tuple(value.shape[1:]), (s, key)
        assert shapes[f"{s}/r"] == (512,) and shapes[f"{s}/R_p_in"] == (2 * c,) and shapes[f"{s}/R_p_out"] == (c,)
        assert shapes[f"{s}/gcp_in"] == (n, 512) and shapes[f"{s}/R_g_in"] == (2 * c,) and shapes[f"{s}/R_g_out"] == (c,)
        # stripe_pool's rows on a 6-row map: floor(i h/n) .. ceil((i+1) h/n) - 1
        assert shapes[f"{s}/stripes"] == tuple(-(-(i + 1) * 6 // n) - (i * 6) // n for i in range(n))
    assert explain.architecture_shapes(8)["x"] == (2048, 24, 8)     # row 8, ResNet-50 at the paper's 384 x 128


def test_backbone_marks_find_the_peak_and_the_gmp_cell():
    # 6 x 2 map, 6 stripes of one row. Row 0: cell (0, 0) has the larger channel sum (1 + 1 + 1 + 5 = 8 > 6)
    # but cell (0, 1) holds the maxima of three of the four channels. Rows 1..5: one channel, alternating columns.
    class Backbone(torch.nn.Module):
        def forward(self, x):
            fmap = torch.zeros(len(x), 4, 6, 2)
            fmap[:, :, 0, 0] = torch.tensor([1.0, 1.0, 1.0, 5.0])
            fmap[:, :, 0, 1] = torch.tensor([2.0, 2.0, 2.0, 0.0])
            fmap[:, 0, torch.arange(1, 6), torch.tensor([1, 0, 1, 0, 1])] = 1.0
            return fmap

    model = torch.nn.Module()
    model.backbone = Backbone()
    model.train()
    marks = explain.backbone_marks(model, torch.rand(3, 12, 4), 6)
    assert model.training, "the model gets its mode back"
    assert marks.rows == [(i, i + 1) for i in range(6)]
    assert marks.peaks == [(0, 0), (1, 1), (2, 0), (3, 1), (4, 0), (5, 1)]
    assert marks.gmp_cells == [(0, 1), (1, 1), (2, 0), (3, 1), (4, 0), (5, 1)]
    assert marks.shares == [0.75, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert marks.activation[0].tolist() == [8.0, 6.0] and marks.x.dtype == torch.float64
