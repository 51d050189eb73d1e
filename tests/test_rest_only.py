"""The rest-only variant, RRIDConfig(relation="rest_only"): q_i = p̄_i + R_p(r̄_i) (the paper's Fig. 6 model)."""

from pathlib import Path

import pytest
import torch

from rrid.config import ConfigError, apply_overrides, load_config, save_config
from rrid.losses import RRIDLoss
from rrid.model import RRID, RelationModule, RestOnlyRelation, RRIDConfig, ScaleHead, count_parameters

from test_model import float64, images, randomise_bn, reduce_by_hand, relation_by_hand  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.usefixtures("float64")  # the equation in float64: the default tolerance sees only a wrong formula
def test_rest_only_module_is_the_fig6_equation():
    c = 3
    module, p, (q, p_bar, r_bar), rests = relation_by_hand(RestOnlyRelation, 5, 8, c, batch=4)
    for i, r_i in enumerate(rests):
        pb, rb = reduce_by_hand(module.p_layers[i], p[:, i]), reduce_by_hand(module.r_layers[i], r_i)
        torch.testing.assert_close(p_bar[:, i], pb)
        torch.testing.assert_close(r_bar[:, i], rb)
        torch.testing.assert_close(q[:, i], pb + reduce_by_hand(module.R_p[i], rb))  # q_i = p̄_i + R_p(r̄_i)
        assert module.R_p[i].conv.weight.shape == (c, c, 1, 1)  # R_p: c -> c (Eq. 1's is 2c -> c)


def test_rest_only_residual_does_not_see_its_own_stripe():
    # R_p(r̄_i) depends on p only through r_i = mean_{j != i} p_j: its gradient w.r.t. p_i is 0,
    # while Eq. (1)'s R_p(T(p̄_i, r̄_i)) does depend on p_i.
    n, C, c = 4, 6, 5
    for cls, own_stripe_matters in ((RestOnlyRelation, False), (RelationModule, True)):
        module = randomise_bn(cls(n, C, c), seed=1)
        with torch.no_grad():
            for R in module.R_p:
                R.bn.bias += 3.0  # keep every ReLU of R_p open so gradients are not zero by chance
        p = torch.randn(2, n, C, dtype=torch.float64, requires_grad=True)
        module.double()
        q, p_bar, _ = module(p)
        residual = q[:, 1] - p_bar[:, 1]
        (grad,) = torch.autograd.grad(residual.square().sum(), p)
        assert bool(grad[:, 1].abs().max() > 0) == own_stripe_matters
        assert grad[:, [0, 2, 3]].abs().max() > 0


def test_rest_only_model_parameters_classifiers_and_feature_dim():
    K, C, c = 7, 512, 256
    cfg = RRIDConfig.table2(5, backbone="resnet18", relation="rest_only")
    assert (cfg.scales, cfg.global_pool, cfg.local_pool, cfg.feature_dim) == ((6,), "gmp", "gmp", 1792)
    torch.manual_seed(0)
    model = RRID(cfg, num_classes=K)
    assert isinstance(model.heads["P6"].local, RestOnlyRelation)
    names = [f"P6/q{i}" for i in range(1, 7)] + ["P6/q0"]
    assert model.block_names == names
    assert model.classifier_names == names + [f"P6/p_bar{i}" for i in range(1, 7)] + [f"P6/r_bar{i}" for i in range(1, 7)]

    conv_bn = lambda cin: cin * c + c + 2 * c  # Conv1x1(cin -> c) weight + bias, BN weight + bias
    by_hand = 6 * (conv_bn(C) + conv_bn(C) + conv_bn(c)) + conv_bn(C) + 19 * (c * K + K)  # + GMP q_0, 19 fc
    assert count_parameters(model.heads) == by_hand == 2_145_925
    full = RRID(RRIDConfig.table2(5, backbone="resnet18"), num_classes=K)
    assert count_parameters(full.heads) - count_parameters(model.heads) == 6 * c * c  # R_p: 2c -> c vs c -> c

    out = model(images())  # train mode
    assert len(out.embeddings) == 7 and len(out.logits) == 19
    loss, _ = RRIDLoss()(out, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(images(2)).shape == (2, 1792)


@pytest.mark.parametrize("value", ["rest-only", "rest", 1, 0, None])
def test_bad_relation_values_name_the_field(value):
    with pytest.raises(ValueError, match=r"RRIDConfig\.relation=.*expected True, False or 'rest_only'"):
        RRIDConfig(relation=value)


def test_rest_only_needs_local_features():
    with pytest.raises(ValueError, match="relation='rest_only' needs local features"):
        RRIDConfig(local_pool=None, relation="rest_only")
    head = ScaleHead(3, 8, RRIDConfig(backbone="resnet18", scales=(3,), relation="rest_only"), num_classes=2)
    assert isinstance(head.local, RestOnlyRelation)


def test_rest_only_from_yaml_and_overrides(tmp_path):
    for folder in ("quick", "market1501"):
        cfg = load_config(ROOT / "configs" / folder / "rest_only.yaml")
        row5 = load_config(ROOT / "configs" / folder / "row05_gmp_relation.yaml") if folder == "market1501" else \
            load_config(ROOT / "configs" / folder / "row05.yaml")
        assert cfg.model.relation == "rest_only"
        assert cfg.model == RRIDConfig(**{**row5.model.__dict__, "relation": "rest_only"})
        assert load_config(save_config(cfg, tmp_path / folder / "config.yaml")).model == cfg.model
    row5 = load_config(ROOT / "configs" / "quick" / "row05.yaml")
    assert load_config(ROOT / "configs" / "quick" / "row05.yaml", ["model.relation=rest_only"]).model == cfg.model.__class__(
        **{**row5.model.__dict__, "relation": "rest_only"})
    assert apply_overrides(row5, ["model.relation=rest_only"]).model.relation == "rest_only"
    assert apply_overrides(row5, ["model.relation=false"]).model.relation is False
    with pytest.raises(ConfigError, match="model.relation: expected bool or 'rest_only', got 'rest-only'"):
        apply_overrides(row5, ["model.relation=rest-only"])


def test_quick_model_config_by_name():
    import rrid.book

    assert rrid.book.quick_config_path("rest_only") == ROOT / "configs" / "quick" / "rest_only.yaml"
    assert rrid.book.quick_config_path(5).name == "row05.yaml"  # the cache tag of a row stays "row05"
    with pytest.raises(FileNotFoundError, match="no quick config named 'rest-only'"):
        rrid.book.quick_config_path("rest-only")
