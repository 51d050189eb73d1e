"""How long a head-only protocol takes: measured where it runs, and on a T4 from public figures.

A benchmark of ``rows`` x ``seeds`` costs (:func:`estimate`)

    total = cache + seeds x sum_rows (train(row) + score(row))
    cache = (N_train x views + (Q + G) x 2) x t_image             images through the backbone
    train = epochs x floor(N_train / (P K)) x t_step(row)          "once" epochs of P x K batches
    score = 2 (Q + G) x t_embed(row) + rankings(row) x t_ranking
            rankings(row) = 1 + blocks(row) if the row's 256-d blocks are scored alone, else 1

with N_train, Q, G the head-training, query and gallery images (:func:`counts`). The rates t_*
come from one of two places:

* :func:`measure`: a few batches of the backbone, a few head steps of every row, one forward
  of 512 test views and one ranking of the test split's size, timed on the device that will run
  (random inputs of the right shapes: nothing is downloaded or cached). The benchmark prints
  this estimate before it starts.
* :func:`t4_rates`: an NVIDIA T4 (Colab's GPU) without one. The backbone from NVIDIA's published
  ResNet-50 inference throughput on a T4 (mixed precision, batch 64, 224 x 224: 1,165 images/s,
  ``T4_RESNET50_IMAGES_PER_S``) scaled by the ratio of multiply-accumulates (``rrid.cost.measure``:
  6.08 G at 384 x 128 with last stride 1 against 4.09 G at 224 x 224, 1.49). A head step of a
  row does a few GFLOPs: 1-2 ms at the T4's 8.1 FP32 TFLOPS, where it is bound instead by
  PyTorch's cost per operation (launching thousands of small kernels); that cost is measured on
  this machine's CPU with the same heads on tiny tensors (same operations, no arithmetic), then
  the arithmetic (3 x the forward's, ``rrid.cost.head_cost`` plus the classifiers) at the T4's
  FP32 rate and the optimiser's memory traffic (32 bytes per parameter) at its 320 GB/s are
  added. Rankings run on the CPU (``rrid.metrics``), so their time is this machine's. All of it is
  then doubled (``T4_MARGIN``, for what these figures cannot see).

The T4 figure is an estimate of an estimate; the measured one, printed on the T4 itself before a
run starts, is what a run there will take. On this project's shared 2-core machine the T4 figure
of the full protocol's 13 rows x 5 seeds (:func:`t4_estimate`) came to 33-36 min when it was idle
and up to 50 min with other jobs running (the per-operation cost is measured in CPU time, but
shared caches still slow it): a cache of 3.9 min, then 6-9 min a seed.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple, Sequence

import numpy as np
import torch

from rrid import paper, runtime
from rrid.config import OptimConfig, feature_map_height
from rrid.cost import head_cost, measure as measure_cost
from rrid.evaluation import pairwise_distance
from rrid.metrics import evaluate_ranking
from rrid.model import BACKBONES, resnet_backbone
from rrid.train import TrainerState, build_optimizer, train_step

from .bands import BandMap, band_bounds
from .full import FULL, SCALES, market_split
from .heads import head_model, row_config

__all__ = ["Counts", "Rates", "Estimate", "counts", "cache_bytes", "estimate", "seeds_within", "measure",
           "t4_rates", "duration", "describe", "t4_estimate", "announce", "end_to_end_t4", "T4_TRAINING_PER_INFERENCE",
           "T4_RESNET50_IMAGES_PER_S", "T4_FP32_FLOPS", "T4_BYTES_PER_S", "T4_MARGIN"]

T4_RESNET50_IMAGES_PER_S = 1165.0
"""NVIDIA DeepLearningExamples, ResNet50 v1.5 for PyTorch (NGC pytorch-21.03): inference on a
T4, mixed precision, batch 64, 224 x 224 (book/references.bib: nvidia2021resnet50)."""
T4_FP32_FLOPS = 8.1e12          # NVIDIA T4 datasheet: single precision peak (nvidia2018t4)
T4_BYTES_PER_S = 320e9          # NVIDIA T4 datasheet: GDDR6 bandwidth (nvidia2018t4)
T4_TRAINING_PER_INFERENCE = 1200 / 3249
"""Training over inference throughput of ResNet-50, mixed precision, one V100 (1,200 and 3,249
images/s at batch 128; the same README): NVIDIA publishes no T4 training figure, so a T4 is taken
to train at this fraction of its inference rate."""
BYTES_PER_PARAMETER = 32        # float32 weight read twice, gradient written, SGD reads and writes weight and momentum
T4_MARGIN = 2.0
"""The T4 figure is doubled for what it cannot see: eager PyTorch instead of NVIDIA's tuned container
for the backbone, CUDA's kernel launches beside the per-operation cost measured on a CPU, matrix
products of 64 rows below the peak rate, and Colab's host CPU (image decoding, dispatch, rankings)
slower than the machine that measured."""


class Counts(NamedTuple):
    """Images of a protocol's split: head training (with its identities), query, gallery;
    ``estimated`` when taken from ``rrid.paper.DATASETS`` because the data is absent."""

    train: int
    train_ids: int
    query: int
    gallery: int
    estimated: bool = False


class Rates(NamedTuple):
    """Seconds per unit: an image through the backbone, a head step and a test view through the
    heads (per row), a ranking of the test split; ``where`` says how they were had."""

    image: float
    step: dict
    embed: dict
    ranking: float
    where: str


class Estimate(NamedTuple):
    """Seconds: the cache (once), and per run of each row its training and its scoring."""

    cache: float
    train: dict
    score: dict
    seeds: int
    where: str

    @property
    def per_seed(self) -> float:
        return sum(self.train.values()) + sum(self.score.values())

    @property
    def total(self) -> float:
        return self.cache + self.seeds * self.per_seed


def counts(protocol) -> Counts:
    """The protocol's split sizes: from its data when it is there, else Market-1501's from
    ``rrid.paper.DATASETS`` (training images in proportion to the identities kept; the gallery
    with the 3,819 junk images the protocol drops, so an overestimate)."""
    try:
        train, query, gallery = market_split(protocol)
        return Counts(len(train), len({r.pid for r in train}), len(query), len(gallery))
    except (OSError, ValueError):          # DatasetError is a ValueError: no data there
        size = paper.DATASETS["market1501"]
        ids = size.train_ids - protocol.val_ids
        return Counts(size.train_images_of(ids), ids, size.query_images, size.gallery_images,
                      estimated=True)


def _views(protocol, n: Counts) -> int:
    """Images through the backbone: every training view, the test images plain and mirrored."""
    return n.train * protocol.views + 2 * (n.query + n.gallery)


def cache_bytes(protocol, n: Counts) -> tuple[int, int]:
    """(bytes of the maps x in float16, bytes of their band statistics) for every cached view."""
    h, w = feature_map_height(protocol.height), feature_map_height(protocol.width)
    channels, bands = BACKBONES[protocol.backbone], len(band_bounds(h, SCALES))
    return _views(protocol, n) * channels * h * w * 2, _views(protocol, n) * bands * 2 * channels * 2


def _rankings(protocol, row) -> int:
    """Rankings a run of ``row`` computes: the whole embedding, and each 256-d block where scored alone."""
    cfg = row_config(row, protocol.backbone, **protocol.model_overrides)
    return 1 + (cfg.feature_dim // cfg.reduced_dim if protocol.scores_blocks(row) else 0)


def estimate(protocol, n: Counts, rates: Rates, rows: Sequence, seeds: int) -> Estimate:
    """The module docstring's arithmetic, in seconds."""
    steps = protocol.epochs * max(n.train // (protocol.p * protocol.k), 1)
    test_views = 2 * (n.query + n.gallery)
    return Estimate(_views(protocol, n) * rates.image, {r: steps * rates.step[r] for r in rows},
                    {r: test_views * rates.embed[r] + _rankings(protocol, r) * rates.ranking for r in rows},
                    seeds, rates.where)


def seeds_within(protocol, n: Counts, rates: Rates, rows: Sequence, budget: float = 3600.0,
                 at_least: int = 3) -> int:
    """The most seeds whose :func:`estimate` stays within ``budget`` seconds (at least ``at_least``)."""
    per_seed = estimate(protocol, n, rates, rows, 1).per_seed
    cache = estimate(protocol, n, rates, rows, 0).cache
    return max(at_least, math.floor((budget - cache) / per_seed) if per_seed > 0 else at_least)


def duration(seconds: float) -> str:
    """``seconds`` in the unit a reader takes in: "40 s", "12.5 min", "2.3 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def describe(est: Estimate, rows: Sequence) -> str:
    """The estimate in a line, for a reader to see before a run starts."""
    slowest = max(rows, key=lambda r: est.train[r] + est.score[r])
    return (f"estimate ({est.where}): {duration(est.total)} = feature cache {duration(est.cache)} + {est.seeds} "
            f"seed(s) x {duration(est.per_seed)} ({len(rows)} rows: training {duration(sum(est.train.values()))}, "
            f"scoring {duration(sum(est.score.values()))}; the slowest, row {slowest}, "
            f"{duration(est.train[slowest] + est.score[slowest])} a run)")


# ----------------------------------------------------------------------------- measuring

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int, clock=time.perf_counter, stat=np.median) -> float:
    """Seconds per call of ``fn()``: ``stat`` (the median) of ``repeats`` timed calls after an untimed one
    (caches, allocations, kernels chosen), so that another process taking the CPU for a moment does not
    count. ``clock=time.process_time`` counts this process's CPU time only (on one thread: its work, not
    its waits); ``stat=min``, the cost on a machine nobody else uses."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = clock()
        fn()
        _sync(device)
        times.append(clock() - t0)
    return float(stat(times))


def _band_batch(protocol, batch: int, channels: int, device) -> BandMap:
    """Random band statistics of ``batch`` maps of the protocol's size."""
    h, w = feature_map_height(protocol.height), feature_map_height(protocol.width)
    bounds = band_bounds(h, SCALES)
    shape = (batch, len(bounds), channels)
    band_max = torch.rand(shape, device=device)
    return BandMap(band_max, band_max * torch.tensor([b - a for a, b in bounds], device=device)[:, None] * w,
                   bounds, w)


def _step_seconds(row, protocol, num_classes: int, device, repeats: int, tiny: bool = False) -> float:
    """Seconds per training step of ``row``'s heads on a P x K batch (``tiny``: C = 512, c = 8,
    4 x 2 images, 8 identities: the same operations with next to no arithmetic, timed in CPU time
    on one thread, the fastest of ``repeats``, so that other processes on the machine do not count)."""
    p, k = (4, 2) if tiny else (protocol.p, protocol.k)
    backbone, overrides = ("resnet18", {"reduced_dim": 8}) if tiny else (protocol.backbone, protocol.model_overrides)
    model = head_model(row, 0, 8 if tiny else num_classes, backbone, **overrides).to(device).train()
    recipe = OptimConfig(head_lr=protocol.head_lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay)
    state = TrainerState(None, model, build_optimizer(model.parameters(), recipe), device=device)
    x = _band_batch(protocol, p * k, BACKBONES[backbone], device)
    labels = torch.arange(p, device=device).repeat_interleave(k)
    if not tiny:
        return _timed(lambda: train_step(state, x, labels), device, repeats)
    with runtime.threads(1):
        return _timed(lambda: train_step(state, x, labels), device, repeats, clock=time.process_time, stat=min)


def _embed_seconds(row, protocol, num_classes: int, device) -> float:
    """Seconds per test view through ``row``'s heads (eval mode, 512 at a time)."""
    model = head_model(row, 0, num_classes, protocol.backbone, **protocol.model_overrides).to(device).eval()
    x = _band_batch(protocol, 512, BACKBONES[protocol.backbone], device)
    with torch.inference_mode():
        return _timed(lambda: model(x), device, 1) / 512


def _ranking_seconds(n: Counts, dim: int, device, distances: bool = True) -> float:
    """Seconds for the distances of Q x G embeddings of ``dim`` numbers on ``device`` and their
    Market-1501 ranking (on the CPU, as ``rrid.metrics`` does); without ``distances``, the ranking
    alone in CPU time on one thread, the faster of two (as a tiny step's, for the T4 figure)."""
    rng = np.random.default_rng(0)
    q, g = torch.randn(n.query, dim, device=device), torch.randn(n.gallery, dim, device=device)
    ids = max(n.query // 4, 2)
    q_pids, g_pids = rng.integers(0, ids, n.query), rng.integers(0, ids, n.gallery)
    q_cams, g_cams = rng.integers(0, 6, n.query), rng.integers(0, 6, n.gallery)
    fixed = pairwise_distance(q, g)

    def rank():
        d = pairwise_distance(q, g) if distances else fixed
        return evaluate_ranking(d, q_pids, g_pids, q_cams, g_cams)

    if distances:
        return _timed(rank, device, 1)
    with runtime.threads(1):
        return _timed(rank, device, 2, clock=time.process_time, stat=min)


def _image_seconds(protocol, device, batch: int) -> float:
    """Seconds per image through the backbone (random weights: the arithmetic is the same)."""
    net = resnet_backbone(protocol.backbone, pretrained=False, last_stride=1).to(device).eval()
    images = torch.randn(batch, 3, protocol.height, protocol.width, device=device)
    with torch.inference_mode(), torch.autocast(device.type, enabled=device.type == "cuda"):
        return _timed(lambda: net(images).float().amax(), device, 2) / batch


def measure(protocol, rows: Sequence, n: Counts, device: torch.device | None = None, repeats: int = 3) -> Rates:
    """Rates timed on ``device`` (default: where the protocol's heads run) with random inputs; the
    caller's random state is left as it was."""
    device = device or protocol.head_device()
    batch = protocol.batch if device.type == "cuda" else min(protocol.batch, 8)
    with torch.random.fork_rng(devices=[]):
        image = _image_seconds(protocol, device, batch)
        step = {r: _step_seconds(r, protocol, n.train_ids, device, repeats) for r in rows}
        embed = {r: _embed_seconds(r, protocol, n.train_ids, device) for r in rows}
        dim = max(row_config(r, protocol.backbone, **protocol.model_overrides).feature_dim for r in rows)
        ranking = _ranking_seconds(n, dim, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "this machine's CPU"
    return Rates(image, step, embed, ranking, f"measured on {name}")


def _training_flops(row, protocol, num_classes: int) -> tuple[float, int]:
    """(FLOPs of one training step of ``row``: 3 x the forward's on P K images, parameters)."""
    cfg = row_config(row, protocol.backbone, **protocol.model_overrides)
    forward = sum(head_cost(cfg, n, num_classes=num_classes).macs for n in cfg.scales)
    with torch.device("meta"):
        model = head_model(row, 0, num_classes, protocol.backbone, **protocol.model_overrides)
    classifiers = len(model.classifier_names) * cfg.reduced_dim * num_classes
    params = sum(p.numel() for p in model.heads.parameters())
    return 3 * 2 * (forward + classifiers) * protocol.p * protocol.k, params


def _backbone_ratio(protocol) -> float:
    """MACs of the protocol's backbone at its input size (last stride 1) / ResNet-50's at 224 x 224."""
    with torch.device("meta"):             # shapes only: nothing is computed
        ours = resnet_backbone(protocol.backbone, last_stride=1)
        reference = resnet_backbone("resnet50", last_stride=2)
    size = torch.zeros(1, 3, protocol.height, protocol.width, device="meta")
    return measure_cost(ours, size).macs / measure_cost(reference, torch.zeros(1, 3, 224, 224, device="meta")).macs


def t4_rates(protocol, rows: Sequence, n: Counts, repeats: int = 5) -> Rates:
    """Rates of an NVIDIA T4 from public figures and this machine's per-operation cost (module docstring).
    The caller's random state is left as it was (building heads seeds torch's generator)."""
    with torch.random.fork_rng(devices=[]):
        overhead = {r: _step_seconds(r, protocol, n.train_ids, torch.device("cpu"), repeats, tiny=True) for r in rows}
        ranking = _ranking_seconds(n, 1, torch.device("cpu"), distances=False)   # the ranking alone: the CPU's
        work = {r: _training_flops(r, protocol, n.train_ids) for r in rows}
        ratio = _backbone_ratio(protocol)
    dim = max(row_config(r, protocol.backbone, **protocol.model_overrides).feature_dim for r in rows)
    ranking += 2 * n.query * n.gallery * dim / T4_FP32_FLOPS                     # the distances: the T4's
    step, embed = {}, {}
    for r, (flops, params) in work.items():
        step[r] = overhead[r] + flops / T4_FP32_FLOPS + BYTES_PER_PARAMETER * params / T4_BYTES_PER_S
        embed[r] = overhead[r] / 512 + flops / (3 * protocol.p * protocol.k) / T4_FP32_FLOPS
    m = T4_MARGIN
    where = (f"an NVIDIA T4: its backbone at {T4_RESNET50_IMAGES_PER_S / ratio:.0f} images/s, NVIDIA's "
             f"{T4_RESNET50_IMAGES_PER_S:,.0f} for ResNet-50 at 224 x 224 over {ratio:.2f} times its "
             f"multiply-accumulates; its heads at this machine's per-operation cost; all x{m:g}")
    return Rates(m * ratio / T4_RESNET50_IMAGES_PER_S, {r: m * v for r, v in step.items()},
                 {r: m * v for r, v in embed.items()}, m * ranking, where)


def t4_estimate(rows: Sequence = tuple(range(1, 14)), seeds: int | None = None) -> Estimate:
    """The full protocol's ``rows`` x ``seeds`` (default ``FULL.seeds``) on a T4 (:func:`t4_rates`)."""
    n = counts(FULL)
    return estimate(FULL, n, t4_rates(FULL, rows, n), rows, FULL.seeds if seeds is None else seeds)


def announce(protocol, rows: Sequence, seeds: Sequence, say=print) -> Estimate:
    """Print, before a run, the estimate of ``rows`` x ``seeds`` of ``protocol`` measured here, and
    the full protocol's on a T4 with the seeds that fit an hour there; return the measured one."""
    n = counts(protocol)
    rates = measure(protocol, rows, n)
    here = estimate(protocol, n, rates, rows, len(seeds))
    say(describe(here, rows) + (" [split sizes estimated from the paper]" if n.estimated else "")
        + f"; seeds within an hour here: {seeds_within(protocol, n, rates, rows, at_least=1)}", flush=True)
    every = tuple(range(1, 14))
    n_full = counts(FULL)
    rates = t4_rates(FULL, every, n_full)
    t4 = estimate(FULL, n_full, rates, every, FULL.seeds)
    say(f"the full protocol on a T4: {describe(t4, every)}; seeds within an hour there: "
        f"{seeds_within(FULL, n_full, rates, every)}", flush=True)
    return here


def end_to_end_t4(rows: Sequence, epochs: int = paper.TRAINING.epochs, eval_every: int = 10,
                  rates: Rates | None = None) -> dict:
    """Seconds to train each of ``rows`` end to end on a T4 as ``configs/market1501`` does (chapter 9's
    exercise): ``epochs`` "official" epochs of |train| / P batches of P K images (every training
    image an anchor once), the backbone at ``T4_TRAINING_PER_INFERENCE`` of its inference rate,
    the heads at their T4 step time (``rates``, default :func:`t4_rates`, doubled like it), and an
    evaluation of the test split (backbone, heads, one ranking) every ``eval_every`` epochs."""
    n = counts(FULL)
    rates = rates or t4_rates(FULL, rows, n)
    steps = epochs * (n.train // FULL.p)
    test = 2 * (n.query + n.gallery) * (epochs // eval_every)
    backbone = steps * FULL.p * FULL.k * rates.image / T4_TRAINING_PER_INFERENCE
    return {r: backbone + steps * rates.step[r] + test * (rates.image + rates.embed[r])
            + epochs // eval_every * rates.ranking for r in rows}
