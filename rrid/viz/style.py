"""The book's figure style and the drawing pieces every figure module shares.

* :func:`use_style`: the one style of every figure (seaborn's whitegrid, colour-blind palette).
* ``MATCH``, ``NON_MATCH``: the green and red of a correct and a wrong retrieval.
* :func:`as_rgb`: a path, PIL image, tensor or array as an (H, W, 3) array for ``imshow``.
* :func:`border`, :func:`gallery_cell`: a coloured frame around an image; one retrieved image.
"""

from __future__ import annotations

import os

import matplotlib
import numpy as np
import seaborn as sns
import torch
from PIL import Image

__all__ = ["use_style", "MATCH", "NON_MATCH", "as_rgb", "border", "gallery_cell"]

MATCH, NON_MATCH = "#2ca02c", "#d62728"  # green, red


def use_style() -> None:
    """The one style every figure of the book uses."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({"figure.dpi": 100, "axes.titlesize": "medium"})


def as_rgb(x):
    """A path, PIL image, (3, H, W) tensor or (H, W, 3) array -> an (H, W, 3) array for imshow."""
    if isinstance(x, (str, bytes, os.PathLike)):
        return np.asarray(Image.open(x).convert("RGB"))
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float()
        if x.ndim == 3 and x.shape[0] in (1, 3):
            x = x.permute(1, 2, 0)
        x = x.numpy()
        return (x - x.min()) / max(float(x.max() - x.min()), 1e-12)
    return np.asarray(x)


def border(ax, colour, width=4) -> None:
    """Frame ``ax`` in ``colour`` and hide its ticks."""
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)
    ax.set_xticks([])
    ax.set_yticks([])


def gallery_cell(ax, picture, match: bool, title: str = "") -> None:
    """One retrieved image, bordered green (match) or red (non-match)."""
    ax.imshow(as_rgb(picture))
    ax.set_title(title)
    border(ax, MATCH if match else NON_MATCH)
