"""rrid.cost: the cost formulas against count_parameters and torch's FlopCounterMode on real modules."""

import math

import pytest
import torch

from rrid.model import TABLE2, PartReduction, RelationModule, RestOnlyRelation, RRID, RRIDConfig, ScaleHead, count_parameters
from rrid.cost import AllPairsRelation, Cost, head_cost, measure, reduction_cost, relation_cost

pytestmark = pytest.mark.usefixtures("one_thread")

MODULES = {"one_vs_rest": RelationModule, "rest_only": RestOnlyRelation, "none": PartReduction,
           "all_pairs": AllPairsRelation}


@pytest.mark.parametrize("design", list(MODULES))
@pytest.mark.parametrize("n", [2, 3, 6])
def test_relation_cost_is_what_the_module_has_and_does(design, n):
    C, c = 24, 5
    module = MODULES[design](n, C, c)
    assert relation_cost(n, C, c, design) == measure(module, torch.rand(3, n, C))


def test_relation_cost_formulas_at_the_papers_widths():
    C, c, n = 2048, 256, 6
    assert reduction_cost(C, c) == Cost(C * c + 3 * c, C * c, c)
    assert relation_cost(n, C, c) == Cost(n * (2 * (C * c + 3 * c) + 2 * c * c + 3 * c), n * (2 * C * c + 2 * c * c), n * c)
    assert relation_cost(n, C, c, "rest_only").macs == n * (2 * C * c + c * c)
    pairs = math.comb(n, 2)
    assert relation_cost(n, C, c, "all_pairs") == Cost(n * (C * c + 3 * c) + pairs * (2 * c * c + 3 * c),
                                                        n * C * c + pairs * 2 * c * c, pairs * c)
    assert relation_cost(n, C, c, "all_pairs").feature_dim == 3840 and relation_cost(n, C, c).feature_dim == 1536
    with pytest.raises(ValueError, match="design='pairs'"):
        relation_cost(n, C, c, "pairs")
    with pytest.raises(ValueError, match="n=1"):
        relation_cost(1, C, c)


# every Table 2 row, and every row with local features once more with the rest-only relation
VARIANTS = [(row, None) for row in range(1, 14)] + [(t.row, "rest_only") for t in TABLE2 if t.local_pool]


@pytest.mark.parametrize("row, relation", VARIANTS)
def test_head_cost_is_every_scale_head(row, relation):
    fields = {"relation": relation} if relation else {}
    cfg = RRIDConfig.table2(row, backbone="resnet18", reduced_dim=8, **fields)
    C, K = 12, 5
    for n in cfg.scales:
        head = ScaleHead(n, C, cfg, num_classes=K)
        assert head_cost(cfg, n, C, num_classes=K) == measure(head, torch.rand(2, C, 12, 2))
        assert head_cost(cfg, n, C).params == count_parameters(head) - sum(count_parameters(fc) for fc in head.classifiers.values())


def test_head_costs_add_up_to_the_model():
    cfg = RRIDConfig.preset("ours-f")  # C = 2048, c = 256, K = 751: the number tests/test_model.py pins
    costs = [head_cost(cfg, n, num_classes=751) for n in cfg.scales]
    assert sum(c.params for c in costs) == 26_414_595
    assert sum(c.feature_dim for c in costs) == cfg.feature_dim == 3840
    small = RRIDConfig.table2(5, backbone="resnet18", relation="rest_only")
    model = RRID(small, num_classes=4)
    assert head_cost(small, 6, num_classes=4).params == count_parameters(model.heads)


# ----------------------------------------------------------------------------- a training run

def conv_and_linear_flops(net, images) -> int:
    """FLOPs of a forward pass counted by hand with hooks: 2 x (output numbers x input channels per
    group x kernel area) per convolution, 2 x in x out per row of a linear layer."""
    total = []

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            k_h, k_w = module.kernel_size
            total.append(2 * output.numel() * module.in_channels // module.groups * k_h * k_w)
        elif isinstance(module, torch.nn.Linear):
            total.append(2 * output.numel() * module.in_features)

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        out = net(images)
    finally:
        for h in handles:
            h.remove()
    return sum(total), out


def test_train_step_flops_count_every_convolution_and_classifier_and_their_gradients():
    from rrid.config import load_config
    from rrid.cost import train_step_flops
    from rrid.paths import ROOT

    cfg = load_config(ROOT / "configs" / "quick" / "row13.yaml", ["data.p=2", "data.k=2"])
    step = train_step_flops(cfg, num_classes=7)
    with torch.device("meta"):
        model = RRID(cfg.model, 7).train()
        by_hand, _ = conv_and_linear_flops(model, torch.zeros(4, 3, cfg.data.height, cfg.data.width))
    assert step.batch == 4 and step.forward == by_hand
    # backward: the gradients of every layer's input and weights, each as costly as its forward,
    # except the input images' gradient, which nobody needs (the first convolution's)
    conv1 = 2 * (cfg.data.height // 2) * (cfg.data.width // 2) * 64 * 3 * 7 * 7 * step.batch
    assert step.backward == 2 * step.forward - conv1
    assert step.per_image == (step.forward + step.backward) / 4


def test_the_reference_resnet50_flops_are_torchvisions_forward():
    import torchvision

    from rrid.cost import resnet50_reference_flops

    with torch.device("meta"):
        by_hand, _ = conv_and_linear_flops(torchvision.models.resnet50(weights=None), torch.zeros(2, 3, 224, 224))
    assert resnet50_reference_flops(False) == by_hand / 2
    assert 8.1e9 < by_hand / 2 < 8.3e9                       # the 4.1 GMACs usually quoted for ResNet-50


def test_checkpoint_bytes_are_what_torch_save_writes(tmp_path):
    import io

    from rrid.config import load_config
    from rrid.cost import checkpoint_bytes
    from rrid.paths import ROOT
    from rrid.train import build_optimizer

    cfg = load_config(ROOT / "configs" / "quick" / "row08.yaml")
    size = checkpoint_bytes(cfg, num_classes=9)
    model = RRID(cfg.model, 9)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    sum(p.sum() for p in model.parameters()).backward()
    optimizer.step()                                          # SGD's momentum buffers now exist
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    assert size.weights == sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert size.last < len(buffer.getvalue()) < size.last + (1 << 20)   # the rest: names and a few numbers
    assert checkpoint_bytes(dataclass_replace(cfg, momentum=0.0), 9).momentum == 0


def dataclass_replace(cfg, **optim):
    import dataclasses

    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, **optim))


def test_training_estimate_is_images_over_the_rate_the_gpus_figures_give():
    from rrid.config import load_config
    from rrid.cost import GPUS, resnet50_reference_flops, train_step_flops, training_estimate, training_images, utilisation
    from rrid.paper import DATASETS, TRAINING
    from rrid.paths import ROOT

    cfg = load_config(ROOT / "configs" / "market1501" / "row13_ours_f.yaml")
    market = DATASETS["market1501"]
    images = training_images(cfg, market.train_images)
    assert images == TRAINING.epochs * (market.train_images // 16) * 64 == 64_640 * 64   # official epochs
    once = training_images(dataclass_replace_data(cfg, epoch_length="once"), market.train_images)
    assert once == TRAINING.epochs * (market.train_images // 64) * 64
    per_image = train_step_flops(cfg, 651).per_image
    for gpu in GPUS.values():
        share = utilisation(gpu)
        reference = resnet50_reference_flops(gpu.resnet50_training)
        assert share == gpu.resnet50_images_per_s * reference / (gpu.peak_tflops * 1e12) and 0 < share < 1
        e = training_estimate(cfg, 651, market.train_images, gpu)
        assert e.images == images and e.utilisation == share
        assert math.isclose(e.hours, images * per_image / (gpu.peak_tflops * 1e12 * share) / 3600, rel_tol=1e-12)
    assert GPUS["T4"].dtype == "fp16" and GPUS["A100"].dtype == "bf16"   # rrid.runtime.amp_dtype on each


def dataclass_replace_data(cfg, **data):
    import dataclasses

    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **data))
