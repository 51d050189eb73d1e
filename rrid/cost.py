"""What a head costs: parameters, multiply-accumulates and feature size, from formulas.

Every layer of RRID's heads is a ``Reduction`` (Conv1x1 + BN + ReLU) on a 1 x 1 map. From
a channels to b channels it holds

    params(a -> b) = a b + b  (conv weight, bias)  + 2 b  (BN weight, bias)
    MACs(a -> b)   = a b      (one image; BN, ReLU, pooling, r_i's averaging and the skip
                              additions are not multiply-accumulates of a layer and not counted)

so, for n stripes, C backbone channels and reduced width c (the paper: C = 2048, c = 256):

    relation module (Eq. 1)     n [2 (C -> c) + (2c -> c)]   MACs n (2Cc + 2c²)    features n c
    rest-only (Fig. 6)          n [2 (C -> c) + (c -> c)]    MACs n (2Cc + c²)     features n c
    no relation (q_i = p̄_i)     n (C -> c)                   MACs n C c            features n c
    all pairs (the book's own)  n (C -> c) + (n choose 2)(2c -> c)
                                                            MACs n C c + (n choose 2) 2c²
                                                            features (n choose 2) c

The paper only says that relating all pairs of parts "requires a large computational cost and
increases the dimension of features drastically"; it defines no such module. The all-pairs
design here (:class:`AllPairsRelation`) is the book's: the RRID way of writing a relation
network (Santoro et al. 2017) with nothing shared, q_ij = R_ij(T(p̄_i, p̄_j)) for every pair
i < j, all q_ij kept in the representation.

:func:`measure` counts the same three numbers on a real module (``count_parameters``, torch's
``FlopCounterMode`` for the MACs, the output size), independently of the formulas.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from rrid.model import BACKBONES, Reduction, RRIDConfig, count_parameters

__all__ = ["Cost", "DESIGNS", "reduction_cost", "relation_cost", "head_cost", "AllPairsRelation", "measure"]

DESIGNS = ("one_vs_rest", "rest_only", "none", "all_pairs")


class Cost(NamedTuple):
    """Learnable parameters, multiply-accumulates for one image, numbers in the output features."""

    params: int
    macs: int
    feature_dim: int


def reduction_cost(a: int, b: int) -> Cost:
    """One Reduction a -> b (Conv1x1 with bias + BN + ReLU) on a 1 x 1 map."""
    return Cost(a * b + b + 2 * b, a * b, b)


def relation_cost(n: int, C: int, c: int, design: str = "one_vs_rest") -> Cost:
    """The local features of one scale P_n: ``design`` "one_vs_rest" (Eq. 1, RelationModule),
    "rest_only" (RestOnlyRelation), "none" (PartReduction, q_i = p̄_i) or "all_pairs"
    (AllPairsRelation, the book's design). Formulas in the module docstring."""
    if design not in DESIGNS:
        raise ValueError(f"relation_cost: design={design!r}: expected one of {list(DESIGNS)}")
    if not (isinstance(n, int) and n >= 2):
        raise ValueError(f"relation_cost: n={n!r}: expected a number of stripes >= 2")
    part = reduction_cost(C, c)
    if design == "none":
        return Cost(n * part.params, n * part.macs, n * c)
    if design == "all_pairs":
        pairs, R = n * (n - 1) // 2, reduction_cost(2 * c, c)
        return Cost(n * part.params + pairs * R.params, n * part.macs + pairs * R.macs, pairs * c)
    R = reduction_cost(2 * c if design == "one_vs_rest" else c, c)
    return Cost(n * (2 * part.params + R.params), n * (2 * part.macs + R.macs), n * c)


def head_cost(config: RRIDConfig, n: int, in_channels: int | None = None, num_classes: int | None = None) -> Cost:
    """One ``ScaleHead`` P_n of ``config`` (C = ``in_channels``, by default the backbone's).

    Local features as :func:`relation_cost`; q_0 adds (C -> c) for GMP / GAP / GAP+GMP and
    2 (C -> c) + (2c -> c) for GCP (Eq. 2). ``params`` counts the classifiers Linear(c, K) too
    when ``num_classes`` = K is given (one per classifier name of the head); ``macs`` is the
    eval-mode forward, which runs no classifier; ``feature_dim`` = n c + c (q_1..q_n, q_0).
    """
    C, c = in_channels or BACKBONES[config.backbone], config.reduced_dim
    params = macs = 0
    if config.local_pool:
        design = {True: "one_vs_rest", "rest_only": "rest_only", False: "none"}[config.relation]
        local = relation_cost(n, C, c, design)
        params, macs = params + local.params, macs + local.macs
    if config.global_pool:
        layers = [(C, c), (C, c), (2 * c, c)] if config.global_pool == "gcp" else [(C, c)]
        params += sum(reduction_cost(a, b).params for a, b in layers)
        macs += sum(reduction_cost(a, b).macs for a, b in layers)
    if num_classes:
        count = (n if config.local_pool else 0) + (1 if config.global_pool else 0)
        if config.classifiers == "official":
            count += 2 * n * bool(config.relation) + 2 * (config.global_pool == "gcp")
        params += count * (c * num_classes + num_classes)
    return Cost(params, macs, (n * c if config.local_pool else 0) + (c if config.global_pool else 0))


class AllPairsRelation(nn.Module):
    """The book's all-pairs alternative (not in the paper): q_ij = R_ij(T(p̄_i, p̄_j)), i < j.

    p̄_i is a C -> c Reduction of p_i (one per stripe, as in RRID), R_ij a 2c -> c Reduction per
    pair (nothing shared); p: (N, n, C) -> (N, n(n-1)/2, c), pairs in the order (1,2), (1,3), ...
    """

    def __init__(self, n: int, in_channels: int, reduced_dim: int):
        super().__init__()
        self.pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        self.p_layers = nn.ModuleList(Reduction(in_channels, reduced_dim) for _ in range(n))
        self.R = nn.ModuleList(Reduction(2 * reduced_dim, reduced_dim) for _ in self.pairs)

    def forward(self, p: Tensor) -> Tensor:
        p_bar = [layer(p[:, i]) for i, layer in enumerate(self.p_layers)]
        return torch.stack([R(torch.cat([p_bar[i], p_bar[j]], dim=1)) for R, (i, j) in zip(self.R, self.pairs)], dim=1)


def measure(module: nn.Module, *inputs: Tensor) -> Cost:
    """Count on the real module, for one image: ``count_parameters``, MACs = FLOPs / 2 of the
    eval-mode forward by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix
    products), and the numbers in its output per image (the first tensor of a tuple output;
    for a ``ScaleHead``, its q_1..q_n and q_0)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = module(*inputs)
    finally:
        module.train(was_training)
    batch = inputs[0].shape[0]
    if isinstance(out, tuple) and isinstance(out[0], dict):  # ScaleHead: (features, logits)
        out = [out[0][k] for k in ("q", "q0") if k in out[0]]
    elif isinstance(out, tuple):
        out = [out[0]]
    else:
        out = [out]
    return Cost(count_parameters(module), counter.get_total_flops() // (2 * batch), sum(t[0].numel() for t in out))
