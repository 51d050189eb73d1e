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
