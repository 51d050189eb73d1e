"""Real images as the training transform hands them to the model (chapter 6):
:func:`augmentation_batch`, drawn from :func:`rrid.explain.augmentation_samples`.
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from rrid import paths
from rrid.data import Market1501
from rrid.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from rrid.explain import augmentation_samples
from rrid.viz.style import use_style

__all__ = ["augmentation_batch", "ERASING_LABELS"]

ERASING_LABELS = {
    "official": "authors' code: p = 0.75,\n2-20 % of the area,\none random colour",
    "zhong": "Zhong et al. defaults: p = 0.5,\n2-40 % of the area,\nImageNet-mean fill",
    None: "flip only",
}


def _augmentation_records(source, n: int, seed: int) -> list:
    """``n`` PIL images to augment, picked with ``seed``: from a data set (its ``train``), a
    data-set folder, a list of ``ImageRecord`` / paths / PIL images, or None: market1501-mini."""
    if source is None:
        source = paths.market_mini()
        if source is None:
            raise ValueError("augmentation_batch: source=None reads market1501-mini, which is not here "
                             "(rrid.paths.market_mini() is None); pass a data set, its folder or images, "
                             "e.g. source=rrid.book.synthetic()")
    if isinstance(source, (str, bytes, os.PathLike)):
        source = Market1501(source)
    items = list(getattr(source, "train", source))
    if len(items) < n:
        raise ValueError(f"augmentation_batch: expected at least n={n} images, got {len(items)}")
    picks = sorted(np.random.default_rng(seed).choice(len(items), n, replace=False))
    images = []
    for i in picks:
        item = items[i]
        path = getattr(item, "path", item)
        images.append(item if isinstance(item, Image.Image) else Image.open(path).convert("RGB"))
    return images


def augmentation_batch(source=None, n: int = 8, seed: int = 0, height: int = 384, width: int = 128,
                       variants=("official", "zhong")):
    """Real images as the training transform hands them to the model (denormalised to show).

    Row 1: ``n`` images picked (seeded) from ``source`` (a data set, a data-set folder, records,
    paths or PIL images; default market1501-mini, ``rrid.paths.market_mini()``: a chapter
    passes ``rrid.paths.market_mini() or rrid.book.synthetic()``), resized to ``height`` x
    ``width`` (the paper's 384 x 128). Then one row per entry of ``variants``: the training
    transform with that random erasing (``"official"``: the authors' p = 0.75, 2-20 % of the
    area, aspect 0.3-3.3, one random colour; ``"zhong"``: Zhong et al.'s defaults, p = 0.5,
    2-40 %, filled with the ImageNet mean; None: flip only), each after a horizontal flip with
    probability 0.5. Each image is titled with what happened to it ("flipped", "erased 12 %"),
    measured by ``observe_train_transform``, and the erased rectangle is outlined. The same
    ``seed`` gives the same figure.
    """
    use_style()
    images = _augmentation_records(source, n, seed)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    show = lambda x: (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()  # noqa: E731
    rows = [("resized input", [build_transforms(height, width, train=False)(img) for img in images], None)]
    for k, erasing in enumerate(variants):
        samples = augmentation_samples(images, erasing, height, width, seed=seed + 1 + k)
        rows.append((ERASING_LABELS[erasing], [s.image for s in samples], samples))
    col = 0.95
    fig, axes = plt.subplots(len(rows), n, figsize=(col * n + 1.4, len(rows) * (col * height / width + 0.45)),
                             squeeze=False)
    for r, (label, tensors, samples) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.imshow(show(tensors[c]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if samples is not None:
                _mark_augmentation(ax, samples[c])
        axes[r][0].set_ylabel(label, fontsize="x-small", rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.3)
    return fig


def _mark_augmentation(ax, sample) -> None:
    """Title an augmented image with what happened to it and outline the erased box."""
    ax.set_title(("flipped" if sample.flipped else "not flipped") + "\n"
                 + (f"erased {100 * sample.erased_fraction:.0f} %" if sample.box else "not erased"), fontsize="x-small")
    if sample.box:
        top, left, h, w = sample.box
        ax.add_patch(plt.Rectangle((left - 0.5, top - 0.5), w, h, fill=False, ec="white", lw=0.8, ls=":", gid="erased"))
