"""The head-only protocol at paper scale: Market-1501 at 384 x 128 on a frozen ImageNet ResNet-50.

``FULL`` is the protocol of :mod:`rrid.ablation` with the paper's data, input size and backbone
(chapter 9's full mode, ``benchmarks/ablation_quick.py --protocol full``): the same rows, the
same seeding (a seed gives every row the same batches, views and shared initial weights), the
same paired intervals and verdicts; only what the heads read, and where, changes.

**Why band statistics.** At 384 x 128 with last stride 1, ResNet-50's map x is 2048 x 24 x 8:
393,216 numbers, 786 KB in float16. QUICK caches maps; here that would be 786 KB x (about 11,200
head-training images x 4 views + 19,281 test images x 2) = 66 GB, far beyond a T4 (16 GB) or a
Colab session's memory (12.7 GB), and recomputing the backbone for every run would cost the
backbone's time 13 rows x seeds times over. But every head reads x only through pooling over
whole rows (:mod:`rrid.ablation.bands`): the 8 bands that the stripes of P6, P4 and P2 cut the
24 rows into, their maximum and their sum, determine every head's input, exactly for GMP and up
to float rounding for GAP. That is 8 x 2 x 2048 float16 = 64 KiB per view, 1/12 of the map:
about 5 GiB for the whole cache (``rrid.ablation.estimate.cache_bytes`` computes it from the
data), which fits a T4 beside the heads, or a Colab session's memory while it is built. The
heads are the package's own ``RRID`` of each row, unchanged: a
:class:`~rrid.ablation.bands.BandMap` stands in for x (``tests/test_ablation_full.py`` checks
that all 13 rows and the rest-only model give the same embeddings and losses from it).

**Data.** The prepared Market-1501 (``python -m rrid prepare market1501``; ``root``, read like a
config's ``data.root``), test split as released. Training: the first 651 of its 751 identities,
the last ``val_ids`` = 100 held out, as the authors' code does and ``configs/base.yaml`` sets:
the paper's numbers, which every verdict is compared with, come from that code, and the
end-to-end configs of the project train the same 651 (all 751, as the paper's text implies,
is ``val_ids=0``).

**Backbone.** torchvision's ResNet-50 with its ImageNet weights (``rrid.weights``: downloaded
once into torch's cache, checked against its SHA-256), last stride 1, frozen: no training at
all, so the protocol has no backbone recipe of its own to defend. It is the paper's starting
point; QUICK had to train its ResNet-18 because synthetic images have no ImageNet.

**Views.** Plain and mirrored, as the flip-averaged evaluation needs for the test images; the
training images get ``views - 2`` = 2 more, each with a random flip and the authors' random
erasing (drawn once, from a seed per image, like QUICK's). Erasing cannot be applied to band
statistics afterwards: it acts on pixels, and through the receptive fields it changes every
cell of the map, so each erased view is one more pass of the backbone over the training set
(11k images) and 0.7 GiB of cache; two keep the cache within a T4's memory.

**Heads.** The paper's head recipe at its batch size: SGD, lr 1e-2, momentum 0.9, weight decay
5e-4, P x K = 16 x 4 = 64; ``epochs`` = 10 "once" epochs (each image about once an epoch:
about 175 steps) with lr x0.1 after 7, QUICK's schedule, since heads on a frozen backbone need
far fewer steps than the 65,000 of end-to-end training. Scored like QUICK, flip-averaged, the
whole embedding for every row; single 256-d blocks only for the rows that Tables 3 and 4 read
(``block_rows``: 4-8), since each scoring of Market-1501's 3,368 x 15,913 ranking takes a second
of CPU and the other rows' blocks would add minutes per seed that no comparison uses.

**Time.** ``rrid.ablation.estimate`` measures the backbone, a head step of every row and one
ranking on the machine that runs, and the benchmark prints that estimate before it starts. Its
T4 figure (no GPU needed) takes the backbone from NVIDIA's published ResNet-50 throughput and
the heads from their per-operation cost measured on a CPU (a step of a row's heads does a few
GFLOPs, a millisecond on a T4: it is bound by launching thousands of small operations), doubled
for what neither figure sees. On this project's machine it came to 33-50 min for 13 rows x 5
seeds (a feature cache of 4 min, then 6-9 min a seed), so ``seeds`` = 5, QUICK's seeds 0-4: the
hour holds the estimate's uncertainty, and the estimate printed on the GPU says how many more
seeds fit there (``--seeds 0 1 ... 8``; results are written after every run, so a session that
ends, or more seeds later, resume where it stopped).

``SMOKE`` runs the same code paths with the smallest amounts (``RRID_SMOKE=1``): market1501-mini
standing in for Market-1501, a randomly initialised ResNet-50 for ImageNet's (which cannot be
downloaded where CI runs), 96 x 32 inputs, a few identities, one epoch. Its numbers are not
results.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF

from rrid import paths, runtime
from rrid.config import feature_map_height
from rrid.data import Market1501, build_transforms
from rrid.data.datasets import ImageRecord, relabel
from rrid.data.loaders import load_image
from rrid.files import build_once
from rrid.model import BACKBONES, TABLE2, RRIDConfig, resnet_backbone
from rrid.train import hold_out_ids

from .bands import BandMap, band_bounds, band_statistics
from .protocol import FeatureCache, _device, _digest, default_cache_dir

__all__ = ["FullProtocol", "FULL", "SMOKE", "SCALES", "market_split", "frozen_backbone", "build_bands",
           "smoke_protocol"]

SCALES = tuple(sorted({n for t in TABLE2 for n in t.scales}))
"""The stripe counts of every Table 2 row (2, 4, 6): the bands are cut for all of them."""

NOT_IN_KEYS = ("root", "seeds", "workers")
"""Fields that change no number of a run: where the data is, how many seeds the benchmark runs by
default, how many processes load images."""


@dataclass(frozen=True)
class FullProtocol:
    """Every number of the full head-only protocol (see the module docstring)."""

    # data: the prepared Market-1501; training ids but the last val_ids train the heads
    root: str = "data/market1501"          # relative to the project folder (rrid.paths.resolve)
    val_ids: int = 100
    max_ids: int = 0                       # > 0: only the first max_ids training and test ids (smoke)
    height: int = 384
    width: int = 128
    # backbone: torchvision's ImageNet ResNet-50, last stride 1, frozen
    backbone: str = "resnet50"
    imagenet: bool = True                  # False: random weights from weights_seed (smoke, no download)
    weights_seed: int = 0
    views: int = 4                         # plain, mirrored, views - 2 with flip and erasing
    batch: int = 128                       # images per backbone batch
    workers: int = 2                       # image-loading processes of the cache build
    # heads: the paper's head recipe at its batch size, QUICK's schedule
    epochs: int = 10
    p: int = 16
    k: int = 4
    head_lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[int, ...] = (7,)
    block_rows: tuple[int, ...] = (4, 5, 6, 7, 8)   # rows whose 256-d blocks are scored alone
    seeds: int = 5                         # the benchmark's default: seeds 0 .. seeds - 1 (QUICK's)
    threads: int = 0                       # CPU threads of head training (0: torch's default)
    model_overrides: dict = field(default_factory=dict, hash=False)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["milestones"], d["block_rows"] = list(self.milestones), list(self.block_rows)
        return d

    def key(self) -> str:
        """A digest of everything that sets a run's numbers (not where the data is): the protocol
        and the package's ``RRIDConfig`` defaults, as ``Protocol.key``."""
        numbers = {k: v for k, v in self.as_dict().items() if k not in NOT_IN_KEYS}
        return _digest({"protocol": numbers, "model": asdict(RRIDConfig(backbone=self.backbone))})

    def features_key(self) -> str:
        """A digest of what the band cache holds: the images (their names), the backbone, the views."""
        fields = ("val_ids", "max_ids", "height", "width", "backbone", "imagenet", "weights_seed", "views", "batch")
        return _digest({"data": _split_digest(self), **{k: getattr(self, k) for k in fields}})

    def data_root(self) -> Path:
        return paths.resolve(self.root)

    def features_path(self, cache_dir=None) -> Path:
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        return cache / f"bands-{self.features_key()}.pt"

    def make_features(self, cache_dir=None, progress: bool = False) -> FeatureCache:
        return build_bands(self, cache_dir, progress)

    def build_note(self, path: Path) -> str:
        weights = "ImageNet" if self.imagenet else "randomly initialised"
        return (f"rrid.ablation: computing the band statistics of {self.data_root()} once ({weights} {self.backbone}, "
                f"{self.views} training views, test images plain and mirrored), into {path.parent}")

    def frozen_backbone(self, cache_dir=None) -> torch.nn.Sequential:
        """The frozen backbone the cache was computed with (:func:`frozen_backbone`)."""
        return frozen_backbone(self)

    def test_records(self, cache_dir=None) -> tuple[list, list]:
        """(query, gallery) records of the test split, in the cache's order."""
        return market_split(self)[1:]

    def head_device(self) -> torch.device:
        """Where heads train and are scored: a CUDA GPU when there is one, else the CPU."""
        return _device()

    def scores_blocks(self, row) -> bool:
        return row in self.block_rows

    def describe(self) -> list[str]:
        """The data and the backbone, in a line each (chapter 9 prints them)."""
        ids = "all its training identities" if not self.val_ids else \
            f"its training identities but the last {self.val_ids} (held out, as the authors' code does)"
        some = f", the first {self.max_ids} identities of each split" if self.max_ids else ""
        weights = "ImageNet weights" if self.imagenet else f"random weights (seed {self.weights_seed})"
        return [f"Market-1501 ({self.root}): {ids} train the heads, its test split is the test split{some}; "
                f"{self.height} x {self.width}",
                f"{self.backbone} with {weights}, last stride 1, frozen (never trained here); the heads read "
                f"the max and sum of its map's bands ({self.views} training views, blocks scored alone for rows "
                f"{', '.join(map(str, self.block_rows))})"]


FULL = FullProtocol()
"""The full protocol (chapter 9's full mode; ``benchmarks/ablation_quick.py --protocol full``)."""

SMOKE = FullProtocol(root="market1501-mini", val_ids=2, max_ids=6, height=96, width=32, imagenet=False, views=3,
                     batch=32, workers=0, epochs=1, p=3, k=2, milestones=(1,), seeds=2)
"""``FULL``'s code paths with the smallest amounts (``RRID_SMOKE=1``): 6 identities of
market1501-mini (:func:`smoke_protocol` points ``root`` at it), 96 x 32, a random ResNet-50, one
epoch, 2 seeds. Not for results."""


# ----------------------------------------------------------------------------- data

@lru_cache(maxsize=4)
def _dataset(root: str) -> Market1501:
    return Market1501(root)


def market_split(protocol: FullProtocol) -> tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord]]:
    """(head-training records, query, gallery) of the protocol's Market-1501.

    Training: every identity but the last ``val_ids`` (``rrid.train.hold_out_ids``), labels
    0..K-1. With ``max_ids``, only the first ``max_ids`` training identities, and a test split of
    the first ``max_ids`` test identities (no distractors).
    """
    pr = protocol
    dataset = _dataset(str(pr.data_root()))
    train = hold_out_ids(dataset, pr.val_ids).train if pr.val_ids else list(dataset.train)
    query, gallery = list(dataset.query), list(dataset.gallery)
    if pr.max_ids:
        train = relabel([r for r in train if r.pid < pr.max_ids])
        kept = set(sorted({r.pid for r in query})[:pr.max_ids])
        query, gallery = [r for r in query if r.pid in kept], [r for r in gallery if r.pid in kept]
    return train, query, gallery


@lru_cache(maxsize=8)
def _split_digest(protocol: FullProtocol) -> str:
    """A digest of the split's image names (relative to the data set folder) and labels."""
    train, query, gallery = market_split(protocol)
    root = _dataset(str(protocol.data_root())).root
    return _digest({name: [(str(Path(r.path).relative_to(root)), r.pid, r.camid) for r in records]
                    for name, records in (("train", train), ("query", query), ("gallery", gallery))})


# ----------------------------------------------------------------------------- backbone and cache

def frozen_backbone(protocol: FullProtocol) -> torch.nn.Sequential:
    """torchvision's ResNet of the protocol with last stride 1, ImageNet weights (``rrid.weights``,
    checksum-verified) or random ones from ``weights_seed``; in eval mode, frozen."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(protocol.weights_seed)
        net = resnet_backbone(protocol.backbone, pretrained=protocol.imagenet, last_stride=1)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


class _Views(Dataset):
    """``transform(image)`` for each record, the transform's randomness seeded per image."""

    def __init__(self, records, transform, seed: int):
        self.records, self.transform, self.seed = records, transform, seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + i)
            return self.transform(Image.fromarray(load_image(self.records[i].path)))


def _fill_bands(net, pr: FullProtocol, records, transform, seed: int, bounds, out_max, out_sum) -> None:
    """The band statistics of ``net(transform(image))`` for ``records`` into ``out_max``, ``out_sum``
    (N, B, C) float16: the map computed on the backbone's device (autocast on a GPU), pooled in float32."""
    device = next(net.parameters()).device
    workers = min(pr.workers, os.cpu_count() or 1)
    loader = DataLoader(_Views(records, transform, seed), batch_size=pr.batch, num_workers=workers,
                        pin_memory=device.type == "cuda")
    s = 0
    with torch.inference_mode():
        for images in loader:
            with runtime.autocast(device, runtime.amp_dtype("auto", device)):
                x = net(images.to(device, non_blocking=True))
            band_max, band_sum = band_statistics(x.float(), bounds)
            out_max[s:s + len(images)], out_sum[s:s + len(images)] = band_max.half().cpu(), band_sum.half().cpu()
            s += len(images)
    if not (torch.isfinite(out_max).all() and torch.isfinite(out_sum).all()):
        raise RuntimeError("band statistics overflowed float16: the backbone's map holds values beyond 65,504")


def _view_transforms(pr: FullProtocol) -> list:
    """The views of a training image: plain, mirrored (before the resize, as QUICK's), then random
    flip and the authors' random erasing."""
    plain = build_transforms(pr.height, pr.width, train=False)
    augmented = build_transforms(pr.height, pr.width, train=True, erasing="official")

    def mirrored(img):
        return plain(TF.horizontal_flip(img))

    return [plain, mirrored] + [augmented] * (pr.views - 2)


def build_bands(protocol: FullProtocol, cache_dir=None, progress: bool = False) -> FeatureCache:
    """Compute (or read back) the band cache of ``protocol``: a ``FeatureCache`` whose maps are
    ``BandMap``s (training (views, N, ...), query and gallery (2, ...)), kept on the head device."""
    pr = protocol
    path = pr.features_path(cache_dir)

    def make(tmp: Path) -> None:
        train, query, gallery = market_split(pr)
        t0 = time.perf_counter()
        device = _device()
        net = frozen_backbone(pr).to(device)
        bounds = band_bounds(feature_map_height(pr.height), SCALES)
        splits = {"train": (train, _view_transforms(pr)), "query": (query, _view_transforms(pr)[:2]),
                  "gallery": (gallery, _view_transforms(pr)[:2])}
        saved = {}
        for name, (records, transforms) in splits.items():
            shape = (len(transforms), len(records), len(bounds), BACKBONES[pr.backbone])
            band_max, band_sum = torch.empty(shape, dtype=torch.float16), torch.empty(shape, dtype=torch.float16)
            for v, transform in enumerate(transforms):
                _fill_bands(net, pr, records, transform, v, bounds, band_max[v], band_sum[v])
            saved[f"{name}_max"], saved[f"{name}_sum"] = band_max, band_sum
        seconds = time.perf_counter() - t0
        if progress:
            print(f"band cache: {len(train)} x {pr.views} training views, {len(query)} query and {len(gallery)} "
                  f"gallery images x 2 in {seconds:.0f} s on {device}", flush=True)
        width = feature_map_height(pr.width)      # columns: the same ceil(W / 16)
        torch.save({**saved, "bounds": torch.tensor(bounds), "width": width,
                    "train_labels": torch.tensor([r.pid for r in train]),
                    **{f"{s}_{k}": torch.tensor([getattr(r, k) for r in recs])
                       for s, recs in (("q", query), ("g", gallery)) for k in ("pid", "camid")},
                    "info": {"protocol": json.dumps(pr.as_dict()), "seconds": seconds, "backbone_seconds": None,
                             "device": str(device)}}, tmp)

    build_once(path, make, f"computing the band cache {path.name}")
    return _load_bands(path, pr.head_device())


def _load_bands(path: Path, device: torch.device) -> FeatureCache:
    d = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    bounds, width = [tuple(b) for b in d["bounds"].tolist()], int(d["width"])

    def bands(name: str) -> BandMap:
        return BandMap(d[f"{name}_max"], d[f"{name}_sum"], bounds, width).to(device)

    return FeatureCache(bands("train"), d["train_labels"], bands("query"), bands("gallery"),
                        *(d[k].numpy() for k in ("q_pid", "q_camid", "g_pid", "g_camid")), d.get("info"))


def smoke_protocol() -> FullProtocol:
    """``SMOKE`` on this machine's market1501-mini (``rrid.paths.market_mini``). Where there is none,
    ``SMOKE`` as it is: reading its data then raises a ``DatasetError`` that says where it looked."""
    mini = paths.market_mini()
    return replace(SMOKE, root=str(mini)) if mini is not None else SMOKE
