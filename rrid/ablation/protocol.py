"""The head-only protocol's shared part: one synthetic set, one frozen backbone, one feature cache.

Steps 1-3 of :mod:`rrid.ablation`: the set is cut into backbone, head-training and test
identities (:func:`synthetic_split`); the backbone is trained once on its identities with a
softmax over them (:func:`train_backbone`, on ``rrid.train``'s step) and frozen; its feature maps
of every head-training view and test image are computed once (:func:`build_features`). Each is
built into the cache folder under a key of the protocol's numbers, atomically and under a lock,
and read back afterwards.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as TF

from rrid import paths, runtime
from rrid.config import OptimConfig
from rrid.data import ImageDataset, Market1501, build_transforms, synthetic
from rrid.data.datasets import relabel
from rrid.data.loaders import load_image
from rrid.files import build_once
from rrid.losses import SoftmaxLoss
from rrid.model import BACKBONES, RRIDConfig, resnet_backbone
from rrid.train import TrainerState, build_optimizer, train_one_epoch

__all__ = ["Protocol", "QUICK", "FeatureCache", "LOG_EVERY", "synthetic_split", "train_backbone", "build_features",
           "features", "cache_info", "images", "default_cache_dir", "cache_file"]

LOG_EVERY = 10
"""Head training reports its loss to callbacks (``LivePlot``) every this many steps."""


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
        return _digest({"protocol": self.as_dict(), "model": asdict(RRIDConfig(backbone=self.backbone))})

    def as_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    # What every protocol answers (``rrid.ablation.FullProtocol`` too); methods, not fields, so
    # that the digests above stay those of the committed results.

    def features_path(self, cache_dir=None) -> Path:
        """The feature cache's file: :func:`cache_file` (self, "features")."""
        return cache_file(self, "features", cache_dir)

    def make_features(self, cache_dir=None, progress: bool = False) -> "FeatureCache":
        """Build (or read back) the feature cache: :func:`build_features`."""
        return build_features(self, cache_dir, progress)

    def build_note(self, path: Path) -> str:
        """The line :func:`features` prints before building the cache at ``path``."""
        return BUILD_NOTE.format(cache=path.parent, minutes=BUILD_MINUTES_CPU)

    def frozen_backbone(self, cache_dir=None) -> nn.Sequential:
        """The frozen backbone the cache was computed with: :func:`train_backbone`."""
        return train_backbone(self, cache_dir)

    def test_records(self, cache_dir=None) -> tuple[list, list]:
        """(query, gallery) records of the test split, in the cache's order."""
        _, _, dataset = synthetic_split(self, cache_dir)
        return dataset.query, dataset.gallery

    def head_device(self) -> torch.device:
        """Where heads train and are scored: the CPU (``threads`` of it), so that runs repeat bit for bit."""
        return torch.device("cpu")

    def scores_blocks(self, row) -> bool:
        """Whether a run of ``row`` scores each 256-d block alone too (every row here)."""
        return True

    def describe(self) -> list[str]:
        """The data and the backbone, in a line each (chapter 9 prints them)."""
        return [f"one synthetic set; {self.backbone_ids} identities train the backbone, {self.train_ids} others the "
                f"heads, {self.test_ids} others form the test split; {self.images_per_id} images each, "
                f"{self.height} x {self.width}",
                f"{self.backbone} from scratch, {self.backbone_epochs} epochs, then frozen (last stride 1)"]


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
    pr = protocol
    path = synthetic.ensure(cache_file(pr, "synthetic", cache_dir), seed=pr.data_seed,
                            num_train_ids=pr.backbone_ids + pr.train_ids, num_test_ids=pr.test_ids,
                            images_per_id=pr.images_per_id)
    dataset = Market1501(path)
    backbone = relabel([r for r in dataset.train if r.pid < pr.backbone_ids])
    heads = relabel([r for r in dataset.train if r.pid >= pr.backbone_ids])
    return backbone, heads, dataset


def cache_file(protocol: Protocol, what: str, cache_dir=None) -> Path:
    """Where ``what`` ("synthetic" set, "backbone", "features") of ``protocol`` is kept: under
    ``cache_dir`` (default :func:`default_cache_dir`), named by a digest of the numbers that set it."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    names = {"synthetic": f"synthetic-{_digest(protocol.data_key())}", "backbone": f"backbone-{protocol.backbone_key()}.pt",
             "features": f"features-{protocol.features_key()}.pt"}
    return cache / names[what]


def _device() -> torch.device:
    """Where the backbone is trained and the cache computed: a CUDA GPU when there is one (the
    numbers then differ from a CPU build in their last bits), else the CPU. This protocol's heads
    always train on the CPU (``Protocol.head_device``); ``FullProtocol``'s go here too."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------- backbone

class _IdentityClassifier(nn.Module):
    """The backbone's pre-training model: logits = fc(GAP(net(x))), softmax over identities."""

    def __init__(self, net: nn.Module, fc: nn.Linear):
        super().__init__()
        self.net, self.fc = net, fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net(x).mean(dim=(2, 3)))


def train_backbone(protocol: Protocol = QUICK, cache_dir=None, progress: bool = False) -> nn.Sequential:
    """The frozen backbone of ``protocol`` (trained once, then read from ``cache_dir``).

    ResNet with last stride 2 + GAP + Linear(C, backbone_ids), trained from scratch with
    cross-entropy on the backbone identities (random flip and erasing), SGD momentum 0.9,
    weight decay 5e-4, batches of ``backbone_batch``, lr ``backbone_lr`` with a cosine decay,
    ``backbone_epochs`` epochs. Returned with last stride 1, in eval mode, frozen.
    """
    pr = protocol
    path = cache_file(pr, "backbone", cache_dir)

    def make(tmp: Path) -> None:
        records, _, _ = synthetic_split(pr, cache_dir)
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
                                 criterion=SoftmaxLoss(), device=device)
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

    build_once(path, make)
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
    q_pids, q_camids, g_pids, g_camids: numpy arrays for ``evaluate_ranking``. In a
    ``FullProtocol``'s cache the maps are ``rrid.ablation.bands.BandMap``s of the same shapes: each
    band's max and sum, all the heads read (:mod:`rrid.ablation.full`).
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
    path = cache_file(pr, "features", cache_dir)

    def make(tmp: Path) -> None:
        net = train_backbone(pr, cache_dir, progress=progress)
        backbone_seconds = torch.load(cache_file(pr, "backbone", cache_dir), map_location="cpu",
                                      weights_only=True, mmap=True).get("seconds")
        _, train, dataset = synthetic_split(pr, cache_dir)
        plain = build_transforms(pr.height, pr.width, train=False)
        augmented = build_transforms(pr.height, pr.width, train=True, erasing="official")

        def mirrored(img):
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

    build_once(path, make)
    d = torch.load(path, map_location="cpu", weights_only=True)
    return FeatureCache(d["train_x"], d["train_labels"], d["query_x"], d["gallery_x"],
                        *(d[k].numpy() for k in ("q_pids", "q_camids", "g_pids", "g_camids")), d.get("info"))


def cache_info(protocol: Protocol = QUICK, cache_dir=None) -> dict | None:
    """The ``info`` of the feature cache of ``protocol`` if it was built (None otherwise):
    {"protocol": JSON text, "seconds": wall time of computing the cache, "backbone_seconds": of training
    the backbone (None for a backbone saved by an older version)}."""
    path = protocol.features_path(cache_dir)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("info")


_MEMO: dict = {}


BUILD_NOTE = ("rrid.ablation: building the frozen backbone and its feature cache once, into {cache} "
              "(about {minutes} min on a 2-core CPU; a CUDA GPU, used when present, makes it much faster; "
              "`python -m rrid prepare-book` does it ahead of time)")
BUILD_MINUTES_CPU = 7   # prepare's backbone + cache on this project's idle 2-core machine (see DESIGN.md)


def features(protocol: Protocol = QUICK, cache_dir=None, progress: bool = False) -> FeatureCache:
    """The protocol's feature cache (:func:`build_features`; ``FullProtocol``'s band statistics),
    kept in memory after the first call of a process. A reader who did not build it ahead
    (``python -m rrid prepare-book``) gets a one-line note before the build."""
    key = (protocol.features_key(), str(cache_dir))
    if key not in _MEMO:
        path = protocol.features_path(cache_dir)
        if not path.is_file():
            print(protocol.build_note(path), flush=True)
        _MEMO[key] = protocol.make_features(cache_dir, progress)
    return _MEMO[key]



def images(paths, protocol: Protocol = QUICK) -> torch.Tensor:
    """(N, 3, H, W): the images at ``paths`` (paths or records with ``.path``, e.g. a
    ``Ranking``'s ``query.paths``) through the test transform at the protocol's size: the
    plain view the cache holds."""
    plain = build_transforms(protocol.height, protocol.width, train=False)
    return torch.stack([plain(Image.fromarray(load_image(getattr(p, "path", p)))) for p in paths])

