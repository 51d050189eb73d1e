"""Torch data sets and loaders: ``ImageDataset`` and ``build_loaders``.

The train loader draws P x K batches from ``PKSampler``; the query and gallery loaders go
through their records in order. An optional in-memory cache keeps decoded images
(uint8 arrays, shared across epochs): Market-1501's 12,936 train images at their native
128 x 64 take about 320 MB (12,936 x 128 x 64 x 3 bytes), and with worker processes the
cache is filled once in the main process before the workers start, so they share it
(copy-on-write after fork) instead of each decoding its own copy.
"""

from __future__ import annotations

import random
from typing import NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .datasets import ImageRecord, ReIDDataset, read_image
from .sampler import PKSampler
from .transforms import build_transforms


def load_image(path: str) -> np.ndarray:
    """Decode ``path`` to an (H, W, 3) uint8 array; DatasetError naming the file if it cannot
    (not a regular file, not an image, truncated, more pixels than ``Image.MAX_IMAGE_PIXELS``)."""
    with read_image(path) as im:
        return np.asarray(im.convert("RGB"))


class ImageDataset(Dataset):
    """``records`` as ``(image_tensor, pid, camid)``; ``cache``: a dict path -> decoded uint8 array."""

    def __init__(self, records: Sequence[ImageRecord], transform, cache: dict | None = None):
        self.records = list(records)
        self.transform = transform
        self.cache = cache

    def __len__(self) -> int:
        return len(self.records)

    def image(self, i: int) -> np.ndarray:
        path = self.records[i].path
        if self.cache is None:
            return load_image(path)
        if path not in self.cache:
            self.cache[path] = load_image(path)
        return self.cache[path]

    def fill_cache(self) -> None:
        """Decode every image now (before worker processes start, so that they share the cache)."""
        for i in range(len(self)):
            self.image(i)

    def __getitem__(self, i: int):
        r = self.records[i]
        return self.transform(Image.fromarray(self.image(i))), r.pid, r.camid


class Loaders(NamedTuple):
    train: DataLoader
    query: DataLoader
    gallery: DataLoader
    sampler: PKSampler


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a worker from torch's per-worker seed (set from the loader's generator)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loaders(dataset: ReIDDataset, height: int, width: int, p: int = 16, k: int = 4, epoch_length: str = "official",
                  seed: int = 0, workers: int = 2, cache: bool = False, rank: int = 0, world_size: int = 1,
                  test_batch_size: int = 128, pin_memory: bool | None = None, erasing: str | None = "zhong") -> Loaders:
    """Train (P x K batches, augmented), query and gallery (in order) loaders for ``dataset``.

    Augmentation is reproducible for a seed: worker processes are seeded from a generator
    seeded with (seed, rank); with ``workers=0`` it uses the global torch RNG, which the
    trainer seeds.
    """
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    shared = {} if cache else None
    train_set = ImageDataset(dataset.train, build_transforms(height, width, train=True, erasing=erasing), shared)
    test_tf = build_transforms(height, width, train=False)
    query_set = ImageDataset(dataset.query, test_tf, shared)
    gallery_set = ImageDataset(dataset.gallery, test_tf, shared)
    if cache and workers > 0:
        for ds in (train_set, query_set, gallery_set):
            ds.fill_cache()
    sampler = PKSampler([r.pid for r in dataset.train], p=p, k=k, epoch_length=epoch_length, seed=seed,
                        rank=rank, world_size=world_size)
    common = dict(num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0,
                  worker_init_fn=_seed_worker if workers > 0 else None)
    train = DataLoader(train_set, batch_sampler=sampler,
                       generator=torch.Generator().manual_seed(seed * 1000 + rank), **common)
    query = DataLoader(query_set, batch_size=test_batch_size, shuffle=False, **common)
    gallery = DataLoader(gallery_set, batch_size=test_batch_size, shuffle=False, **common)
    return Loaders(train, query, gallery, sampler)
