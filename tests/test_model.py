"""The RRID model against the paper's equations, Table 2 and official-code-notes.md."""

import copy
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

from rrid.losses import RRIDLoss
from rrid.model import (
    TABLE2,
    GlobalContrastivePooling,
    GlobalPooling,
    RelationModule,
    Reduction,
    RRID,
    RRIDConfig,
    RRIDOutput,
    ScaleHead,
    StripePooling,
    count_parameters,
    param_groups,
    resnet_backbone,
    stripe_bounds,
    stripe_pool,
)
from numerics import RESNET18_RRID, float32_tolerance, max_abs_diff

pytestmark = pytest.mark.usefixtures("one_thread")

H, W = 96, 32  # quick-mode input: a 6 x 2 map with resnet18 and last stride 1
LABELS = torch.tensor([0, 0, 1, 1])  # 2 identities x 2 images


@pytest.fixture
def float64():
    """Equations are checked in float64: rounding is ~1e-16 relative there, so the default
    float64 tolerance of assert_close (rtol = atol = 1e-7) is exceeded only by a wrong formula,
    never by the order in which a CPU's kernels happen to add (float32 would leave ~1e-6)."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(saved)


def images(n=4, seed=0, h=H, w=W):
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def reduce_by_hand(layer: Reduction, x):
    """ReLU(BN(Conv1x1(x))) in eval mode, written with torch.nn.functional on the layer's weights."""
    conv, bn = layer.conv, layer.bn
    y = x @ conv.weight[:, :, 0, 0].T + conv.bias
    y = (y - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    return F.relu(y)


def relation_by_hand(module_class, n, C, c, batch):
    """A relation module with random BN statistics, a random p (batch, n, C), its outputs (q, p̄, r̄)
    and the rest features r_i = mean of the other stripes, computed here stripe by stripe."""
    module = randomise_bn(module_class(n, C, c))
    p = torch.randn(batch, n, C)
    rests = [torch.stack([p[:, j] for j in range(n) if j != i]).mean(0) for i in range(n)]
    return module, p, module(p), rests


def randomise_bn(module, seed=0):
    """Give every BN non-trivial statistics and affine parameters (eval mode then uses them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return module.eval()


# ----------------------------------------------------------------------------- Table 2


@pytest.mark.parametrize("row", range(1, 14))
def test_every_table2_row_trains_and_gives_its_feature_dim(row):
    torch.manual_seed(row)
    cfg = RRIDConfig.table2(row, backbone="resnet18")
    assert cfg.feature_dim == TABLE2[row - 1].feature_dim  # c = 256 whatever the backbone
    model = RRID(cfg, num_classes=3)
    out = model(images())
    assert isinstance(out, RRIDOutput)
    assert len(out.embeddings) == len(model.block_names)
    assert all(e.shape == (4, 256) for e in out.embeddings)
    assert all(lg.shape == (4, 3) for lg in out.logits) and len(out.logits) == len(model.classifier_names)
    loss, _ = RRIDLoss()(out, LABELS)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    zero = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0]
    assert not missing and not zero, (missing, zero)

    model.eval()
    with torch.no_grad():
        emb = model(images(2))
    assert emb.shape == (2, TABLE2[row - 1].feature_dim)


def test_table2_rows_and_presets():
    assert RRIDConfig.preset("ours-s") == RRIDConfig.table2(8) and TABLE2[7].name == "Ours-S"
    assert RRIDConfig.preset("ours-f") == RRIDConfig.table2(13) == RRIDConfig() and TABLE2[12].name == "Ours-F"
    assert [t.row for t in TABLE2] == list(range(1, 14))
    ours_f = TABLE2[12]
    assert (ours_f.market_map, ours_f.market_rank1, ours_f.duke_map, ours_f.duke_rank1) == (88.9, 95.2, 78.6, 89.7)
    assert (TABLE2[0].cuhk03_labeled_map, TABLE2[0].cuhk03_detected_rank1) == (57.0, 58.4)
    assert RRIDConfig.table2(2).global_pool is None and RRIDConfig.table2(1).local_pool is None
    assert RRIDConfig.table2(7).global_pool == "gap+gmp" and RRIDConfig.table2(12).relation is False
    with pytest.raises(ValueError, match="1..13"):
        RRIDConfig.table2(14)
    with pytest.raises(ValueError, match="ours-s"):
        RRIDConfig.preset("ours-x")


@pytest.mark.parametrize(
    "field, value",
    [("backbone", "vgg16"), ("last_stride", 3), ("global_pool", "avg"), ("local_pool", "gcp"),
     ("contrast", "mean"), ("classifiers", "all"), ("scales", (6, 1)), ("scales", (6, 6)), ("reduced_dim", 0),
     ("head_init", "xavier")],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"RRIDConfig\.{field}"):
        RRIDConfig(**{field: value})


def test_config_rejects_impossible_combinations_and_accepts_lists():
    with pytest.raises(ValueError, match="relation"):
        RRIDConfig(local_pool=None, relation=True)
    with pytest.raises(ValueError, match="both None"):
        RRIDConfig(local_pool=None, global_pool=None, relation=False)
    assert RRIDConfig(scales=[6, 2]).scales == (6, 2)
    assert RRIDConfig(scales=[6, 2]).feature_dim == 256 * (8 + 2)


# ----------------------------------------------------------------------------- backbone


@pytest.fixture(scope="module")
def resnet50_ours_f():
    torch.manual_seed(0)
    return RRID(RRIDConfig.preset("ours-f"), num_classes=751).eval()


def test_resnet50_map_is_24x8_and_feature_is_3840(resnet50_ours_f):
    model = resnet50_ours_f
    assert model.config.feature_dim == 3840
    with torch.no_grad():
        f = model.forward_features(images(1, h=384, w=128))
        emb = model(images(1, h=384, w=128))
    assert f["x"].shape == (1, 2048, 24, 8)
    assert emb.shape == (1, 3840)
    # the eval embedding is T(q of P6, P4, P2, then q0 of P6, P4, P2)
    scales = ("P6", "P4", "P2")
    expected = torch.cat([f[s]["q"].flatten(1) for s in scales] + [f[s]["q0"] for s in scales], dim=1)
    # forward() concatenates the very tensors forward_features() returns (same kernels, same input,
    # one thread): equal bit for bit, so the default tolerance has nothing to absorb
    torch.testing.assert_close(emb, expected)
    layer4 = model.backbone.layer4[0]
    assert layer4.conv2.stride == (1, 1) and layer4.downsample[0].stride == (1, 1)
    assert not hasattr(model.backbone, "fc") and not hasattr(model.backbone, "avgpool")


def test_backbone_keys_are_torchvisions_and_last_stride():
    bb = resnet_backbone("resnet18", last_stride=1)
    tv = torchvision.models.resnet18()
    assert set(bb.state_dict()) == set(tv.state_dict()) - {"fc.weight", "fc.bias"}
    assert bb(images(1)).shape == (1, 512, 6, 2)
    assert resnet_backbone("resnet18", last_stride=2)(images(1)).shape == (1, 512, 3, 1)
    assert resnet_backbone("resnet34").layer4[0].conv1.stride == (1, 1)


def test_pretrained_download_failure_says_where_the_cache_is(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))      # an empty cache
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError, match="ImageNet weights") as err:
        resnet_backbone("resnet18", pretrained=True)
    assert torch.hub.get_dir() in str(err.value) and "resnet18-" in str(err.value)
    assert "verified" in str(err.value)
    assert not (tmp_path / "hub" / "checkpoints").exists() or not any((tmp_path / "hub" / "checkpoints").iterdir())


# ----------------------------------------------------------------------------- parts


@pytest.mark.parametrize("mode, reduce", [("gmp", torch.amax), ("gap", torch.mean)])
@pytest.mark.usefixtures("float64")
def test_stripes_are_exact_slices_when_n_divides_h(mode, reduce):
    x = torch.randn(2, 5, 12, 3)
    for n in (2, 4, 6):
        p = StripePooling(n, mode)(x)
        h = 12 // n
        by_hand = torch.stack([reduce(x[:, :, i * h:(i + 1) * h], dim=(2, 3)) for i in range(n)], dim=1)
        assert p.shape == (2, n, 5)
        torch.testing.assert_close(p, by_hand)


def test_official_slicing_drops_the_bottom_rows():
    """slicing="official": int(H/n) rows per stripe from the top, as the authors' code; at H = 6
    (96 x 32 inputs) P4's stripes are rows 0, 1, 2, 3 and rows 4, 5 are in none. Where n divides
    H it is the default slicing. Exact: each channel is one row's indicator."""
    H = 6
    x = torch.eye(H).reshape(1, H, H, 1)                  # channel h is 1 on row h only
    rows = stripe_pool(x, 4, "gmp", slicing="official")[0]  # (n, H): 1 where stripe i holds row h
    assert rows.tolist() == torch.eye(4, 6).tolist()
    assert stripe_bounds(6, 4) == [(0, 2), (1, 3), (3, 5), (4, 6)]       # adaptive: every row, two shared
    for H, n in ((24, 2), (24, 4), (24, 6), (6, 2), (6, 6)):
        assert stripe_bounds(H, n, "official") == stripe_bounds(H, n) == [(i * H // n, (i + 1) * H // n) for i in range(n)]
    with pytest.raises(ValueError, match="slicing='authors'"):
        stripe_bounds(6, 4, "authors")


@pytest.mark.usefixtures("float64")
def test_other_heights_use_adaptive_pooling():
    x = torch.randn(2, 5, 7, 3)  # 7 rows into 6 / 4 stripes
    for n in (4, 6):
        torch.testing.assert_close(stripe_pool(x, n, "gmp"), F.adaptive_max_pool2d(x, (n, 1))[..., 0].transpose(1, 2))
        torch.testing.assert_close(stripe_pool(x, n, "gap"), F.adaptive_avg_pool2d(x, (n, 1))[..., 0].transpose(1, 2))
    model = RRID(RRIDConfig.preset("ours-f", backbone="resnet18"), num_classes=3).eval()
    assert model(images(2, h=80)).shape == (2, 3840)  # a 5 x 2 map


@pytest.mark.usefixtures("float64")
def test_relation_module_is_eq1():
    n = 4
    module, p, (q, p_bar, r_bar), rests = relation_by_hand(RelationModule, n, 8, 3, batch=5)
    for i, r_i in enumerate(rests):                     # r_i: the mean of the other stripes
        torch.testing.assert_close(RelationModule.rest(p)[:, i], r_i)
        pb, rb = reduce_by_hand(module.p_layers[i], p[:, i]), reduce_by_hand(module.r_layers[i], r_i)
        q_i = pb + reduce_by_hand(module.R_p[i], torch.cat([pb, rb], 1))  # q_i = p̄_i + R_p(T(p̄_i, r̄_i))
        torch.testing.assert_close(p_bar[:, i], pb)
        torch.testing.assert_close(r_bar[:, i], rb)
        torch.testing.assert_close(q[:, i], q_i)


@pytest.mark.usefixtures("float64")
def test_relation_weights_are_not_shared():
    n, C, c = 6, 8, 3
    module = randomise_bn(RelationModule(n, C, c))
    params = list(module.parameters())
    assert len({p.data_ptr() for p in params}) == len(params) == 3 * n * 4  # conv w, b, BN w, b
    p = torch.randn(2, n, C)
    q_before = module(p)[0]
    with torch.no_grad():
        module.R_p[2].bn.bias += 10.0  # lifts every channel above the ReLU
    q_after = module(p)[0]
    changed = [(q_after[:, i] - q_before[:, i]).abs().max().item() > 0 for i in range(n)]
    assert changed == [i == 2 for i in range(n)]


@pytest.mark.parametrize("contrast", ["official", "paper"])
@pytest.mark.usefixtures("float64")
def test_gcp_is_eq2(contrast):
    n, C, c = 6, 8, 3
    module = randomise_bn(GlobalContrastivePooling(C, c, contrast))
    x = torch.randn(5, C, 12, 4)
    p = stripe_pool(x, n, "gmp")
    p_max = x.amax(dim=(2, 3))  # GMP over the whole map = max over the stripes
    if contrast == "official":
        p_cont = (p.sum(1) - p_max) / (n - 1)
    else:
        p_cont = p.mean(1) - p_max
    pbm, pbc = reduce_by_hand(module.max_layer, p_max), reduce_by_hand(module.cont_layer, p_cont)
    q0, p_bar_max, p_bar_cont = module(p)
    torch.testing.assert_close(module.contrastive(p), (p_max, p_cont))
    torch.testing.assert_close(p_bar_max, pbm)
    torch.testing.assert_close(p_bar_cont, pbc)
    torch.testing.assert_close(q0, pbm + reduce_by_hand(module.R_g, torch.cat([pbm, pbc], 1)))


@pytest.mark.parametrize("mode", ["gmp", "gap", "gap+gmp"])
@pytest.mark.usefixtures("float64")
def test_other_global_pools(mode):
    module = randomise_bn(GlobalPooling(mode, 8, 3))
    x = torch.randn(5, 8, 6, 2)
    pooled = {"gmp": x.amax((2, 3)), "gap": x.mean((2, 3)), "gap+gmp": x.amax((2, 3)) + x.mean((2, 3))}[mode]
    torch.testing.assert_close(module.pool(x), pooled)
    torch.testing.assert_close(module(x), reduce_by_hand(module.layer, pooled))


@pytest.mark.usefixtures("float64")
def test_gcp_uses_gmp_stripes_even_with_gap_local_features():
    cfg = RRIDConfig(backbone="resnet18", scales=(4,), local_pool="gap", relation=False, global_pool="gcp")
    head = randomise_bn(ScaleHead(4, 8, cfg, num_classes=3))
    x = torch.randn(2, 8, 8, 2)
    f = head.features(x)
    torch.testing.assert_close(f["p"], stripe_pool(x, 4, "gap"))
    torch.testing.assert_close(f["p_max"], x.amax((2, 3)))
    torch.testing.assert_close(f["p_cont"], (stripe_pool(x, 4, "gmp").sum(1) - x.amax((2, 3))) / 3)


# ----------------------------------------------------------------------------- counts


def head_parameters_by_hand(C, c, K, scales, classifiers):
    conv_bn = lambda cin: cin * c + c + 2 * c  # Conv1x1(cin -> c) weight + bias, BN weight + bias
    per_stripe = conv_bn(C) + conv_bn(C) + conv_bn(2 * c)  # p-layer, r-layer, R_p
    gcp = conv_bn(C) + conv_bn(C) + conv_bn(2 * c)  # p_max-layer, p_cont-layer, R_g
    fc = c * K + K  # Linear(c, K) with bias
    return sum(n * per_stripe + gcp for n in scales) + classifiers * fc


@pytest.mark.parametrize("classifiers, count_f, count_s", [("official", 45, 21), ("paper", 15, 7)])
def test_classifier_counts(classifiers, count_f, count_s):
    for preset, count in (("ours-f", count_f), ("ours-s", count_s)):
        model = RRID(RRIDConfig.preset(preset, backbone="resnet18", classifiers=classifiers), num_classes=3)
        assert len(model.classifier_names) == count
        assert sum(len(h.classifiers) for h in model.heads.values()) == count
        assert model.classifier_names[: len(model.block_names)] == model.block_names


def test_head_parameter_counts_match_official_code_notes(resnet50_ours_f):
    # Ours-F, C = 2048, c = 256, K = 751: 12 stripes x (2 C->c + R_p) + 3 x GCP + 45 classifiers
    heads = sum(count_parameters(h) for h in resnet50_ours_f.heads.values())
    assert heads == head_parameters_by_hand(2048, 256, 751, (6, 4, 2), classifiers=45) == 26_414_595
    # Ours-S (resnet18 backbone, so C = 512): 6 stripes + 1 GCP + 21 classifiers
    ours_s = RRID(RRIDConfig.preset("ours-s", backbone="resnet18"), num_classes=10)
    heads = sum(count_parameters(h) for h in ours_s.heads.values())
    assert heads == head_parameters_by_hand(512, 256, 10, (6,), classifiers=21)


def test_classifier_init_and_block_names():
    torch.manual_seed(0)
    model = RRID(RRIDConfig.preset("ours-f", backbone="resnet18"), num_classes=100)
    fcs = [fc for h in model.heads.values() for fc in h.classifiers.values()]
    weights = torch.cat([fc.weight.flatten() for fc in fcs])
    # 45 x 100 x 256 = 1.15 M draws of N(0, 0.001²): the sample std and mean scatter by
    # 0.001 / sqrt(2 x 1.15e6) = 6.6e-7 and 0.001 / sqrt(1.15e6) = 9.3e-7, so 2e-5 is over 20 of
    # those (and the seed is fixed), while a std of 0.01 or a Kaiming init misses by 1e-2
    assert abs(weights.std().item() - 0.001) < 0.00002 and abs(weights.mean().item()) < 0.00002
    assert all(fc.bias.abs().sum() == 0 for fc in fcs)
    assert model.block_names == [f"P6/q{i}" for i in range(1, 7)] + [f"P4/q{i}" for i in range(1, 5)] + [
        "P2/q1", "P2/q2", "P6/q0", "P4/q0", "P2/q0"]
    assert list(model.heads) == ["P6", "P4", "P2"]  # whatever the order of config.scales


def _uniform_sample_checks(x, low, high):
    """x (1-D float64) drawn from U(low, high)? Bounds, a KS test and the first two moments with
    5-standard-error tolerances for n = len(x) (mean: sd/sqrt(n); variance: the standard error
    of a sample variance of the uniform, sqrt((mu4 - sigma^4)/n) with mu4 = (high-low)^4/80).
    The draws are seeded, so the test is deterministic; p > 1e-3 would fail 0.1 % of seeds."""
    from scipy import stats

    n, width = len(x), high - low
    var = width ** 2 / 12
    assert low <= x.min() and x.max() <= high
    assert stats.kstest(x, "uniform", args=(low, width)).pvalue > 1e-3
    assert abs(x.mean() - (low + high) / 2) < 5 * var ** 0.5 / n ** 0.5
    assert abs(x.var() - var) < 5 * ((width ** 4 / 80 - var ** 2) / n) ** 0.5


def test_head_init_official_is_pytorch_041s_defaults():
    """Conv weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), BN weight ~ U(0, 1), bias 0."""
    torch.manual_seed(0)
    for fan_in in (2048, 512):                          # C -> c reductions and R_p / R_g (2c -> c)
        layer = Reduction(fan_in, 256)                  # the default: init="official"
        bound = fan_in ** -0.5
        _uniform_sample_checks(layer.conv.weight.detach().double().flatten().numpy(), -bound, bound)
        _uniform_sample_checks(layer.conv.bias.detach().double().numpy(), -bound, bound)
        _uniform_sample_checks(layer.bn.weight.detach().double().numpy(), 0.0, 1.0)
        assert torch.equal(layer.bn.bias, torch.zeros(256))
        assert torch.equal(layer.bn.running_mean, torch.zeros(256)) and torch.equal(layer.bn.running_var, torch.ones(256))


def test_head_init_kaiming_and_the_config_switch():
    from scipy import stats

    torch.manual_seed(0)
    cfg = RRIDConfig.preset("ours-s", backbone="resnet18")
    assert cfg.head_init == "official"
    official = RRID(cfg, num_classes=3)
    kaiming = RRID(RRIDConfig.preset("ours-s", backbone="resnet18", head_init="kaiming"), num_classes=3)
    layers = {name: [m for m in model.heads.modules() if isinstance(m, Reduction)]
              for name, model in (("official", official), ("kaiming", kaiming))}
    assert len(layers["official"]) == len(layers["kaiming"]) == 6 * 3 + 3      # every Reduction of the head
    for layer in layers["official"]:
        bound = layer.conv.in_channels ** -0.5
        assert layer.conv.weight.abs().max() <= bound and layer.conv.bias.abs().max() <= bound
        assert 0 <= layer.bn.weight.min() and layer.bn.weight.max() <= 1 and layer.bn.weight.std() > 0.2
    # Kaiming-normal (fan_out = 256 for a 1x1 conv): standardised weights of all layers ~ N(0, 1)
    z = torch.cat([layer.conv.weight.detach().double().flatten() / (2 / 256) ** 0.5 for layer in layers["kaiming"]])
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    assert abs(z.mean()) < 5 / len(z) ** 0.5 and abs(z.var() - 1) < 5 * (2 / len(z)) ** 0.5
    for layer in layers["kaiming"]:
        assert torch.equal(layer.conv.bias, torch.zeros(256)) and torch.equal(layer.bn.weight, torch.ones(256))
        assert torch.equal(layer.bn.bias, torch.zeros(256))
    # the backbone and the classifiers do not depend on head_init
    assert all(fc.weight.std() < 0.0011 for fc in kaiming.heads.P6.classifiers.values())
    with pytest.raises(ValueError, match="init='xavier'"):
        Reduction(8, 4, init="xavier")


@pytest.mark.usefixtures("float64")
def test_train_embeddings_are_the_eval_blocks():
    torch.manual_seed(0)
    model = RRID(RRIDConfig.preset("ours-f", backbone="resnet18"), num_classes=3)
    x = images()
    out = model(x)  # train mode: BN uses batch statistics, so the features are reproducible
    f = model.forward_features(x)
    for name, e in zip(model.block_names, out.embeddings):
        scale, q = name.split("/")
        torch.testing.assert_close(e, f[scale]["q0"] if q == "q0" else f[scale]["q"][:, int(q[1:]) - 1])
    for name, logits in zip(model.classifier_names, out.logits):
        scale, key = name.split("/")
        fc = model.heads[scale].classifiers[key]
        if key in f[scale]:  # q0, p_bar_max, p_bar_cont
            vector = f[scale][key]
        else:  # q3 -> q[:, 2], p_bar1 -> p_bar[:, 0], ...
            stem = key.rstrip("0123456789")
            vector = f[scale][stem][:, int(key[len(stem):]) - 1]
        torch.testing.assert_close(logits, fc(vector))


# ----------------------------------------------------------------------------- export


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
@pytest.mark.usefixtures("float64")
def test_jit_trace_and_torch_export_match_eager():
    torch.manual_seed(0)
    model = randomise_bn(RRID(RRIDConfig.preset("ours-f", backbone="resnet18"), num_classes=3))
    x, y = images(2, seed=1), images(2, seed=2)
    with torch.no_grad():
        eager = model(y)
        traced = torch.jit.trace(model, (x,))
        torch.testing.assert_close(traced(y), eager)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(y), eager)
    assert eager.shape == (2, 3840)


def wrong_stripes(x, n, mode="gmp"):
    """A plausible bug: stripe i = rows [iH/n, (i+1)H/n) rounded down at both ends, so P4 on a
    6-row map loses the rows that adaptive pooling shares between neighbouring stripes."""
    H = x.shape[2]
    stripes = [x[:, :, (i * H) // n: ((i + 1) * H) // n] for i in range(n)]
    pool = (lambda s: s.amax(dim=(2, 3))) if mode == "gmp" else (lambda s: s.mean(dim=(2, 3)))
    return torch.stack([pool(s) for s in stripes], dim=1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_export_matches_float64_eager(tmp_path, monkeypatch):
    """onnxruntime's float32 output is as close to the float64 model as PyTorch's own float32.

    The reference is the eager model in float64; both float32 results (onnxruntime, eager) must
    lie within ``float32_tolerance`` of it (tests/numerics.py: depth x log2(fan-in) x eps32 x
    max|output|). The bound does not depend on which kernels a CPU or an onnxruntime release
    picks, and the two bugs below show it still catches a real fault.
    """
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = randomise_bn(RRID(RRIDConfig.preset("ours-f", backbone="resnet18"), num_classes=3))
    x = images(2, seed=1)  # 6-row map: P4's stripes are adaptive bins that share a row
    torch.onnx.export(model, (x,), tmp_path / "rrid.onnx", dynamo=False, input_names=["images"])
    session = onnxruntime.InferenceSession(str(tmp_path / "rrid.onnx"), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"images": x.numpy()})
    model64 = copy.deepcopy(model).double()
    with torch.no_grad():
        eager32, reference = model(x), model64(x.double())
    tol = float32_tolerance(reference, **RESNET18_RRID)
    assert onnx_out.shape == tuple(reference.shape) == (2, 3840)
    assert max_abs_diff(eager32, reference) <= tol
    assert max_abs_diff(onnx_out, reference) <= tol

    # the check fires on real faults, by a wide margin: a missing ReLU in R_p of P6's first
    # stripe, and stripes with the wrong rows
    with torch.no_grad():
        no_relu = copy.deepcopy(model64)
        no_relu.heads["P6"].local.R_p[0].relu = torch.nn.Identity()
        assert max_abs_diff(no_relu(x.double()), reference) > 100 * tol
        monkeypatch.setattr("rrid.model.stripe_pool", wrong_stripes)
        assert max_abs_diff(model64(x.double()), reference) > 100 * tol


def test_param_groups_cover_every_parameter_once():
    model = RRID(RRIDConfig.preset("ours-s", backbone="resnet18"), num_classes=3)
    groups = param_groups(model, backbone_lr=1e-3, head_lr=1e-2)
    assert [(g["name"], g["lr"]) for g in groups] == [("backbone", 1e-3), ("head", 1e-2)]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.backbone.parameters()}
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-2]
