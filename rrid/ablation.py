"""Quick ablations of Table 2 on a shared frozen backbone: the head-only protocol.

Training all 13 rows of the paper's Table 2 end to end on a 2-core CPU leaves each run one
short epoch, and then the seed-to-seed spread (2-6 mAP points) hides the paper's effects
(0.1-3 points). This module trains only what the rows differ in, the heads, on feature maps
computed once by one frozen backbone, so that a run takes seconds and many seeds fit:

1. **Data.** One synthetic set (``rrid.data.synthetic``) whose training identities are cut in
   two disjoint groups: the first ``backbone_ids`` train the backbone, the next
   ``train_ids`` train the heads; the test split (``test_ids`` identities, query and
   gallery) is disjoint from both.
2. **Backbone.** A ResNet (``rrid.model.resnet_backbone``) trained from scratch, once, on the
   backbone identities with a generic objective that belongs to no row: softmax identity
   classification on the global average of the feature map, as ImageNet pre-training does
   (and, like ImageNet models, with last stride 2). It is then frozen and used with last
   stride 1 (the paper's surgery on its ImageNet backbone), giving x: (C, H, W).
3. **Cache.** x of every head-training image in ``views`` views (plain, mirrored, and
   ``views - 2`` with a random flip and the authors' random erasing) and of every test
   image (plain and mirrored, for the flip-averaged evaluation), stored in float16.
4. **Heads.** For a row and a seed s, the package's ``RRID`` of that row, built after
   ``torch.manual_seed(s)`` like ``rrid.train.build_model``, with its backbone replaced by
   the cache (``model.backbone = nn.Identity()``), is trained with ``RRIDLoss`` (Eq. 3) and
   SGD on P x K batches (``PKSampler``, seed s). Everything random is a function of s only:
   the same seed gives two rows the same batches, the same views and the same initial
   weights for the layers they share the position of, so differences between rows are
   paired.
5. **Evaluation.** As ``rrid.evaluate``: the embedding of an image and of its mirror
   averaged, L2-normalised, Euclidean distances, the Market-1501 protocol
   (``evaluate_ranking``); and each 256-d block alone (Tables 3 and 4 of the paper).

What it isolates: how well each head design (stripe pooling, relation module, GCP and the
other global poolings, one or three scales, their classifiers and losses) uses one fixed
feature map. What it cannot show: how each head's gradients shape the backbone, which the
paper's end-to-end training includes (e.g. the relation module may teach the backbone
better part features); nor anything about real images, ImageNet features or ResNet-50.
The numbers are quick-mode results on synthetic data, not the paper's.

``live_ablation(4, 5, plot=rrid.LivePlot())`` trains two rows with their curves overlaid in one plot;
``benchmarks/ablation_quick.py`` loops over rows and seeds and writes the CSV files that
:func:`read_runs` and :func:`comparisons` read back.

For the book's figures: ``trained_model(row, seed)`` is the full model (frozen backbone + the
row's trained heads; ``row`` 1..13 or "rest_only", the paper's Fig. 6 model), trained once and
kept on disk; ``rank(row_or_model)`` ranks the test split from the cache (an
``rrid.retrieval.Ranking``); ``images(paths)`` loads images as the cache saw them.
``python -m rrid.ablation prepare`` builds all of it ahead of time (``make book`` runs it first).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rrid import paper as _paper
from rrid import paths, runtime
from rrid.config import OptimConfig
from rrid.data import ImageDataset, build_transforms
from rrid.files import atomic_path
from rrid.metrics import evaluate_ranking
from rrid.model import BACKBONES, RRID, TABLE2, RRIDConfig, resnet_backbone
from rrid.stats import paired_difference, verdict
from rrid.train import TrainerState, build_optimizer, build_scheduler, train_one_epoch

__all__ = ["Protocol", "QUICK", "FeatureCache", "HeadRun", "HeadState", "Comparison", "COMPARISONS",
           "TABLE3_ROWS", "TABLE4_ROWS", "PAPER_TABLE3", "PAPER_TABLE4", "TABLE3_COMPARISONS",
           "TABLE4_COMPARISONS", "POWER_GOAL", "synthetic_split", "train_backbone", "build_features", "features", "cache_info",
           "NAMED_ROWS", "row_config", "head_model", "batches", "train_heads", "embed_cached", "evaluate_heads",
           "live_ablation", "trained_model", "trained_run", "images", "rank", "BOOK_MODELS", "BOOK_QUICK_MODELS", "prepare", "read_runs",
           "read_blocks", "comparisons", "block_comparisons"]

# The pairs of Table 2 rows whose difference the paper discusses (Park & Ham 2020, Table 2 and
# the text around it): (A, B) means "A - B".
COMPARISONS = [(3, 1), (3, 2), (4, 3), (5, 4), (6, 4), (7, 4), (8, 5), (8, 6), (8, 7), (9, 4),
               (12, 9), (12, 10), (12, 11), (13, 12), (13, 8)]

LOG_EVERY = 10
"""Head training reports its loss to callbacks (``LivePlot``) every this many steps."""

POWER_GOAL = 1.5
"""mAP points: the half-width every paired 95 % interval of the quick benchmark should reach."""

# Tables 3 and 4 of the paper evaluate single 256-d features of P6 on Market-1501 (mAP, %).
# Which Table 2 rows gave those features is not stated in the paper; it is an INFERENCE:
# Table 3 compares q_i "w/o RM" and "w/ RM" in the one-scale GMP model, i.e. rows 4 and 5;
# Table 4 compares q_0 for the four global poolings in the one-scale model with the relation
# module, i.e. rows 6 (GAP), 5 (GMP), 7 (GAP+GMP) and 8 (GCP). The numbers and the mapping are held
# once, in rrid.paper; these are views of them keyed for the comparisons below.
TABLE3_ROWS = {"w/o RM": _paper.TABLE3_MODELS["without"], "RM": _paper.TABLE3_MODELS["with"]}
TABLE4_ROWS = {r.pooling: r.table2_row for r in _paper.TABLE4}
PAPER_TABLE3 = {r.region: (r.map_without, r.map_with) for r in _paper.TABLE3}   # region i: (w/o RM, RM) mAP
PAPER_TABLE4 = {r.pooling: r.map for r in _paper.TABLE4}                       # q_0 alone, mAP
# Table 3: q_i of row 5 - q_i of row 4, i = 1..6; Table 4: the pairs of global poolings.
TABLE3_COMPARISONS = [(5, 4, f"P6/q{i}") for i in range(1, 7)]
TABLE4_COMPARISONS = [(TABLE4_ROWS[a], TABLE4_ROWS[b], "P6/q0") for a, b in
                      [("GCP", "GAP"), ("GCP", "GMP"), ("GCP", "GAP+GMP"), ("GMP", "GAP"),
                       ("GAP+GMP", "GAP"), ("GAP+GMP", "GMP")]]


# ----------------------------------------------------------------------------- the protocol

@dataclass(frozen=True)
class Protocol:
    """Every number of the head-only protocol (see the module docstring)."""

    # data: one synthetic set, identities split backbone | heads | test
    data_seed: int = 0
    backbone_ids: int = 150
    train_ids: int = 150
    test_ids: int = 300
    images_per_id: int = 10
    height: int = 96
    width: int = 32
    # backbone: identity classification on GAP(x), from scratch, last stride 2, then frozen
    backbone: str = "resnet18"
    backbone_epochs: int = 12
    backbone_batch: int = 64
    backbone_lr: float = 0.05
    backbone_seed: int = 0
    views: int = 4                        # cached views per training image
    # heads: the paper's head recipe (SGD, lr 1e-2, momentum 0.9, weight decay 5e-4, x0.1 steps)
    epochs: int = 10
    p: int = 8
    k: int = 4
    head_lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[int, ...] = (7,)
    # CPU threads of each stage (one, so that a benchmark leaves the other core to the build); part of
    # the keys, since the order of a parallel reduction can change the last bits of a result
    backbone_threads: int = 1
    feature_threads: int = 1
    threads: int = 1                      # head training and evaluation
    model_overrides: dict = field(default_factory=dict, hash=False)  # extra RRIDConfig fields

    def data_key(self) -> dict:
        return {k: getattr(self, k) for k in ("data_seed", "backbone_ids", "train_ids", "test_ids", "images_per_id")}

    def backbone_key(self) -> str:
        keys = ("height", "width", "backbone", "backbone_epochs", "backbone_batch", "backbone_lr", "backbone_seed",
                "backbone_threads")
        return _digest({**self.data_key(), **{k: getattr(self, k) for k in keys}})

    def features_key(self) -> str:
        return _digest({"backbone": self.backbone_key(), "views": self.views, "threads": self.feature_threads})

    def key(self) -> str:
        """A digest of everything that sets a run's numbers: the protocol and the package's
        ``RRIDConfig`` defaults (a new default, e.g. another head initialisation, changes it)."""
        from dataclasses import asdict as _asdict

        return _digest({"protocol": self.as_dict(), "model": _asdict(RRIDConfig(backbone=self.backbone))})

    def as_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d


QUICK = Protocol()
"""The protocol of ``benchmarks/ablation_quick.py`` (the committed results)."""


def _digest(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    """Where backbones and feature caches live: ``rrid.paths.cache_dir()/ablation``."""
    return paths.cache_dir() / "ablation"


def synthetic_split(protocol: Protocol = QUICK, cache_dir=None):
    """The synthetic set of ``protocol`` (generated on first use) cut into its three groups.

    Returns ``(backbone_records, train_records, dataset)``: the backbone identities' and the
    head identities' training images (each relabelled 0..K-1) and the ``Market1501`` data set
    whose ``query`` / ``gallery`` are the test split. The set is written under ``cache_dir``.
    """
    from rrid.data import Market1501, synthetic
    from rrid.data.datasets import relabel

    pr = protocol
    path = synthetic.ensure(_synthetic_path(pr, cache_dir), seed=pr.data_seed,
                            num_train_ids=pr.backbone_ids + pr.train_ids, num_test_ids=pr.test_ids,
                            images_per_id=pr.images_per_id)
    dataset = Market1501(path)
    backbone = relabel([r for r in dataset.train if r.pid < pr.backbone_ids])
    heads = relabel([r for r in dataset.train if r.pid >= pr.backbone_ids])
    return backbone, heads, dataset


def _synthetic_path(protocol: Protocol, cache_dir=None) -> Path:
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return cache / f"synthetic-{_digest(protocol.data_key())}"


def _device() -> torch.device:
    """Where the backbone is trained and the cache computed: a CUDA GPU when there is one (the
    numbers then differ from a CPU build in their last bits), else the CPU. Heads always train
    on the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _build_once(path: Path, make) -> Path:
    """Run ``make(tmp_path)`` unless ``path`` exists; a lock file keeps two processes apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    while not path.is_file():
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:                   # another process builds it: wait
            if time.time() - lock.stat().st_mtime > 3600:
                lock.unlink(missing_ok=True)      # left behind by a killed process
            time.sleep(2)
            continue
        try:
            if not path.is_file():
                with atomic_path(path) as tmp:
                    make(tmp)
        finally:
            lock.unlink(missing_ok=True)
    return path


# ----------------------------------------------------------------------------- backbone

class _IdentityClassifier(nn.Module):
    """The backbone's pre-training model: logits = fc(GAP(net(x))), softmax over identities."""

    def __init__(self, net: nn.Module, fc: nn.Linear):
        super().__init__()
        self.net, self.fc = net, fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net(x).mean(dim=(2, 3)))


class _SoftmaxLoss(nn.Module):
    """Cross-entropy of identity logits, with the parts ``rrid.train.train_step`` reports."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, check: bool = False):
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(1) == labels).float().mean()
        zero = torch.zeros((), device=loss.device)
        return loss, {"total": loss.detach(), "triplet": zero, "ce": loss.detach(), "acc": acc}


def train_backbone(protocol: Protocol = QUICK, cache_dir=None, progress: bool = False) -> nn.Sequential:
    """The frozen backbone of ``protocol`` (trained once, then read from ``cache_dir``).

    ResNet with last stride 2 + GAP + Linear(C, backbone_ids), trained from scratch with
    cross-entropy on the backbone identities (random flip and erasing), SGD momentum 0.9,
    weight decay 5e-4, batches of ``backbone_batch``, lr ``backbone_lr`` with a cosine decay,
    ``backbone_epochs`` epochs. Returned with last stride 1, in eval mode, frozen.
    """
    pr = protocol
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"backbone-{pr.backbone_key()}.pt"

    def make(tmp: Path) -> None:
        records, _, _ = synthetic_split(pr, cache)
        device = _device()
        start = time.perf_counter()
        with runtime.threads(pr.backbone_threads):
            torch.manual_seed(pr.backbone_seed)
            model = _IdentityClassifier(resnet_backbone(pr.backbone, last_stride=2),
                                        nn.Linear(BACKBONES[pr.backbone], pr.backbone_ids)).to(device)
            data = ImageDataset(records, build_transforms(pr.height, pr.width, train=True, erasing="official"), cache={})
            gen = torch.Generator().manual_seed(pr.backbone_seed)
            loader = torch.utils.data.DataLoader(data, batch_size=pr.backbone_batch, shuffle=True, drop_last=True,
                                                 generator=gen)
            optimizer = build_optimizer(model.parameters(), OptimConfig(head_lr=pr.backbone_lr))
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, pr.backbone_epochs * len(loader))
            state = TrainerState(None, model.train(), optimizer, steps_per_epoch=len(loader), step_scheduler=cosine,
                                 criterion=_SoftmaxLoss(), device=device)
            for epoch in range(pr.backbone_epochs):
                torch.manual_seed(pr.backbone_seed * 1000 + epoch)   # augmentation of this epoch
                state.epoch, state.batch, t0 = epoch, 0, time.perf_counter()
                state.sums.zero_()
                record = train_one_epoch(state, ((x.to(device), y.to(device)) for x, y, _ in loader),
                                         log_every=LOG_EVERY)
                if progress:
                    print(f"backbone epoch {epoch + 1}/{pr.backbone_epochs}: loss {record['total']:.3f}, "
                          f"train accuracy {record['acc']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        net = model.net
        torch.save({"backbone": {k: v.cpu() for k, v in net.state_dict().items()}, "protocol": pr.as_dict(),
                    "device": str(device), "seconds": time.perf_counter() - start}, tmp)

    _build_once(path, make)
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = resnet_backbone(pr.backbone, last_stride=1)
    net.load_state_dict(state["backbone"])
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


# ----------------------------------------------------------------------------- feature cache

class FeatureCache(NamedTuple):
    """Backbone feature maps, computed once (float16).

    train_x (V, N, C, H, W): view v of head-training image n (0 plain, 1 mirrored, 2.. augmented);
    train_labels (N,); query_x (2, Q, C, H, W) and gallery_x (2, G, C, H, W): plain and mirrored;
    q_pids, q_camids, g_pids, g_camids: numpy arrays for ``evaluate_ranking``.
    """

    train_x: torch.Tensor
    train_labels: torch.Tensor
    query_x: torch.Tensor
    gallery_x: torch.Tensor
    q_pids: np.ndarray
    q_camids: np.ndarray
    g_pids: np.ndarray
    g_camids: np.ndarray
    info: dict | None = None    # {"protocol": ..., "seconds": of the cache, "backbone_seconds": of the backbone}

    @property
    def num_classes(self) -> int:
        return int(self.train_labels.max()) + 1


def _embed_images(net, records, transform, seed: int, batch: int = 128) -> torch.Tensor:
    """x = net(transform(image)) for ``records``, float16, the transform seeded per batch."""
    from PIL import Image

    from rrid.data.loaders import load_image

    out = []
    device = next(net.parameters()).device
    with torch.inference_mode():
        for s in range(0, len(records), batch):
            torch.manual_seed(seed * 100003 + s)
            imgs = torch.stack([transform(Image.fromarray(load_image(r.path))) for r in records[s:s + batch]])
            out.append(net(imgs.to(device)).to(torch.float16).cpu())
    return torch.cat(out)


def build_features(protocol: Protocol = QUICK, cache_dir=None, progress: bool = False) -> FeatureCache:
    """Compute (or read back) the feature cache of ``protocol``; see :class:`FeatureCache`."""
    pr = protocol
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"features-{pr.features_key()}.pt"

    def make(tmp: Path) -> None:
        from rrid.data import build_transforms

        net = train_backbone(pr, cache, progress=progress)
        backbone_seconds = torch.load(cache / f"backbone-{pr.backbone_key()}.pt", map_location="cpu",
                                      weights_only=True, mmap=True).get("seconds")
        _, train, dataset = synthetic_split(pr, cache)
        plain = build_transforms(pr.height, pr.width, train=False)
        augmented = build_transforms(pr.height, pr.width, train=True, erasing="official")

        def mirrored(img):
            from torchvision.transforms.v2 import functional as TF
            return plain(TF.horizontal_flip(img))

        t1 = time.perf_counter()
        net.to(_device())
        with runtime.threads(pr.feature_threads):
            train_views = [_embed_images(net, train, plain, 0), _embed_images(net, train, mirrored, 1)]
            train_views += [_embed_images(net, train, augmented, v) for v in range(2, pr.views)]
            query = [_embed_images(net, dataset.query, t, 0) for t in (plain, mirrored)]
            gallery = [_embed_images(net, dataset.gallery, t, 0) for t in (plain, mirrored)]
        if progress:
            print(f"feature cache: {len(train)} x {pr.views} training views, {len(dataset.query)} query and "
                  f"{len(dataset.gallery)} gallery images x 2 in {time.perf_counter() - t1:.0f} s", flush=True)
        torch.save({
            "train_x": torch.stack(train_views), "train_labels": torch.tensor([r.pid for r in train]),
            "query_x": torch.stack(query), "gallery_x": torch.stack(gallery),
            "q_pids": torch.tensor([r.pid for r in dataset.query]), "q_camids": torch.tensor([r.camid for r in dataset.query]),
            "g_pids": torch.tensor([r.pid for r in dataset.gallery]),
            "g_camids": torch.tensor([r.camid for r in dataset.gallery]),
            "info": {"protocol": json.dumps(pr.as_dict()), "seconds": time.perf_counter() - t1,
                     "backbone_seconds": backbone_seconds},
        }, tmp)

    _build_once(path, make)
    d = torch.load(path, map_location="cpu", weights_only=True)
    return FeatureCache(d["train_x"], d["train_labels"], d["query_x"], d["gallery_x"],
                        *(d[k].numpy() for k in ("q_pids", "q_camids", "g_pids", "g_camids")), d.get("info"))


def cache_info(protocol: Protocol = QUICK, cache_dir=None) -> dict | None:
    """The ``info`` of the feature cache of ``protocol`` if it was built (None otherwise):
    {"protocol": JSON text, "seconds": wall time of computing the cache, "backbone_seconds": of training
    the backbone (None for a backbone saved by an older version)}."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"features-{protocol.features_key()}.pt"
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("info")


_MEMO: dict = {}


BUILD_NOTE = ("rrid.ablation: building the frozen backbone and its feature cache once, into {cache} "
              "(about {minutes} min on a 2-core CPU; a CUDA GPU, used when present, makes it much faster; "
              "`python -m rrid.ablation prepare` does it ahead of time)")
BUILD_MINUTES_CPU = 7   # prepare's backbone + cache on this project's idle 2-core machine (see DESIGN.md)


def _features_path(protocol: Protocol, cache_dir=None) -> Path:
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return cache / f"features-{protocol.features_key()}.pt"


def features(protocol: Protocol = QUICK, cache_dir=None, progress: bool = False) -> FeatureCache:
    """:func:`build_features`, kept in memory after the first call of a process. A reader who
    did not run ``python -m rrid.ablation prepare`` gets a one-line note before the build."""
    key = (protocol.features_key(), str(cache_dir))
    if key not in _MEMO:
        path = _features_path(protocol, cache_dir)
        if not path.is_file():
            print(BUILD_NOTE.format(cache=path.parent, minutes=BUILD_MINUTES_CPU), flush=True)
        _MEMO[key] = build_features(protocol, cache_dir, progress)
    return _MEMO[key]


# ----------------------------------------------------------------------------- heads

NAMED_ROWS = {"rest_only": (5, {"relation": "rest_only"})}
"""Head variants beside Table 2's rows 1..13, as (row, RRIDConfig fields): "rest_only" is row 5
with q_i = p̄_i + R_p(r̄_i) (``RestOnlyRelation``), the model of the paper's Fig. 6."""


def row_config(row: int | str, backbone: str = "resnet18", **overrides) -> RRIDConfig:
    """The ``RRIDConfig`` of Table 2's ``row`` (1..13) or of a name in :data:`NAMED_ROWS`."""
    if isinstance(row, str):
        if row not in NAMED_ROWS:
            raise ValueError(f"row={row!r}: expected a row of Table 2 (1..{len(TABLE2)}) or one of {list(NAMED_ROWS)}")
        row, fields = NAMED_ROWS[row]
        overrides = {**fields, **overrides}
    return RRIDConfig.table2(row, backbone=backbone, **overrides)


def head_model(row: int | str, seed: int, num_classes: int, backbone: str = "resnet18", **overrides) -> RRID:
    """The ``RRID`` of Table 2's ``row`` (or a name in :data:`NAMED_ROWS`) initialised from
    ``seed`` (as ``rrid.train.build_model``), with its backbone replaced by ``nn.Identity()``:
    it maps feature maps x (N, C, H, W) to the row's embedding (eval) or ``RRIDOutput`` (train)."""
    torch.manual_seed(seed)
    model = RRID(row_config(row, backbone, **overrides), num_classes)
    model.backbone = nn.Identity()
    return model


@dataclass
class HeadState(TrainerState):
    """What callbacks see during head training: ``rrid.train.TrainerState`` and the (row, seed)."""

    row: int | str = 0
    seed: int = 0


class HeadRun(NamedTuple):
    """One trained (row, seed): metrics in %, per-query AP (fraction, NaN = skipped), per-block
    (mAP, rank-1) in %, the per-epoch history and the training wall time."""

    row: int | str
    seed: int
    mAP: float
    rank1: float
    mINP: float
    feature_dim: int
    all_AP: np.ndarray
    blocks: dict
    history: list
    train_seconds: float


def _metrics(emb: torch.Tensor, feats: FeatureCache) -> dict:
    emb = F.normalize(emb, dim=1)
    nq = len(feats.q_pids)
    from rrid.evaluation import pairwise_distance

    return evaluate_ranking(pairwise_distance(emb[:nq], emb[nq:]), feats.q_pids, feats.g_pids,
                            feats.q_camids, feats.g_camids)


def embed_cached(model: RRID, feats: FeatureCache) -> torch.Tensor:
    """(Q + G, D): the flip-averaged embedding (model(x) + model(x mirrored)) / 2 of every query,
    then every gallery image, from the cached maps x; not normalised. A full model (e.g.
    :func:`trained_model`) runs without its backbone here: the cache holds the backbone's output."""
    was, backbone = model.training, model.backbone
    model.eval()
    model.backbone = nn.Identity()
    try:
        with torch.inference_mode():
            x = torch.cat([feats.query_x, feats.gallery_x], dim=1)          # (2, Q + G, C, H, W)
            return sum(torch.cat([model(x[v, s:s + 512].float()) for s in range(0, x.shape[1], 512)])
                       for v in range(2)) / 2
    finally:
        model.backbone = backbone
        model.train(was)


def evaluate_heads(model: RRID, feats: FeatureCache, blocks: bool = True) -> dict:
    """mAP, rank1, mINP (%), all_AP and, with ``blocks``, {block name: (mAP, rank1)} of ``model``
    on the cached test split: flip-averaged embedding (:func:`embed_cached`), L2-normalised,
    Euclidean distances."""
    c = model.config.reduced_dim
    emb = embed_cached(model, feats)
    m = _metrics(emb, feats)
    out = {"mAP": 100 * m["mAP"], "rank1": 100 * float(m["cmc"][0]), "mINP": 100 * m["mINP"],
           "all_AP": np.asarray(m["all_AP"]), "feature_dim": emb.shape[1]}
    if blocks:
        out["blocks"] = {}
        for i, name in enumerate(model.block_names):
            b = _metrics(emb[:, i * c:(i + 1) * c], feats)
            out["blocks"][name] = (100 * b["mAP"], 100 * float(b["cmc"][0]))
    return out


def batches(labels: torch.Tensor, views: int, protocol: Protocol, seed: int, epoch: int):
    """The training batches of ``epoch`` for ``seed``: (image indices, view indices) pairs.

    P x K images from ``PKSampler(seed)`` ("once" epochs), and for each a cached view drawn
    from ``numpy.random.default_rng([seed, epoch])``. A function of (seed, epoch) only, so
    every row trained with the same seed sees the same batches.
    """
    from rrid.data import PKSampler

    sampler = PKSampler(labels.tolist(), p=protocol.p, k=protocol.k, epoch_length="once", seed=seed)
    sampler.set_epoch(epoch)
    rng = np.random.default_rng([seed, epoch])
    for batch in sampler:
        yield torch.tensor(batch), torch.from_numpy(rng.integers(views, size=len(batch)))


def train_heads(row: int | str, seed: int, protocol: Protocol = QUICK, feats: FeatureCache | None = None,
                callbacks: Sequence = (), eval_every: int = 0, cache_dir=None) -> HeadRun:
    """Train the heads of Table 2's ``row`` (or a name in :data:`NAMED_ROWS`, e.g. "rest_only")
    for ``seed`` on the cached features; evaluate.

    Per step: a batch of cached maps (:func:`batches`), L = L_triplet + λ L_ce (``RRIDLoss``,
    Eq. 3), one SGD step on the heads (lr ``head_lr``, x0.1 at ``milestones``). ``callbacks``
    get ``on_fit_start``, ``on_step(state, logs)`` (logs as in ``rrid.fit``), ``on_epoch``,
    ``on_eval(state, metrics)`` (fractions; every ``eval_every`` epochs and after the last
    when ``eval_every`` > 0) and ``on_fit_end``. ``train_seconds`` excludes evaluation.
    """
    return _fit_heads(row, seed, protocol, feats, callbacks, eval_every, cache_dir)[1]


def _fit_heads(row, seed, protocol, feats=None, callbacks=(), eval_every=0, cache_dir=None) -> tuple[RRID, HeadRun]:
    """:func:`train_heads`, returning the trained head model (eval mode) with its run. The loop is
    ``rrid.train``'s: :func:`rrid.train.train_one_epoch` over cached maps, the recipe's optimiser."""
    pr = protocol
    feats = feats if feats is not None else features(pr, cache_dir)
    labels, views = feats.train_labels, feats.train_x.shape[0]
    with runtime.threads(pr.threads):
        model = head_model(row, seed, feats.num_classes, pr.backbone, **pr.model_overrides)
        model.train()
        recipe = OptimConfig(head_lr=pr.head_lr, momentum=pr.momentum, weight_decay=pr.weight_decay,
                             milestones=pr.milestones)
        optimizer = build_optimizer(model.parameters(), recipe)
        scheduler = build_scheduler(optimizer, recipe)
        state = HeadState(None, model, optimizer, scheduler=scheduler, row=row, seed=seed)
        for cb in callbacks:
            cb.on_fit_start(state)
        history, t0, eval_seconds = [], time.perf_counter(), 0.0
        for epoch in range(pr.epochs):
            epoch_batches = list(batches(labels, views, pr, seed, epoch))
            state.epoch, state.batch, state.steps_per_epoch = epoch, 0, len(epoch_batches)
            state.sums.zero_()
            cached = ((feats.train_x[view, idx].float(), labels[idx]) for idx, view in epoch_batches)
            entry = {"epoch": epoch, **train_one_epoch(state, cached, callbacks, log_every=LOG_EVERY),
                     "step": state.step}
            scheduler.step()
            for cb in callbacks:
                cb.on_epoch(state, entry)
            if eval_every and ((epoch + 1) % eval_every == 0 or epoch + 1 == pr.epochs):
                e0 = time.perf_counter()
                m = evaluate_heads(model, feats, blocks=False)
                eval_seconds += time.perf_counter() - e0
                entry.update(mAP=m["mAP"], rank1=m["rank1"])
                for cb in callbacks:
                    cb.on_eval(state, {"mAP": m["mAP"] / 100, "rank1": m["rank1"] / 100})
            history.append(entry)
        seconds = time.perf_counter() - t0 - eval_seconds
        for cb in callbacks:
            cb.on_fit_end(state)
        m = evaluate_heads(model, feats)
    return model.eval(), HeadRun(row, seed, m["mAP"], m["rank1"], m["mINP"], m["feature_dim"], m["all_AP"],
                                 m["blocks"], history, seconds)


def live_ablation(row_a: int = 4, row_b: int = 5, seed: int = 0, protocol: Protocol = QUICK,
                  plot=None, eval_every: int = 5, cache_dir=None) -> dict[int, HeadRun]:
    """Train two rows of Table 2 with the same seed, their curves overlaid in one ``LivePlot``.

    Returns {row: HeadRun}; ``plot``: a callback with ``new_run(label)``, such as
    ``rrid.viz.LivePlot()``, which then keeps the figure (``plot.fig``); None trains without
    one. The feature cache is built on the first call, then read back.
    """
    feats = features(protocol, cache_dir)
    runs = {}
    for row in (row_a, row_b):
        if plot is not None:
            plot.new_run(f"row {row}")
        runs[row] = train_heads(row, seed, protocol, feats, callbacks=[plot] if plot is not None else [],
                                eval_every=eval_every)
    return runs


# ----------------------------------------------------------------------------- trained models, rankings

def _trained_path(row: int | str, seed: int, protocol: Protocol, cache_dir=None) -> Path:
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = row if isinstance(row, str) else f"row{row:02d}"
    return cache / f"heads-{protocol.key()}-{name}-seed{seed}.pt"


def _trained(row: int | str, seed: int, protocol: Protocol, cache_dir=None) -> dict:
    """The file of (row, seed) under ``protocol``: trained once with :func:`train_heads`, then read."""
    row_config(row, protocol.backbone, **protocol.model_overrides)     # a bad row fails before any work
    path = _trained_path(row, seed, protocol, cache_dir)

    def make(tmp: Path) -> None:
        model, run = _fit_heads(row, seed, protocol, features(protocol, cache_dir))
        torch.save({"heads": model.heads.state_dict(), "num_classes": model.num_classes, "protocol": protocol.key(),
                    "run": {**run._asdict(), "all_AP": torch.from_numpy(run.all_AP)}}, tmp)

    _build_once(path, make)
    return torch.load(path, map_location="cpu", weights_only=True)


def trained_run(row: int | str, seed: int = 0, protocol: Protocol = QUICK, cache_dir=None) -> HeadRun:
    """The :class:`HeadRun` (metrics, per-query AP, blocks, history) of :func:`trained_model`'s heads."""
    run = _trained(row, seed, protocol, cache_dir)["run"]
    return HeadRun(**{**run, "all_AP": run["all_AP"].numpy()})


def trained_model(row: int | str, seed: int = 0, protocol: Protocol = QUICK, cache_dir=None) -> RRID:
    """The full model of ``row`` (Table 2's 1..13 or "rest_only") for the book's figures.

    The frozen backbone of ``protocol`` (:func:`train_backbone`, last stride 1) with the heads
    of ``row`` trained on the feature cache by ``train_heads(row, seed, protocol)``, in eval
    mode on the CPU: ``model(images)`` is the embedding of real images (N, 3, H, W) at the
    protocol's ``height`` x ``width`` (:func:`images`), ``model.forward_features(images)`` the
    intermediate tensors. The heads are trained on the first call and kept under the cache
    (``heads-<protocol key>-<row>-seed<seed>.pt``, with the run's metrics: :func:`trained_run`);
    later calls load them. The global random state of the caller is left as it was.
    """
    with torch.random.fork_rng(devices=[]):           # training and head_model seed the global generator
        d = _trained(row, seed, protocol, cache_dir)
        model = head_model(row, seed, d["num_classes"], protocol.backbone, **protocol.model_overrides)
        model.heads.load_state_dict(d["heads"])
        model.backbone = train_backbone(protocol, cache_dir)
    return model.eval()


def images(paths, protocol: Protocol = QUICK) -> torch.Tensor:
    """(N, 3, H, W): the images at ``paths`` (paths or records with ``.path``, e.g. a
    ``Ranking``'s ``query.paths``) through the test transform at the protocol's size: the
    plain view the cache holds."""
    from PIL import Image

    from rrid.data import build_transforms
    from rrid.data.loaders import load_image

    plain = build_transforms(protocol.height, protocol.width, train=False)
    return torch.stack([plain(Image.fromarray(load_image(getattr(p, "path", p)))) for p in paths])


def rank(model_or_row, seed: int = 0, protocol: Protocol = QUICK, blocks=None, cache_dir=None):
    """The test split of ``protocol`` ranked by a model, from the cached maps (no re-embedding).

    ``model_or_row``: a model (a :func:`trained_model`, or a :func:`head_model`) or a row for
    ``trained_model(row, seed, protocol)``. Returns an ``rrid.retrieval.Ranking`` as
    ``rrid.retrieval.rank`` builds one: the flip-averaged embedding (:func:`embed_cached`),
    L2-normalised (after slicing, with ``blocks`` such as ``["P6/q0"]``), Euclidean distances;
    the query and gallery ``Features`` carry the images' paths, identities and cameras.
    """
    from rrid.evaluation import Features
    from rrid.retrieval import Ranking, block_columns

    model = model_or_row if isinstance(model_or_row, nn.Module) else trained_model(model_or_row, seed, protocol,
                                                                                   cache_dir)
    feats = features(protocol, cache_dir)
    with runtime.threads(protocol.threads):
        emb = embed_cached(model, feats)
    if blocks is not None:
        emb = emb[:, block_columns(model, blocks)]
    emb = F.normalize(emb, dim=1)
    _, _, dataset = synthetic_split(protocol, cache_dir)
    if not (np.array_equal([r.pid for r in dataset.query], feats.q_pids)
            and np.array_equal([r.pid for r in dataset.gallery], feats.g_pids)):
        raise RuntimeError(f"the feature cache {_features_path(protocol, cache_dir)} does not list the test split of "
                           f"{_synthetic_path(protocol, cache_dir)} in order: delete both and build them again")
    nq = len(feats.q_pids)
    return Ranking.from_features(
        Features(emb[:nq], feats.q_pids, feats.q_camids, [str(r.path) for r in dataset.query]),
        Features(emb[nq:], feats.g_pids, feats.g_camids, [str(r.path) for r in dataset.gallery]))


# ----------------------------------------------------------------------------- preparation

BOOK_MODELS = ((4, 0), (5, 0), ("rest_only", 0), (6, 0), (7, 0), (8, 0), (13, 0))
"""(row, seed) of the :func:`trained_model` s the book's chapters draw, trained by :func:`prepare`."""

BOOK_QUICK_MODELS = (13,)
"""Rows whose end-to-end quick model (``rrid.book.quick_model(row)``, not head-only) the chapters
load; the command line's ``prepare`` trains them too (minutes each on a 2-core CPU: longer than
a chapter's cell should take)."""


def prepare(protocol: Protocol = QUICK, cache_dir=None, models=BOOK_MODELS, out=print,
            quick_models=(), ablation: bool = True) -> dict[str, float]:
    """Build everything the book's chapters read, once: the synthetic split, the backbone, the
    feature cache and the heads of ``models`` ((row, seed) pairs), then the end-to-end quick
    models of ``quick_models`` (rows for ``rrid.book.quick_model``, kept in ``rrid.paths.cache_dir()``
    whatever ``cache_dir`` is; ``python -m rrid.ablation prepare`` passes
    :data:`BOOK_QUICK_MODELS`). ``ablation=False`` builds the quick models alone (no synthetic
    split, backbone, features or heads), so that ``make test`` can train them in a second process
    beside the head-only chain, whose backbone trains on one thread. Each step is skipped when its
    file exists (idempotent; atomic and locked as every build here). Prints a line per step and
    returns {step: seconds}."""
    import rrid.book
    pr = protocol
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    start, seconds = time.perf_counter(), {}

    def step(name: str, path: Path, build, what: str) -> None:
        found = path.exists()
        t0 = time.perf_counter()
        build()
        seconds[name] = time.perf_counter() - t0
        out(f"  {what}: " + (f"found ({path.name})" if found else f"built in {seconds[name]:.0f} s"), flush=True)

    out(f"rrid.ablation prepare: protocol {pr.key()}, cache {cache}", flush=True)
    if ablation:
        step("synthetic set", _synthetic_path(pr, cache), lambda: synthetic_split(pr, cache),
             f"synthetic set ({pr.backbone_ids} + {pr.train_ids} + {pr.test_ids} identities)")
        step("backbone", cache / f"backbone-{pr.backbone_key()}.pt", lambda: train_backbone(pr, cache, progress=True),
             f"backbone ({pr.backbone}, {pr.backbone_epochs} epochs on {_device().type}, {pr.backbone_threads} thread(s))")
        step("feature cache", _features_path(pr, cache), lambda: build_features(pr, cache, progress=True),
             f"feature cache ({pr.views} training views, test images plain and mirrored)")
        for row, seed in models:
            step(f"heads {row} seed {seed}", _trained_path(row, seed, pr, cache), lambda: _trained(row, seed, pr, cache),
                 f"heads of row {row}, seed {seed}")
    for row in quick_models:
        step(f"quick model {row}", rrid.book.quick_model_path(row), lambda: rrid.book.quick_model(row),
             f"end-to-end quick model of row {row} (rrid.book.quick_model, {rrid.book.quick_config_path(row).name})")
    seconds["total"] = time.perf_counter() - start
    out(f"rrid.ablation prepare: done in {seconds['total']:.0f} s", flush=True)
    return seconds


def _model_spec(text: str) -> tuple[int | str, int]:
    """"5", "13:2" or "rest_only" -> (row, seed)."""
    row, _, seed = text.partition(":")
    try:
        spec = (int(row) if row.isdigit() else row, int(seed or 0))
        row_config(spec[0])
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--models {text!r}: expected ROW[:SEED], ROW in 1..{len(TABLE2)} or "
                                         f"{list(NAMED_ROWS)} ({e})") from None
    return spec


def _quick_spec(text: str) -> int | str:
    """"13" or "rest_only" -> a row for ``rrid.book.quick_model`` (its config must exist)."""
    import rrid.book

    row = int(text) if text.isdigit() else text
    try:
        rrid.book.quick_config_path(row)
    except FileNotFoundError as e:
        raise argparse.ArgumentTypeError(f"--quick-models {text!r}: {e}") from None
    return row


def main(argv=None) -> int:
    """``python -m rrid.ablation prepare [--cache-dir DIR] [--models ROW[:SEED] ...] [--quick-models ROW ...]
    [--quick-only]``."""
    ap = argparse.ArgumentParser(prog="python -m rrid.ablation", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    pp = sub.add_parser("prepare", help="build the synthetic split, the backbone, the feature cache and the book's "
                                        "trained heads (skipped when built)")
    pp.add_argument("--cache-dir", type=Path, default=None, help="default: rrid.paths.cache_dir()/ablation")
    pp.add_argument("--models", type=_model_spec, nargs="*", default=list(BOOK_MODELS), metavar="ROW[:SEED]",
                    help="heads to train for trained_model (default: BOOK_MODELS; none with an empty list)")
    pp.add_argument("--quick-models", type=_quick_spec, nargs="*", default=list(BOOK_QUICK_MODELS), metavar="ROW",
                    help="end-to-end quick models to train for rrid.book.quick_model, into rrid.paths.cache_dir() "
                         "(default: BOOK_QUICK_MODELS; none with an empty list)")
    pp.add_argument("--quick-only", action="store_true",
                    help="build only the end-to-end quick models (no synthetic split, backbone, features or heads)")
    args = ap.parse_args(argv)
    prepare(QUICK, args.cache_dir, args.models, quick_models=args.quick_models, ablation=not args.quick_only)
    return 0


# ----------------------------------------------------------------------------- results

class Comparison(NamedTuple):
    """Row ``a`` - row ``b`` (or their ``block``): the paper's difference, the quick one, the verdict."""

    a: int
    b: int
    block: str | None
    paper: float
    quick: object      # rrid.stats.PairedDifference
    verdict: str


def read_runs(path) -> dict[int, dict[int, dict]]:
    """``ablation_quick.csv`` as {row: {seed: {"mAP": ..., "rank1": ..., "mINP": ...}}}."""
    out: dict[int, dict[int, dict]] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out.setdefault(int(r["row"]), {})[int(r["seed"])] = {k: float(r[k]) for k in ("mAP", "rank1", "mINP")}
    return out


def read_blocks(path) -> dict[tuple[int, str], dict[int, dict]]:
    """``blocks_quick.csv`` as {(row, block): {seed: {"mAP": ..., "rank1": ...}}}."""
    out: dict = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out.setdefault((int(r["row"]), r["block"]), {})[int(r["seed"])] = {k: float(r[k]) for k in ("mAP", "rank1")}
    return out


def _paired(per_seed_a: dict, per_seed_b: dict, key: str, confidence: float):
    seeds = sorted(set(per_seed_a) & set(per_seed_b))
    return paired_difference([per_seed_a[s][key] for s in seeds], [per_seed_b[s][key] for s in seeds], confidence)


def comparisons(runs: dict, pairs=COMPARISONS, key: str = "mAP", confidence: float = 0.95) -> list[Comparison]:
    """Paired intervals over the seeds both rows have, for each (A, B) in ``pairs``, with the
    paper's Market-1501 difference (``TABLE2``) and :func:`rrid.stats.verdict`."""
    out = []
    for a, b in pairs:
        paper = getattr(TABLE2[a - 1], "market_map" if key == "mAP" else "market_rank1") - \
            getattr(TABLE2[b - 1], "market_map" if key == "mAP" else "market_rank1")
        d = _paired(runs[a], runs[b], key, confidence)
        out.append(Comparison(a, b, None, round(paper, 2), d, verdict(d, paper)))
    return out


def block_comparisons(blocks: dict, pairs=TABLE3_COMPARISONS + TABLE4_COMPARISONS, confidence: float = 0.95) -> list[Comparison]:
    """Paired mAP intervals of single blocks (Tables 3 and 4), with the paper's difference."""
    pool_of = {row: name for name, row in TABLE4_ROWS.items()}
    out = []
    for a, b, block in pairs:
        if block == "P6/q0":
            paper = PAPER_TABLE4[pool_of[a]] - PAPER_TABLE4[pool_of[b]]
        else:
            wo, rm = PAPER_TABLE3[int(block[-1])]
            paper = (rm - wo) if (a, b) == (TABLE3_ROWS["RM"], TABLE3_ROWS["w/o RM"]) else (wo - rm)
        d = _paired(blocks[a, block], blocks[b, block], "mAP", confidence)
        out.append(Comparison(a, b, block, round(paper, 2), d, verdict(d, paper)))
    return out


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    raise SystemExit(main())
