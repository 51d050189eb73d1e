"""Image transforms (torchvision.transforms.v2).

Train: resize to (height, width) (no crop), horizontal flip, to a float tensor in [0, 1],
ImageNet normalisation, random erasing. Test: resize and normalise.

Random erasing (Zhong et al. 2017b) comes in two flavours:

* ``"zhong"``: p = 0.5, erased area 2-40 % of the image, aspect 0.3-3.3, filled with 0
  after normalisation, i.e. with the ImageNet mean colour (torchvision's ``RandomErasing``).
* ``"official"``: what the authors' code does: p = 0.75, area 2-20 %, aspect 0.3-3.3, one
  random colour per erased box (``OfficialRandomErasing``).

All randomness comes from torch's RNG, so a trainer can seed it (the DataLoader seeds each
worker from its generator). ``observe_train_transform`` runs the training transform once and
reports what it did (flip, erased rectangle), for the book's figure and its tests.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class OfficialRandomErasing(torch.nn.Module):
    """Erase one box of 2-20 % of the area (aspect 0.3-3.3) with one random colour, with probability p.

    Works on a normalised (C, H, W) float tensor: the colour is drawn uniformly in [0, 1]^3
    and normalised with ``mean`` / ``std`` like the rest of the image.
    """

    def __init__(self, p=0.75, scale=(0.02, 0.2), ratio=(0.3, 3.3), mean=IMAGENET_MEAN, std=IMAGENET_STD, attempts=100):
        super().__init__()
        self.p, self.scale, self.ratio, self.attempts = p, scale, ratio, attempts
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), persistent=False)

    def box(self, height: int, width: int) -> tuple[int, int, int, int] | None:
        """(top, left, h, w) of a box with area in ``scale`` and aspect h / w in ``ratio``, or None."""
        area = height * width
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(self.attempts):
            target = area * torch.empty(1).uniform_(*self.scale).item()
            aspect = math.exp(torch.empty(1).uniform_(*log_r).item())
            h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < h < height and 0 < w < width:
                top = int(torch.randint(0, height - h + 1, (1,)))
                left = int(torch.randint(0, width - w + 1, (1,)))
                return top, left, h, w
        return None

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if torch.rand(1).item() >= self.p:
            return img
        box = self.box(img.shape[-2], img.shape[-1])
        if box is None:
            return img
        top, left, h, w = box
        colour = (torch.rand(img.shape[-3], 1, 1) - self.mean) / self.std
        img = img.clone()
        img[..., top : top + h, left : left + w] = colour.to(img.dtype)
        return img


def build_transforms(height: int, width: int, train: bool, erasing: str | None = "zhong", flip: bool = True,
                     mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Compose:
    """The train or test pipeline for PIL images of any size -> normalised (3, height, width) tensors."""
    steps = [v2.Resize((height, width), antialias=True)]
    if train and flip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if train and erasing == "zhong":
        steps.append(v2.RandomErasing(p=0.5, scale=(0.02, 0.4), ratio=(0.3, 3.3), value=0))
    elif train and erasing == "official":
        steps.append(OfficialRandomErasing(mean=mean, std=std))
    elif train and erasing is not None:
        raise ValueError(f"erasing must be 'zhong', 'official' or None, got {erasing!r}")
    steps.append(v2.ToPureTensor())
    return v2.Compose(steps)


class Augmented(NamedTuple):
    """One output of the training transform and what it did, measured on the output itself.

    ``image``: the normalised (3, H, W) tensor the model sees; ``flipped``: mirrored
    horizontally; ``box``: (top, left, height, width) of the erased rectangle, or None.
    """

    image: torch.Tensor
    flipped: bool
    box: tuple[int, int, int, int] | None

    @property
    def erased_fraction(self) -> float:
        """The erased share of the image area (0 when nothing was erased)."""
        if self.box is None:
            return 0.0
        return self.box[2] * self.box[3] / (self.image.shape[-2] * self.image.shape[-1])


def observe_train_transform(image, height: int, width: int, erasing: str | None = "official",
                            flip: bool = True) -> Augmented:
    """Apply the training transform once to a PIL ``image`` (torch's global RNG: seed it, e.g.
    inside ``torch.random.fork_rng()``) and find out what it did.

    Nothing is read from inside the transform: the output is compared with the test
    transform's output (resize and normalise, no randomness) and with its mirror image. The
    one that agrees on more pixels tells whether the image was flipped (an exactly symmetric
    image counts as not flipped), and the pixels that agree with neither are the erased
    rectangle. Neither eraser's fill can equal a pixel of an 8-bit image: Zhong et al.'s is 0
    after normalisation, i.e. the ImageNet mean (123.675, 116.28, 103.53 on the 0-255 scale,
    no integer), and the authors' one random colour matches a pixel with probability ~0.
    """
    out = build_transforms(height, width, train=True, erasing=erasing, flip=flip)(image)
    plain = build_transforms(height, width, train=False)(image)
    same, mirrored = (out == plain).all(0), (out == plain.flip(-1)).all(0)
    flipped = bool(mirrored.sum() > same.sum())
    changed = ~(mirrored if flipped else same)
    if not changed.any():
        return Augmented(out, flipped, None)
    rows, cols = changed.any(1).nonzero()[:, 0], changed.any(0).nonzero()[:, 0]
    top, left = int(rows[0]), int(cols[0])
    return Augmented(out, flipped, (top, left, int(rows[-1]) - top + 1, int(cols[-1]) - left + 1))
