"""The RRID model: a relation network for part-based person re-identification.

Park & Ham, "Relation Network for Person Re-identification", AAAI 2020. Where the paper
and the authors' released code differ, the code is the default (the book's chapter
"Paper vs. the authors' code", ``book/11_paper_vs_code.ipynb``, lists each difference) and the
paper's variant is an option.

For every scale P_n (n horizontal stripes; n = 6, 4, 2 for Ours-F, n = 6 for Ours-S):

    feature map      x   = ResNet(image)                    (C x H x W, last stride 1)
    part features    p_i = GMP(stripe i of x),  i = 1..n    (C each)
    rest features    r_i = 1/(n-1) sum_{j != i} p_j
    local (Eq. 1)    q_i = p̄_i + R_p(T(p̄_i, r̄_i))
                     (or q_i = p̄_i + R_p(r̄_i): the paper's rest-only control of Fig. 6)
    global (Eq. 2)   q_0 = p̄_max + R_g(T(p̄_max, p̄_cont)),  p_max = max_i p_i,
                     p_cont = (sum_i p_i - p_max)/(n-1)  (code)  or  p_avg - p_max  (paper)

where x̄ is a Conv1x1(C -> c) + BN + ReLU reduction of x (c = 256), T is concatenation, and
R_p, R_g are Conv1x1(2c -> c) + BN + ReLU. No layer is shared between stripes or scales.
The person representation is T(q_1..q_6 of P6, q_1..q_4 of P4, q_1..q_2 of P2, q_0 of P6,
P4, P2): 15 x 256 = 3,840 numbers (Ours-F) or 7 x 256 = 1,792 (Ours-S). Training adds a
classifier Linear(c, K) per feature and the loss L = L_triplet + λ L_ce (Eq. 3).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torchvision
from torch import Tensor, nn

from rrid.paper import TABLE2, Table2Row
from rrid.weights import load_imagenet

BACKBONES = {"resnet50": 2048, "resnet34": 512, "resnet18": 512}  # name -> C
GLOBAL_POOLS = ("gcp", "gmp", "gap", "gap+gmp", None)
LOCAL_POOLS = ("gmp", "gap", None)
CONTRASTS = ("official", "paper")
CLASSIFIERS = ("official", "paper")
HEAD_INITS = ("official", "kaiming")


# ----------------------------------------------------------------------------- config


# Table 2 (the ablation) lives in rrid.paper with the paper's other tables; imported here for
# RRIDConfig.table2 and for code that imports it from rrid.model.
PRESETS = {"ours-s": 8, "ours-f": 13}


@dataclass
class RRIDConfig:
    """Architecture of one RRID variant (defaults: Ours-F, the full model of Table 2, row 13).

    backbone      "resnet50" (C = 2048) | "resnet34" | "resnet18" (C = 512, CPU quick mode)
    pretrained    torchvision's ImageNet weights, checksum-verified (rrid.weights; downloads once)
    last_stride   stride of ResNet's layer4 (1 in the paper: 24 x 8 map at 384 x 128)
    scales        stripe counts n of the branches P_n: (2, 4, 6) Ours-F, (6,) Ours-S
    reduced_dim   c, the width of every p̄_i, r̄_i, q_i, q_0 (256)
    global_pool   q_0 from "gcp" (Eq. 2) | "gmp" | "gap" | "gap+gmp" | None (no q_0)
    local_pool    p_i by "gmp" | "gap" over each stripe | None (no q_i)
    relation      True: q_i = p̄_i + R_p(T(p̄_i, r̄_i)) (Eq. 1), R_p: 2c -> c
                  False: q_i = p̄_i (no relation module)
                  "rest_only": q_i = p̄_i + R_p(r̄_i), R_p: c -> c (the model of the paper's
                  Fig. 6, 84.5 / 93.4 mAP / rank-1 on Market-1501 with row 5's other fields)
    contrast      p_cont = (sum_i p_i - p_max)/(n-1) ("official") | p_avg - p_max ("paper")
    classifiers   "official": Linear(c, K) on every q_i, p̄_i, r̄_i and per scale on q_0,
                  p̄_max, p̄_cont (45 for Ours-F) | "paper": one per q_i and q_0 (15)
    head_init     initialisation of every Reduction: "official" (the PyTorch 0.4.1 defaults the
                  authors trained with) | "kaiming" (Kaiming-normal conv, BN weight 1); see Reduction
    """

    backbone: str = "resnet50"
    pretrained: bool = False
    last_stride: int = 1
    scales: tuple[int, ...] = (2, 4, 6)
    reduced_dim: int = 256
    global_pool: str | None = "gcp"
    local_pool: str | None = "gmp"
    relation: bool | Literal["rest_only"] = True
    contrast: str = "official"
    classifiers: str = "official"
    head_init: str = "official"

    def __post_init__(self):
        def check(field, value, allowed):
            if value not in allowed:
                raise ValueError(f"RRIDConfig.{field}={value!r}: expected one of {list(allowed)}")

        check("backbone", self.backbone, BACKBONES)
        check("last_stride", self.last_stride, (1, 2))
        check("global_pool", self.global_pool, GLOBAL_POOLS)
        check("local_pool", self.local_pool, LOCAL_POOLS)
        check("contrast", self.contrast, CONTRASTS)
        check("classifiers", self.classifiers, CLASSIFIERS)
        check("head_init", self.head_init, HEAD_INITS)
        check("pretrained", self.pretrained, (True, False))
        if not (isinstance(self.relation, bool) or self.relation == "rest_only"):  # 1 == True: no `in`
            raise ValueError(f"RRIDConfig.relation={self.relation!r}: expected True, False or 'rest_only'")
        if isinstance(self.scales, int) or not all(isinstance(n, int) and n >= 2 for n in self.scales):
            raise ValueError(f"RRIDConfig.scales={self.scales!r}: expected stripe counts >= 2, e.g. (2, 4, 6)")
        self.scales = tuple(self.scales)  # YAML gives lists
        if not self.scales or len(set(self.scales)) != len(self.scales):
            raise ValueError(f"RRIDConfig.scales={self.scales!r}: expected distinct stripe counts, at least one")
        if not (isinstance(self.reduced_dim, int) and self.reduced_dim >= 1):
            raise ValueError(f"RRIDConfig.reduced_dim={self.reduced_dim!r}: expected a positive int (paper: 256)")
        if self.global_pool is None and self.local_pool is None:
            raise ValueError("RRIDConfig.global_pool and RRIDConfig.local_pool are both None: expected at least one")
        if self.relation and self.local_pool is None:
            raise ValueError(f"RRIDConfig.relation={self.relation!r} needs local features: "
                             "expected local_pool 'gmp' or 'gap'")

    @property
    def feature_dim(self) -> int:
        """Length of the eval-mode embedding: c per q_i of every scale plus c per q_0."""
        c = self.reduced_dim
        local = c * sum(self.scales) if self.local_pool else 0
        return local + (c * len(self.scales) if self.global_pool else 0)

    @classmethod
    def table2(cls, row: int, **overrides) -> "RRIDConfig":
        """The variant of Table 2's row 1..13 (row 8 = Ours-S, row 13 = Ours-F)."""
        if row not in range(1, len(TABLE2) + 1):
            raise ValueError(f"RRIDConfig.table2(row={row!r}): expected a row of Table 2, 1..{len(TABLE2)}")
        t = TABLE2[row - 1]
        fields = dict(scales=t.scales, global_pool=t.global_pool, local_pool=t.local_pool, relation=t.relation)
        return cls(**{**fields, **overrides})

    @classmethod
    def preset(cls, name: str, **overrides) -> "RRIDConfig":
        """"ours-s" (Table 2 row 8, 1,792-d) or "ours-f" (row 13, 3,840-d)."""
        if name.lower() not in PRESETS:
            raise ValueError(f"RRIDConfig.preset({name!r}): expected one of {list(PRESETS)}")
        return cls.table2(PRESETS[name.lower()], **overrides)


# ----------------------------------------------------------------------------- backbone


def resnet_backbone(name: str = "resnet50", pretrained: bool = False, last_stride: int = 1) -> nn.Sequential:
    """torchvision's ResNet without GAP and fc, layer4 with stride ``last_stride``.

    Maps images (N, 3, H, W) to (N, C, H/16, W/16) when last_stride = 1 (Sun et al. 2018).
    The state_dict keys are torchvision's ("conv1.weight", "layer4.0.conv2.weight", ...).
    """
    if name not in BACKBONES:
        raise ValueError(f"backbone {name!r}: expected one of {list(BACKBONES)}")
    resnet = torchvision.models.get_model(name, weights=None)
    if pretrained:  # verified against its SHA-256, then read with weights_only=True (rrid.weights)
        load_imagenet(resnet, name)
    block = resnet.layer4[0]
    strided = block.conv2 if isinstance(block, torchvision.models.resnet.Bottleneck) else block.conv1
    strided.stride = (last_stride, last_stride)
    if block.downsample is not None:
        block.downsample[0].stride = (last_stride, last_stride)
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    return nn.Sequential(OrderedDict((n, getattr(resnet, n)) for n in names))


# ----------------------------------------------------------------------------- parts


STRIPE_SLICINGS = ("adaptive", "official")


def stripe_bounds(height: int, n: int, slicing: str = "adaptive") -> list[tuple[int, int]]:
    """(first, stop) row of each of the n stripes of a map of ``height`` rows, the top one first.

    "adaptive" (rrid's, every row in a stripe): stripe i = 0..n-1 covers rows floor(i H/n) ..
    ceil((i+1) H/n) - 1, the bins of torch's adaptive pooling (neighbouring stripes share a row
    when n does not divide H). "official" (the authors' code): stripes of int(H/n) rows from the
    top, so the bottom H mod n rows are in no stripe. Both are the exact slices of H/n rows when
    n divides H (H = 24 at 384 x 128, for n = 2, 4, 6).
    """
    if slicing not in STRIPE_SLICINGS:
        raise ValueError(f"stripe slicing={slicing!r}: expected one of {list(STRIPE_SLICINGS)}")
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n={n!r} stripes: expected an int >= 1")
    if slicing == "official":
        if n > height:
            raise ValueError(f"n={n} stripes of int(H/n) rows on a feature map of {height} rows: expected n <= {height}")
        rows = height // n
        return [(i * rows, (i + 1) * rows) for i in range(n)]
    return [((i * height) // n, ((i + 1) * height + n - 1) // n) for i in range(n)]


def stripe_pool(x: Tensor, n: int, mode: str = "gmp", slicing: str = "adaptive") -> Tensor:
    """Part features p_1..p_n: max ("gmp") or mean ("gap") over n horizontal stripes.

    x: (N, C, H, W) -> p: (N, n, C), p_1 the top stripe. Stripe i covers the rows of
    ``stripe_bounds(H, n, slicing)``: with the default "adaptive", rows
    floor(i H/n) .. ceil((i+1) H/n) - 1: when n divides H these are the exact slices of height
    H/n that the authors use; for any other H they are the bins of torch's adaptive pooling
    (neighbouring stripes then share a row, e.g. P4 on the 6-row map of a 96 x 32 input).
    ``slicing="official"`` slices as the authors' code (int(H/n) rows each, the bottom H mod n
    rows dropped); the model always uses "adaptive". Written as plain slices so that the model
    exports to ONNX at every height. Only ``x.shape``, row slices and the max or mean over (H, W)
    are read: ``rrid.ablation.BandMap`` (band statistics in place of a map) relies on that.
    """
    if mode not in ("gmp", "gap"):
        raise ValueError(f"stripe pooling mode={mode!r}: expected 'gmp' or 'gap'")
    stripes = [x[:, :, first:stop] for first, stop in stripe_bounds(x.shape[2], n, slicing)]
    pool = (lambda s: s.amax(dim=(2, 3))) if mode == "gmp" else (lambda s: s.mean(dim=(2, 3)))
    return torch.stack([pool(s) for s in stripes], dim=1)


class StripePooling(nn.Module):
    """p_i = GMP (or GAP) of the i-th of n horizontal stripes; (N, C, H, W) -> (N, n, C)."""

    def __init__(self, n: int, mode: str = "gmp"):
        super().__init__()
        self.n, self.mode = n, mode

    def forward(self, x: Tensor) -> Tensor:
        return stripe_pool(x, self.n, self.mode)

    def extra_repr(self) -> str:
        return f"n={self.n}, mode={self.mode!r}"


class Reduction(nn.Sequential):
    """x̄ = ReLU(BN(Conv1x1(x))): (N, in) -> (N, out), on the 1 x 1 map the features are.

    Used for every p_i -> p̄_i, r_i -> r̄_i, p_max -> p̄_max, p_cont -> p̄_cont (C -> c) and as
    R_p, R_g (2c -> c). The conv has a bias, as in the authors' code. Initialisation
    (``init``): "official", the PyTorch 0.4.1 defaults the authors' layers got (their code
    sets none): conv weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), BN weight ~ U(0, 1)
    and bias 0 (PyTorch 1.0 changed the BN weight to 1: pytorch/pytorch#12259); or "kaiming":
    Kaiming-normal conv weight (fan_out), zero bias, BN weight 1 and bias 0.
    """

    def __init__(self, in_channels: int, out_channels: int, init: str = "official"):
        conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True)
        bn = nn.BatchNorm2d(out_channels)
        super().__init__(OrderedDict(conv=conv, bn=bn, relu=nn.ReLU(inplace=True)))
        self.reset_parameters(init)

    def reset_parameters(self, init: str = "official") -> None:
        conv, bn = self.conv, self.bn
        if init == "official":
            bound = 1 / conv.weight[0].numel() ** 0.5         # fan_in = in_channels x 1 x 1
            nn.init.uniform_(conv.weight, -bound, bound)
            nn.init.uniform_(conv.bias, -bound, bound)
            nn.init.uniform_(bn.weight, 0, 1)
        elif init == "kaiming":
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            nn.init.ones_(bn.weight)
        else:
            raise ValueError(f"Reduction init={init!r}: expected one of {list(HEAD_INITS)}")
        nn.init.zeros_(bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x[:, :, None, None]).flatten(1)


def _reductions(count: int, in_channels: int, out_channels: int) -> nn.ModuleList:
    return nn.ModuleList(Reduction(in_channels, out_channels) for _ in range(count))


class PartReduction(nn.Module):
    """Local features without the relation module (Table 2 rows 1-4, 9-12): q_i = p̄_i."""

    def __init__(self, n: int, in_channels: int, reduced_dim: int):
        super().__init__()
        self.p_layers = _reductions(n, in_channels, reduced_dim)

    def forward(self, p: Tensor) -> tuple[Tensor, Tensor]:
        """p: (N, n, C) -> (q, p̄), both (N, n, c), q = p̄."""
        p_bar = torch.stack([layer(p[:, i]) for i, layer in enumerate(self.p_layers)], dim=1)
        return p_bar, p_bar


class RelationModule(nn.Module):
    """One-vs.-rest relation (Eq. 1): q_i = p̄_i + R_p(T(p̄_i, r̄_i)), i = 1..n.

    r_i = 1/(n-1) sum_{j != i} p_j is the mean of the other stripes; p̄_i, r̄_i are C -> c
    reductions and R_p a 2c -> c one. Stripe i has its own p-, r- and R_p-layers.
    """

    def __init__(self, n: int, in_channels: int, reduced_dim: int):
        super().__init__()
        self.n = n
        self.p_layers = _reductions(n, in_channels, reduced_dim)
        self.r_layers = _reductions(n, in_channels, reduced_dim)
        self.R_p = _reductions(n, 2 * reduced_dim, reduced_dim)

    @staticmethod
    def rest(p: Tensor) -> Tensor:
        """r_i = (sum_j p_j - p_i) / (n - 1) for p: (N, n, C)."""
        return (p.sum(dim=1, keepdim=True) - p) / (p.shape[1] - 1)

    def forward(self, p: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """p: (N, n, C) -> (q, p̄, r̄), each (N, n, c)."""
        r = self.rest(p)
        q, p_bars, r_bars = [], [], []
        for i in range(self.n):
            p_bar, r_bar = self.p_layers[i](p[:, i]), self.r_layers[i](r[:, i])
            q.append(p_bar + self.relation(i, p_bar, r_bar))
            p_bars.append(p_bar)
            r_bars.append(r_bar)
        return torch.stack(q, 1), torch.stack(p_bars, 1), torch.stack(r_bars, 1)

    def relation(self, i: int, p_bar: Tensor, r_bar: Tensor) -> Tensor:
        """The residual of stripe i: R_p(T(p̄_i, r̄_i)), (N, c) from p̄_i, r̄_i (N, c) each."""
        return self.R_p[i](torch.cat([p_bar, r_bar], dim=1))


class RestOnlyRelation(RelationModule):
    """The paper's Fig. 6 control: q_i = p̄_i + R_p(r̄_i), i = 1..n (no multi-scale extension there).

    Eq. (1) with the combined rest feature r̄_i in place of T(p̄_i, r̄_i) ("we train a model using
    the combined rest feature r̄_i instead of T(p̄_i, r̄_i) in (1)"), so R_p maps c -> c and sees
    the other stripes only; p̄_i reaches q_i through the skip connection alone. Everything else
    (p-, r-layers, no sharing between stripes, the p̄_i and r̄_i classifiers) is RelationModule's.
    """

    def __init__(self, n: int, in_channels: int, reduced_dim: int):
        super().__init__(n, in_channels, reduced_dim)
        self.R_p = _reductions(n, reduced_dim, reduced_dim)

    def relation(self, i: int, p_bar: Tensor, r_bar: Tensor) -> Tensor:
        """The residual of stripe i: R_p(r̄_i); p̄_i is not used."""
        return self.R_p[i](r_bar)


class GlobalContrastivePooling(nn.Module):
    """GCP (Eq. 2): q_0 = p̄_max + R_g(T(p̄_max, p̄_cont)).

    From the GMP part features p_1..p_n: p_max = max_i p_i (= GMP over the whole map) and
    p_cont = (sum_i p_i - p_max)/(n-1) ("official": the mean of the parts with p_max taken out
    once) or p_avg - p_max ("paper"). p̄_max, p̄_cont are C -> c reductions, R_g is 2c -> c.
    """

    def __init__(self, in_channels: int, reduced_dim: int, contrast: str = "official"):
        super().__init__()
        if contrast not in CONTRASTS:
            raise ValueError(f"contrast={contrast!r}: expected one of {list(CONTRASTS)}")
        self.contrast = contrast
        self.max_layer = Reduction(in_channels, reduced_dim)
        self.cont_layer = Reduction(in_channels, reduced_dim)
        self.R_g = Reduction(2 * reduced_dim, reduced_dim)

    def contrastive(self, p: Tensor) -> tuple[Tensor, Tensor]:
        """(p_max, p_cont), each (N, C), from p: (N, n, C)."""
        p_max = p.amax(dim=1)
        if self.contrast == "official":
            return p_max, (p.sum(dim=1) - p_max) / (p.shape[1] - 1)
        return p_max, p.mean(dim=1) - p_max

    def forward(self, p: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """p: (N, n, C) -> (q_0, p̄_max, p̄_cont), each (N, c)."""
        p_max, p_cont = self.contrastive(p)
        p_bar_max, p_bar_cont = self.max_layer(p_max), self.cont_layer(p_cont)
        return p_bar_max + self.R_g(torch.cat([p_bar_max, p_bar_cont], dim=1)), p_bar_max, p_bar_cont


class GlobalPooling(nn.Module):
    """q_0 = reduction of GMP ("gmp"), GAP ("gap") or GAP + GMP ("gap+gmp", the sum used by
    HPM, Fu et al. 2019) over the whole feature map x: (N, C, H, W) -> (N, c)."""

    def __init__(self, mode: str, in_channels: int, reduced_dim: int):
        super().__init__()
        if mode not in ("gmp", "gap", "gap+gmp"):
            raise ValueError(f"global pooling {mode!r}: expected 'gmp', 'gap' or 'gap+gmp'")
        self.mode = mode
        self.layer = Reduction(in_channels, reduced_dim)

    def pool(self, x: Tensor) -> Tensor:
        """The pooled vector before the reduction, (N, C), from x: (N, C, H, W) (read only through its
        max and mean over (H, W), as ``stripe_pool``)."""
        if self.mode == "gmp":
            return x.amax(dim=(2, 3))
        if self.mode == "gap":
            return x.mean(dim=(2, 3))
        return x.mean(dim=(2, 3)) + x.amax(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(self.pool(x))


def _classifier(reduced_dim: int, num_classes: int) -> nn.Linear:
    fc = nn.Linear(reduced_dim, num_classes)
    nn.init.normal_(fc.weight, std=0.001)
    nn.init.zeros_(fc.bias)
    return fc


class ScaleHead(nn.Module):
    """One branch P_n: stripe pooling, local features q_1..q_n, global feature q_0, classifiers.

    ``features(x)`` returns the named tensors of the branch: p (N, n, C), p̄, r̄, q (N, n, c),
    p_max, p_cont (N, C), p̄_max, p̄_cont, q0 (N, c), whichever the variant has. In training
    ``forward`` also returns a logit tensor per classifier, keyed "q1".."qn", "q0", then (with
    classifiers="official") "p_bar1".., "r_bar1".. (only with the relation module: without it
    p̄_i is q_i), "p_bar_max", "p_bar_cont" (only with GCP). Classifier weights ~ N(0, 0.001²).
    """

    def __init__(self, n: int, in_channels: int, config: RRIDConfig, num_classes: int):
        super().__init__()
        self.n, c = n, config.reduced_dim
        self.local_pool, self.global_pool = config.local_pool, config.global_pool
        self.local = None
        if config.local_pool:
            module = {True: RelationModule, "rest_only": RestOnlyRelation, False: PartReduction}[config.relation]
            self.local = module(n, in_channels, c)
        if config.global_pool == "gcp":
            self.glob = GlobalContrastivePooling(in_channels, c, config.contrast)
        elif config.global_pool:
            self.glob = GlobalPooling(config.global_pool, in_channels, c)
        else:
            self.glob = None

        names = [f"q{i}" for i in range(1, n + 1)] if config.local_pool else []
        names += ["q0"] if config.global_pool else []
        if config.classifiers == "official":
            if config.relation:
                names += [f"p_bar{i}" for i in range(1, n + 1)] + [f"r_bar{i}" for i in range(1, n + 1)]
            if config.global_pool == "gcp":
                names += ["p_bar_max", "p_bar_cont"]
        self.classifiers = nn.ModuleDict((name, _classifier(c, num_classes)) for name in names)

    def features(self, x: Tensor) -> dict[str, Tensor]:
        f: dict[str, Tensor] = {}
        if self.local is not None:
            f["p"] = stripe_pool(x, self.n, self.local_pool)
            if isinstance(self.local, RelationModule):
                f["q"], f["p_bar"], f["r_bar"] = self.local(f["p"])
            else:
                f["q"], f["p_bar"] = self.local(f["p"])
        if isinstance(self.glob, GlobalContrastivePooling):
            p = f["p"] if self.local_pool == "gmp" else stripe_pool(x, self.n, "gmp")
            f["p_max"], f["p_cont"] = self.glob.contrastive(p)
            f["q0"], f["p_bar_max"], f["p_bar_cont"] = self.glob(p)
        elif self.glob is not None:
            f["q0"] = self.glob(x)
        return f

    def forward(self, x: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """x: (N, C, H, W) -> (features, logits); logits is empty in eval mode."""
        f = self.features(x)
        if not self.training:
            return f, {}
        vectors = {k: f[k] for k in ("q0", "p_bar_max", "p_bar_cont") if k in f}
        for key in ("q", "p_bar", "r_bar"):
            if key in f:
                vectors.update({f"{key}{i + 1}": f[key][:, i] for i in range(self.n)})
        return f, {name: fc(vectors[name]) for name, fc in self.classifiers.items()}


# ----------------------------------------------------------------------------- model


class RRIDOutput(NamedTuple):
    """Train-mode output: the 256-d q features the triplet loss sees, one logit tensor per
    classifier (the first len(embeddings) classifiers belong to the embeddings, same order)."""

    embeddings: list[Tensor]
    logits: list[Tensor]


class RRID(nn.Module):
    """The relation network: a ResNet backbone and one ``ScaleHead`` per scale P_n.

    Heads run in order of decreasing n (P6, P4, P2). Eval mode returns (N, feature_dim):
    T(q_1..q_6 of P6, q_1..q_4 of P4, q_1..q_2 of P2, q_0 of P6, q_0 of P4, q_0 of P2), the
    block order of the authors' code, named in ``block_names``. Train mode returns
    ``RRIDOutput(embeddings, logits)``: the blocks as a list, and the classifier outputs
    named in ``classifier_names``.
    """

    def __init__(self, config: RRIDConfig | None = None, num_classes: int = 751):
        super().__init__()
        config = config or RRIDConfig()
        if not (isinstance(num_classes, int) and num_classes >= 1):
            raise ValueError(f"RRID(num_classes={num_classes!r}): expected the number of training identities, >= 1")
        self.config, self.num_classes = config, num_classes
        self.backbone = resnet_backbone(config.backbone, config.pretrained, config.last_stride)
        C = BACKBONES[config.backbone]
        self.heads = nn.ModuleDict(
            (f"P{n}", ScaleHead(n, C, config, num_classes)) for n in sorted(config.scales, reverse=True)
        )
        if config.head_init != "official":           # every Reduction is built with the official init
            for m in self.heads.modules():
                if isinstance(m, Reduction):
                    m.reset_parameters(config.head_init)
        heads = self.heads.items()
        self.block_names = [f"{s}/q{i}" for s, h in heads if h.local is not None for i in range(1, h.n + 1)]
        self.block_names += [f"{s}/q0" for s, h in heads if h.glob is not None]
        extras = [f"{s}/{k}" for s, h in heads for k in h.classifiers if not k.startswith("q")]
        self.classifier_names = self.block_names + extras  # every block has its classifier

    def forward(self, images: Tensor) -> Tensor | RRIDOutput:
        x = self.backbone(images)
        outputs = {name: head(x) for name, head in self.heads.items()}
        blocks = [f["q"][:, i] for f, _ in outputs.values() if "q" in f for i in range(f["q"].shape[1])]
        blocks += [f["q0"] for f, _ in outputs.values() if "q0" in f]
        if not self.training:
            return torch.cat(blocks, dim=1)
        logits = {f"{s}/{k}": v for s, (_, lg) in outputs.items() for k, v in lg.items()}
        return RRIDOutput(blocks, [logits[name] for name in self.classifier_names])

    def forward_features(self, images: Tensor) -> dict[str, object]:
        """Intermediate tensors for the book: {"x": feature map (N, C, H, W), "P6": {"p": ...,
        "p_bar": ..., "r_bar": ..., "q": ..., "p_max": ..., "p_cont": ..., "q0": ...}, ...}
        (see ``ScaleHead.features``). Wrap it in ``torch.no_grad()`` unless you need gradients."""
        x = self.backbone(images)
        return {"x": x, **{name: head.features(x) for name, head in self.heads.items()}}


def param_groups(model: RRID, backbone_lr: float, head_lr: float) -> list[dict]:
    """The paper's two SGD groups: the backbone at ``backbone_lr`` (1e-3), the rest at ``head_lr`` (1e-2)."""
    backbone = list(model.backbone.parameters())
    ids = {id(p) for p in backbone}
    head = [p for p in model.parameters() if id(p) not in ids]
    return [
        {"name": "backbone", "params": backbone, "lr": backbone_lr},
        {"name": "head", "params": head, "lr": head_lr},
    ]


def count_parameters(module: nn.Module) -> int:
    """Number of learnable numbers in ``module`` (BN running statistics are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "RRIDConfig", "TABLE2", "Table2Row", "resnet_backbone", "stripe_bounds", "stripe_pool", "StripePooling", "Reduction",
    "PartReduction", "RelationModule", "RestOnlyRelation", "GlobalContrastivePooling", "GlobalPooling", "ScaleHead",
    "RRIDOutput", "RRID", "param_groups", "count_parameters",
]
