"""What a head costs, and what a training run costs: parameters, multiply-accumulates, FLOPs,
checkpoint bytes and hours.

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

A training run (the second half of this module):

* :func:`train_step_flops`: the FLOPs of one optimiser step of a config, counted by torch's
  ``FlopCounterMode`` on the meta device (shapes only: no memory, no arithmetic): the training-mode
  forward (backbone, heads, every classifier) and its backward pass, both measured. As is usual,
  only convolutions and matrix products count (a multiply-accumulate is 2 FLOPs); batch norm,
  ReLU, pooling and the loss's element-wise work do not. The backward pass measures about twice
  the forward, the rule of thumb "training = 3 x forward" (Kaplan et al. 2020: 2N FLOPs per
  parameter and token forward, 4N backward); it is a little less because no gradient is computed
  for the input images.
* :func:`checkpoint_bytes`: the size of ``last.pt`` (weights, buffers and SGD's momentum, counted
  on the meta device) and of the weights-only ``best.pt`` a mirror keeps.
* :func:`training_estimate`: hours of a whole run on a GPU, from those FLOPs, the GPU's peak
  throughput in its datasheet (:data:`GPUS`) and the share of that peak that NVIDIA's own
  ResNet-50 measurements reach on the same GPU (:func:`utilisation`). An estimate, not a
  measurement: ``benchmarks/gpu_check.py`` measures the step where a GPU is at hand.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import torch
import torchvision
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from rrid.config import ExperimentConfig
from rrid.model import BACKBONES, RRID, Reduction, RRIDConfig, count_parameters

__all__ = ["Cost", "DESIGNS", "reduction_cost", "relation_cost", "head_cost", "AllPairsRelation", "measure",
           "StepFlops", "step_flops", "train_step_flops", "CheckpointBytes", "checkpoint_bytes", "GPU", "GPUS",
           "resnet50_reference_flops", "utilisation", "Estimate", "training_images", "training_estimate",
           "COLAB_VM_HOURS"]

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


# ----------------------------------------------------------------------------- a training run

class StepFlops(NamedTuple):
    """FLOPs of one training step of ``batch`` images (convolutions and matrix products)."""

    batch: int
    forward: int       # the training-mode forward: backbone, heads and every classifier
    backward: int      # its backward pass: the gradients of the activations and of the weights

    @property
    def total(self) -> int:
        return self.forward + self.backward

    @property
    def per_image(self) -> float:
        return self.total / self.batch


def step_flops(build: Callable[[], nn.Module], batch: int, height: int, width: int,
               outputs: Callable = lambda out: [out]) -> StepFlops:
    """Count one forward and backward pass of ``build()`` in training mode on a batch of
    ``batch`` images of ``height`` x ``width``, on the meta device (``FlopCounterMode``; nothing is
    computed). ``outputs(out)`` lists the tensors whose sum the backward pass starts from."""
    with torch.device("meta"):
        net = build().train()
        images = torch.zeros(batch, 3, height, width)
    with FlopCounterMode(display=False) as forward:
        out = net(images)
    total = sum(t.float().sum() for t in outputs(out))      # a sum: no FLOPs in the counter's sense
    with FlopCounterMode(display=False) as backward:
        total.backward()
    return StepFlops(batch, forward.get_total_flops(), backward.get_total_flops())


def train_step_flops(config: ExperimentConfig, num_classes: int) -> StepFlops:
    """One step of ``config``: ``RRID(config.model, num_classes)`` on ``data.p x data.k`` images of
    ``data.height x data.width``, every embedding and logit reaching the loss."""
    model = dataclasses.replace(config.model, pretrained=False)        # shapes only: no weights are read
    return step_flops(lambda: RRID(model, num_classes), config.data.p * config.data.k, config.data.height,
                      config.data.width, lambda out: [*out.embeddings, *out.logits])


class CheckpointBytes(NamedTuple):
    """Bytes of the tensors of a run's checkpoints (the rest of a file is under a megabyte)."""

    weights: int       # the model's parameters and buffers: a mirror's weights-only best.pt
    momentum: int      # SGD's momentum buffers, one per parameter (none without momentum)

    @property
    def last(self) -> int:
        """``last.pt`` (and the run folder's ``best.pt``, a byte copy of it)."""
        return self.weights + self.momentum


def checkpoint_bytes(config: ExperimentConfig, num_classes: int) -> CheckpointBytes:
    """The tensors of ``last.pt`` for ``config``, counted on the meta device."""
    with torch.device("meta"):
        model = RRID(dataclasses.replace(config.model, pretrained=False), num_classes)
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    momentum = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return CheckpointBytes(weights, momentum if config.optim.momentum else 0)


class GPU(NamedTuple):
    """A GPU's public figures: its datasheet's dense peak at ``dtype`` (Tensor Cores) and the
    ResNet-50 v1.5 throughput NVIDIA measured on it with mixed precision, at 224 x 224."""

    name: str
    dtype: str                   # the autocast dtype rrid uses there (rrid.runtime.amp_dtype)
    peak_tflops: float
    datasheet: str               # BibTeX key of the datasheet (book/references.bib)
    resnet50_images_per_s: float
    resnet50_training: bool      # False: NVIDIA publishes only an inference figure for this GPU
    resnet50_batch: int
    resnet50_source: str = "nvidia2021resnet50"


GPUS = {
    "T4": GPU("NVIDIA T4", "fp16", 65.0, "nvidia2018t4", 1198.0, False, 256),
    "A100": GPU("NVIDIA A100", "bf16", 312.0, "nvidia2020a100", 2470.0, True, 256),
}
"""T4: 65 TFLOPS of fp16 Tensor Core arithmetic (datasheet), and NVIDIA's ResNet-50 v1.5 mixed-precision
*inference* at batch 256, 1,198 images/s (no T4 training figure is published there). A100: 312 TFLOPS of
bf16 (dense, without sparsity), and 2,470 images/s of mixed-precision *training* on one A100 80GB of a
DGX A100. Colab lends both (T4 on the free tier)."""


@functools.lru_cache(maxsize=None)
def resnet50_reference_flops(training: bool, batch: int = 64) -> float:
    """FLOPs per image of torchvision's ResNet-50 at 224 x 224: forward, plus backward when ``training``."""
    counted = step_flops(lambda: torchvision.models.resnet50(weights=None), batch, 224, 224)
    return (counted.total if training else counted.forward) / batch


def utilisation(gpu: GPU) -> float:
    """The share of ``gpu``'s peak that NVIDIA's ResNet-50 measurement reached: images/s x FLOPs per
    image / peak. The estimate assumes RRID's step (the same kind of network: convolutions of a
    ResNet-50, at a larger input) reaches the same share."""
    return gpu.resnet50_images_per_s * resnet50_reference_flops(gpu.resnet50_training) / (gpu.peak_tflops * 1e12)


COLAB_VM_HOURS = 12
"""The longest a Colab VM lives ("as much as 12 hours", the Colab FAQ, google2024colab): less when
the notebook sits idle or GPUs are scarce, and it varies. A run longer than one session continues
in the next with ``--resume`` (``fit(resume=True)``), from its copy on Drive (``--mirror``)."""


class Estimate(NamedTuple):
    gpu: GPU
    images: int                  # training images seen in the whole run (epochs x steps x batch)
    flops: float                 # of the whole run
    utilisation: float
    images_per_s: float

    @property
    def hours(self) -> float:
        return self.images / self.images_per_s / 3600


def training_images(config: ExperimentConfig, train_images: int) -> int:
    """Images one run sees: ``train.epochs`` x steps per epoch x ``data.p x data.k``; an official epoch
    is ``train_images // data.p`` steps (every image an anchor once), a once epoch ``// (p k)``."""
    per_step = config.data.p * config.data.k
    steps = train_images // (config.data.p if config.data.epoch_length == "official" else per_step)
    return config.train.epochs * steps * per_step


def training_estimate(config: ExperimentConfig, num_classes: int, train_images: int, gpu: GPU) -> Estimate:
    """Hours of one run of ``config`` on ``gpu`` (one GPU) with ``train_images`` training images:
    images / (peak x utilisation / FLOPs per image). Evaluation and data loading are not counted."""
    step = train_step_flops(config, num_classes)
    share = utilisation(gpu)
    images = training_images(config, train_images)
    rate = gpu.peak_tflops * 1e12 * share / step.per_image
    return Estimate(gpu, images, images * step.per_image, share, rate)
