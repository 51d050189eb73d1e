"""A synthetic pedestrian data set in which only the combination of parts identifies a person.

The paper's argument (Park & Ham 2020, Introduction) is that local features p_i from body
parts are not discriminative on their own: two people may wear the same shirt, and only
the *relation* between a part and the rest of the body (r_i, the one-vs.-rest feature)
tells them apart. This generator builds a data set with exactly that structure:

* An identity is a combination of part attributes (hair, skin, build, upper garment colour
  and pattern, lower garment colour and type, shoes, bag), each drawn from a small
  palette. Every palette value is spread evenly over the identities of a split, so each
  single value is worn by many people (``identity_attributes``); two identities differ in
  at least two attributes. A model that looks at one horizontal stripe only is confused;
  one that relates the stripes can tell people apart.
* Train and test identities are disjoint but drawn from the same palettes.
* Every camera has its own colour cast, brightness, blur, background clutter, chance of
  partial occlusion and detector misalignment (shift and scale of the box).
* The output is the Market-1501 layout and naming (``bounding_box_train``, ``query``,
  ``bounding_box_test``, ``PPPP_cCsS_FFFFFF_BB.jpg``) with a few junk (-1) and distractor
  (0000) images, so the same parser, loaders and evaluation run on it.

Rendering is numpy + PIL drawing; each image has its own random stream seeded by
(seed, identity, image), and the JPEGs are written with a fixed quality and no metadata,
so one seed gives byte-identical files. ``python -m rrid synth OUT`` is the command line.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter
from tqdm import tqdm

from ..errors import one_line, short_repr
from ..files import file_problem, lock_folder, move_into_place, real_target, remove_stale_temps, temp_dir
from .datasets import IMAGE_SUFFIXES, SPLIT_FOLDERS, DatasetError, MarketStyle, require_path

RENDERER_VERSION = 1
PARAMS_FILE = "synthetic.json"
MAX_MANIFEST_BYTES = 1 << 16     # synthetic.json: about 300 bytes

# The parameters of generate() / ensure() and what they may be (check_parameters).
DEFAULTS = dict(seed=0, num_train_ids=150, num_test_ids=150, images_per_id=10, num_cameras=6, size=(128, 64),
                num_junk=None, num_distractors=None, quality=90, progress=False)
MAX_IDS = 2000      # train + test: identity_attributes compares every pair (N x N x 10), 6 s at 1,500
INT_RANGES = {      # parameter: (smallest, largest, why)
    "seed": (0, 2**32 - 1, "numpy's seeds"),
    "num_train_ids": (2, MAX_IDS, ""),      # a split of one identity cannot be repaired by identity_attributes
    "num_test_ids": (2, MAX_IDS, ""),
    "images_per_id": (4, 1000, "two cameras, two images each"),
    "num_cameras": (2, MarketStyle.num_camera_ids, "the Market-1501 reader takes cameras c1..c6"),
    "num_junk": (0, 10_000, "or null"),
    "num_distractors": (0, 10_000, "or null"),
    "quality": (1, 100, "JPEG quality"),
}
SIZE_RANGE = (16, 512)     # pixels, height and width: the drawing needs 16; the noise bank grows as H x W


def check_parameters(params: dict, where: str = "", names: dict | None = None) -> None:
    """Refuse synthetic-set parameters ``generate`` cannot use, before anything is drawn.

    ``params``: keyword arguments of :func:`generate` (``seed``, ``num_train_ids``, ...); a
    one-line DatasetError names the parameter (``where`` + its name, or ``names[name]``; the
    size's are ``size.height`` and ``size.width``), its allowed range and the value given.
    """
    names = names or {}

    def refuse(name: str, expected: str, value) -> DatasetError:
        return DatasetError(f"{names.get(name, where + name)} must be {expected}, got {short_repr(value)}")

    if not isinstance(params, dict):
        raise DatasetError(f"{where.rstrip('.') or 'the synthetic parameters'} must be a mapping of parameters "
                           f"({', '.join(DEFAULTS)}), got {short_repr(params)}")
    unknown = [k for k in params if k not in DEFAULTS]
    if unknown:
        raise DatasetError(f"{where}{one_line(unknown[0], 60)} is not a parameter of the synthetic set; "
                           f"expected one of {', '.join(DEFAULTS)}")
    values = {**DEFAULTS, **params}
    for name, (low, high, why) in INT_RANGES.items():
        value = values[name]
        if value is None and why == "or null":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise refuse(name, f"an integer in {low}..{high}" + (f" ({why})" if why else ""), value)
    train, test = values["num_train_ids"], values["num_test_ids"]
    if train + test > MAX_IDS:
        shown = " + ".join(names.get(n, where + n) for n in ("num_train_ids", "num_test_ids"))
        raise DatasetError(f"{shown} must be at most {MAX_IDS} (every pair of identities is compared), "
                           f"got {train} + {test}")
    size = values["size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise refuse("size", "[height, width] in pixels", size)
    for side, value in zip(("height", "width"), size):
        if isinstance(value, bool) or not isinstance(value, int) or not SIZE_RANGE[0] <= value <= SIZE_RANGE[1]:
            raise DatasetError(f"{names.get('size.' + side, f'{where}size ({side})')} must be an integer in "
                               f"{SIZE_RANGE[0]}..{SIZE_RANGE[1]} pixels, got {short_repr(value)}")
    if not isinstance(values["progress"], bool):
        raise refuse("progress", "true or false", values["progress"])


# Each attribute: its values (name, colour or shape parameter). Palette sizes set how
# confusable the set is: with n identities each value is worn by about n / len(values).
ATTRIBUTES: dict[str, tuple[tuple[str, object], ...]] = {
    "hair_colour": (("black", (25, 22, 20)), ("brown", (105, 62, 30)), ("blonde", (220, 190, 110)),
                    ("grey", (165, 165, 160)), ("red", (160, 55, 20))),
    "hair_style": (("short", None), ("long", None)),
    "skin": (("light", (240, 205, 175)), ("medium", (200, 150, 110)), ("dark", (115, 78, 52))),
    "build": (("slim", 0.85), ("medium", 1.0), ("broad", 1.18)),  # width scale of the body
    "upper_colour": (("white", (235, 235, 235)), ("black", (30, 30, 35)), ("red", (200, 30, 35)),
                     ("blue", (40, 70, 190)), ("green", (40, 150, 60)), ("yellow", (235, 205, 40)),
                     ("purple", (120, 50, 150)), ("orange", (235, 120, 30))),
    "upper_pattern": (("plain", None), ("horizontal stripes", None), ("vertical stripes", None), ("checks", None)),
    "lower_colour": (("black", (28, 28, 32)), ("navy", (30, 40, 100)), ("khaki", (190, 170, 120)),
                     ("grey", (130, 130, 135)), ("white", (230, 230, 225)), ("red", (170, 35, 40))),
    "lower_type": (("trousers", None), ("shorts", None)),
    "shoes": (("white", (240, 240, 240)), ("black", (20, 20, 20)), ("red", (200, 30, 30)), ("brown", (110, 70, 40))),
    "bag": (("none", None), ("black backpack", (35, 35, 35)), ("red backpack", (180, 40, 40)),
            ("brown shoulder bag", (120, 80, 45)), ("blue handbag", (50, 80, 200))),
}


def identity_attributes(seed: int = 0, num_train_ids: int = 150, num_test_ids: int = 150) -> list[dict[str, str]]:
    """The attribute table: one dict per identity (train identities first, then test).

    Within each split every attribute's values are dealt out evenly (so each value is
    shared by about n / palette-size identities) and shuffled; identities are then
    repaired until every two of them (across both splits) differ in at least two attributes.
    """
    rng = np.random.default_rng([seed, 7])
    names = list(ATTRIBUTES)
    sizes = np.array([len(ATTRIBUTES[a]) for a in names])
    codes = []
    for n in (num_train_ids, num_test_ids):
        split = np.stack([rng.permutation(np.resize(np.arange(m), n)) for m in sizes], axis=1)
        codes.append(split)
    codes = np.concatenate(codes)  # (N, A) value indices
    split_of = np.repeat([0, 1], [num_train_ids, num_test_ids])
    for _ in range(100 * len(codes) + 100):
        diff = (codes[:, None, :] != codes[None, :, :]).sum(-1)
        np.fill_diagonal(diff, len(names))
        bad = np.argwhere(diff < 2)
        if len(bad) == 0:
            break
        i = bad[0, 1]  # swap one attribute of i with another identity of the same split
        j = rng.choice(np.flatnonzero(split_of == split_of[i]))
        a = rng.integers(len(names))
        codes[i, a], codes[j, a] = codes[j, a], codes[i, a]
    else:  # pragma: no cover - needs absurdly many identities for these palettes
        raise ValueError("too many identities for the attribute palettes; enlarge ATTRIBUTES")
    return [{a: ATTRIBUTES[a][c][0] for a, c in zip(names, row)} for row in codes]


def shared_attributes(a: dict[str, str], b: dict[str, str]) -> dict[str, str]:
    """The attributes two identities (rows of :func:`identity_attributes`) have in common,
    {attribute: value}; any two identities of one set share all but at least two."""
    return {name: a[name] for name in ATTRIBUTES if a[name] == b[name]}


def value_counts(table: list[dict[str, str]]) -> dict[str, dict[str, int]]:
    """How many identities of ``table`` wear each value: {attribute: {value: count}}, every
    value of the palette listed (0 where nobody wears it)."""
    return {name: {v: sum(row[name] == v for row in table) for v, _ in values} for name, values in ATTRIBUTES.items()}


def lookalikes(table: list[dict[str, str]], attributes) -> np.ndarray:
    """For each identity, how many *other* identities of ``table`` have the same values of
    ``attributes`` (a list of attribute names): what a feature that sees only those
    attributes cannot tell apart. 0 for every identity once the attributes single them out."""
    keys = [tuple(row[a] for a in attributes) for row in table]
    counts: dict[tuple, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    return np.array([counts[k] - 1 for k in keys])


def attribute_rows(size: tuple[int, int] = (128, 64), samples: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Where each attribute shows in the image: {attribute: (H,) fraction of renders in which
    row y changes when only that attribute's value changes}.

    Measured, not declared: for ``samples`` random identities, each is drawn without camera
    effects (``render(attrs, None, ...)``) once per value of the attribute, with the same
    random stream (so pose, stride and bag side are the same), and the rows where any two of
    these images differ are counted. Rows are in image coordinates (0 = top), so the P_n
    stripes of a feature map of the same image can be read against them.
    """
    rng = np.random.default_rng([seed, 13])
    names = list(ATTRIBUTES)
    out = {name: np.zeros(size[0]) for name in names}
    for s in range(samples):
        base = {n: ATTRIBUTES[n][int(rng.integers(len(ATTRIBUTES[n])))][0] for n in names}
        for name in names:
            imgs = [np.asarray(render({**base, name: v}, None, np.random.default_rng([seed, 14, s]), size), dtype=np.int16)
                    for v, _ in ATTRIBUTES[name]]
            changed = np.zeros(size[0], dtype=bool)
            for img in imgs[1:]:
                changed |= (np.abs(img - imgs[0]).max(axis=(1, 2)) > 0)
            out[name] += changed
    return {name: v / samples for name, v in out.items()}


@dataclass(frozen=True)
class Camera:
    """What one camera does to every image it takes."""

    cast: tuple[float, float, float]  # per-channel gain (colour cast)
    brightness: float  # overall gain
    blur: float  # Gaussian blur radius in pixels
    background: tuple[int, int, int]  # base colour of the scene
    clutter: int  # number of background objects
    occlusion: float  # probability of a partial occluder in front of the person
    misalign: float  # detector box error: shift up to misalign * size, scale 1 +- misalign


def cameras(seed: int = 0, num_cameras: int = 6) -> list[Camera]:
    """Per-camera effects, each spread evenly over its range and shuffled across cameras."""
    rng = np.random.default_rng([seed, 11])

    def spread(lo, hi):
        return rng.permutation(np.linspace(lo, hi, num_cameras))

    brightness, blur, clutter = spread(0.75, 1.2), spread(0.0, 1.1), spread(1, 7)
    occlusion, misalign = spread(0.0, 0.35), spread(0.02, 0.1)
    out = []
    for c in range(num_cameras):
        cast = 1 + rng.uniform(-0.15, 0.15, 3)
        background = rng.integers(70, 190, 3)
        out.append(Camera(tuple(float(x) for x in cast), float(brightness[c]), float(blur[c]),
                          tuple(int(x) for x in background), int(round(clutter[c])), float(occlusion[c]), float(misalign[c])))
    return out


def camera_table(seed: int = 0, num_cameras: int = 6) -> list[dict]:
    """The camera effects of :func:`cameras` as rows of data, one dict per camera (1-based
    ``camera`` as in the file names ``_cC``): colour cast (per-channel gain), brightness,
    blur radius (px), background colour, clutter objects, occlusion probability, misalignment."""
    return [{"camera": c + 1, **asdict(cam)} for c, cam in enumerate(cameras(seed, num_cameras))]


def _value(attrs: dict[str, str], name: str):
    return dict(ATTRIBUTES[name])[attrs[name]]


def _pattern_colour(rgb) -> tuple[int, int, int]:
    return (40, 40, 40) if sum(rgb) > 380 else (235, 235, 235)


def draw_person(draw: ImageDraw.ImageDraw, attrs: dict[str, str], box, rng: np.random.Generator) -> None:
    """Draw one pedestrian in ``box = (x0, y0, w, h)``: hair, head, torso, arms, legs, shoes, bag."""
    x0, y0, w, h = box
    cx = x0 + w / 2 + rng.uniform(-0.03, 0.03) * w
    bw = _value(attrs, "build")
    top = y0 + h * rng.uniform(0.03, 0.06)
    ph = y0 + h * 0.97 - top  # person height in pixels

    def y(f):  # fraction of the person's height -> canvas row
        return top + f * ph

    skin, hair = _value(attrs, "skin"), _value(attrs, "hair_colour")
    upper, lower, shoes = _value(attrs, "upper_colour"), _value(attrs, "lower_colour"), _value(attrs, "shoes")
    bag, bag_colour = attrs["bag"], _value(attrs, "bag")
    side = 1 if rng.random() < 0.5 else -1  # which side the bag hangs on (the person's facing)
    torso_w = 0.40 * w * bw
    tl, tr = cx - torso_w / 2, cx + torso_w / 2

    if bag.endswith("backpack"):  # behind the body, showing beside the torso
        bx = tr - 0.02 * w if side > 0 else tl - 0.14 * w
        draw.rectangle([bx, y(0.15), bx + 0.16 * w, y(0.45)], fill=bag_colour)
    if attrs["hair_style"] == "long":
        draw.rectangle([cx - 0.15 * w, y(0.03), cx + 0.15 * w, y(0.30)], fill=hair)
    # head and hair
    hw = 0.12 * w
    draw.ellipse([cx - hw, y(0.0), cx + hw, y(0.13)], fill=skin)
    draw.chord([cx - hw - 1, y(-0.01), cx + hw + 1, y(0.09)], 180, 360, fill=hair)
    # arms (sleeves in the upper colour), hands
    arm_w = 0.09 * w
    swing = rng.uniform(-0.02, 0.02) * ph
    for sx in (tl - arm_w, tr):
        draw.rectangle([sx, y(0.15), sx + arm_w, y(0.46) + swing], fill=upper)
        draw.rectangle([sx, y(0.46) + swing, sx + arm_w, y(0.50) + swing], fill=skin)
    # torso with its pattern
    t0, t1 = y(0.14), y(0.50)
    draw.rectangle([tl, t0, tr, t1], fill=upper)
    pattern, pc = attrs["upper_pattern"], _pattern_colour(upper)
    step = max(4, int(0.05 * ph))
    if pattern in ("horizontal stripes", "checks"):
        for yy in np.arange(t0 + step / 2, t1, step):
            draw.line([tl, yy, tr, yy], fill=pc, width=2)
    if pattern in ("vertical stripes", "checks"):
        for xx in np.arange(tl + step / 2, tr, step):
            draw.line([xx, t0, xx, t1], fill=pc, width=2)
    # legs (walking phase: feet apart by a random stride), lower garment, shoes
    leg_w = 0.15 * w * bw
    stride = rng.uniform(0.0, 0.09) * w
    hip = y(0.50)
    knee_cut = y(0.66) if attrs["lower_type"] == "shorts" else y(0.90)
    for s in (-1, 1):
        lx = cx + s * (0.02 * w + leg_w / 2) - leg_w / 2 + s * stride / 2
        draw.rectangle([lx, hip, lx + leg_w, y(0.90)], fill=skin)
        draw.rectangle([lx, hip, lx + leg_w, knee_cut], fill=lower)
        draw.rectangle([lx - 0.02 * w, y(0.90), lx + leg_w + 0.02 * w, y(0.97)], fill=shoes)
    draw.rectangle([cx - torso_w / 2, hip, cx + torso_w / 2, y(0.56)], fill=lower)  # hips
    # front-side bags
    if bag.endswith("backpack"):
        strap_x = tr - 0.06 * w if side > 0 else tl + 0.02 * w
        draw.rectangle([strap_x, t0, strap_x + 0.04 * w, y(0.40)], fill=bag_colour)
    elif bag == "brown shoulder bag":
        sx = tr if side > 0 else tl - 0.14 * w
        draw.line([tl if side > 0 else tr, t0, sx + 0.07 * w, y(0.50)], fill=bag_colour, width=2)
        draw.rectangle([sx, y(0.46), sx + 0.14 * w, y(0.58)], fill=bag_colour)
    elif bag == "blue handbag":
        hx = tr if side > 0 else tl - arm_w - 0.04 * w
        draw.rectangle([hx, y(0.49), hx + arm_w + 0.04 * w, y(0.59)], fill=bag_colour)


def render(attrs: dict[str, str] | None, camera: Camera | None, rng: np.random.Generator,
           size: tuple[int, int] = (128, 64), part: str = "full") -> Image.Image:
    """One image of the person ``attrs`` (None: background only) as ``camera`` sees it.

    ``camera=None`` gives a clean image (no cast, blur, clutter, occlusion or misalignment).
    ``part`` = "top" / "bottom" crops half the body (how distractors look).
    """
    H, W = size
    mx, my = int(0.25 * W), int(0.2 * H)  # canvas margin, room for misaligned boxes
    bg = camera.background if camera else (128, 128, 128)
    canvas = Image.new("RGB", (W + 2 * mx, H + 2 * my), bg)
    draw = ImageDraw.Draw(canvas)
    cw, ch = canvas.size
    if camera:  # background clutter: poles, signs, other objects
        for _ in range(camera.clutter):
            x, yy = rng.uniform(0, cw), rng.uniform(0, ch)
            bw_, bh_ = rng.uniform(3, 0.4 * W), rng.uniform(3, 0.6 * H)
            colour = tuple(int(v) for v in rng.integers(30, 226, 3))
            draw.rectangle([x, yy, x + bw_, yy + bh_], fill=colour)
    if attrs is not None:
        draw_person(draw, attrs, (mx, my, W, H), rng)
    if camera and rng.random() < camera.occlusion:  # partial occluder (car, bench, another person)
        colour = tuple(int(v) for v in rng.integers(20, 200, 3))
        if rng.random() < 0.5:
            top = my + H * rng.uniform(0.65, 0.85)
            draw.rectangle([0, top, cw, ch], fill=colour)
        else:
            edge = W * rng.uniform(0.2, 0.35)
            xs = [0, mx + edge] if rng.random() < 0.5 else [mx + W - edge, cw]
            draw.rectangle([xs[0], 0, xs[1], ch], fill=colour)
    # detector box: shift and scale around the true box
    m = camera.misalign if camera else 0.0
    s = 1 + rng.uniform(-m, m)
    bx, by = mx + rng.uniform(-m, m) * W, my + rng.uniform(-m, m) * H
    bw, bh = W * s, H * s
    bx, by = bx - (bw - W) / 2, by - (bh - H) / 2
    if part == "top":
        bh = bh / 2
    elif part == "bottom":
        by, bh = by + bh / 2, bh / 2
    img = canvas.resize((W, H), Image.BILINEAR, box=(bx, by, bx + bw, by + bh))
    if camera is None:
        return img
    if camera.blur > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(camera.blur))
    gain = np.array(camera.cast) * camera.brightness * rng.uniform(0.9, 1.1)  # colour cast and brightness
    lut = np.clip(np.arange(256)[None, :] * gain[:, None], 0, 255).astype(np.uint8)
    img = img.point(lut.ravel().tolist())
    bank = _noise_bank(H, W)  # sensor noise, sigma 3
    return ImageChops.add(img, bank[rng.integers(len(bank))], offset=-NOISE_OFFSET)


NOISE_OFFSET = 12


@lru_cache(maxsize=4)
def _noise_bank(height: int, width: int, n: int = 16) -> list[Image.Image]:
    """Precomputed noise images (Gaussian, sigma 3, stored with +NOISE_OFFSET): fast to add."""
    rng = np.random.default_rng(12345)
    noise = np.clip(np.rint(3.0 * rng.standard_normal((n, height, width, 3))) + NOISE_OFFSET, 0, 2 * NOISE_OFFSET)
    return [Image.fromarray(x.astype(np.uint8)) for x in noise]


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()


def plan(seed=0, num_train_ids=150, num_test_ids=150, images_per_id=10, num_cameras=6, num_junk=None, num_distractors=None):
    """Every image to write: ``(folder, file name, attrs or None, camera index, part, rng key)``.

    Each identity is seen by 2-4 cameras, its images dealt round-robin over them. A test
    identity gives one query image from each of its first two cameras; the rest go to the
    gallery, so every query has a gallery match from another camera.
    """
    if images_per_id < 4:
        raise ValueError(f"images_per_id must be >= 4 (two cameras, two images each), got {images_per_id}")
    if num_cameras < 2:
        raise ValueError(f"num_cameras must be >= 2, got {num_cameras}")
    attrs = identity_attributes(seed, num_train_ids, num_test_ids)
    frames = [0] * num_cameras

    def name(pid, cam):
        frames[cam] += 25
        return f"{pid:04d}_c{cam + 1}s1_{frames[cam]:06d}_01.jpg" if pid >= 0 else f"-1_c{cam + 1}s1_{frames[cam]:06d}_01.jpg"

    items = []
    for i, a in enumerate(attrs):
        pid, is_test = i + 1, i >= num_train_ids
        rng = np.random.default_rng([seed, 1, pid])
        n_cam = int(rng.integers(2, min(4, num_cameras, images_per_id // 2) + 1))
        cams = rng.choice(num_cameras, n_cam, replace=False)
        for j in range(images_per_id):
            cam = int(cams[j % n_cam])
            folder = "bounding_box_train" if not is_test else ("query" if j < 2 else "bounding_box_test")
            items.append((folder, name(pid, cam), a, cam, "full", (pid, j)))
    n_extra = max(2, num_test_ids // 10)
    rng = np.random.default_rng([seed, 2])
    for j in range(n_extra if num_junk is None else num_junk):  # junk: background only
        items.append(("bounding_box_test", name(-1, int(rng.integers(num_cameras))), None, None, "full", (-1, j)))
    names = list(ATTRIBUTES)
    for j in range(n_extra if num_distractors is None else num_distractors):  # distractors: half bodies
        a = {n: ATTRIBUTES[n][int(rng.integers(len(ATTRIBUTES[n])))][0] for n in names}
        cam = int(rng.integers(num_cameras))
        items.append(("bounding_box_test", name(0, cam), a, cam, ("top", "bottom")[j % 2], (0, j)))
    return items


def generate(out_dir, seed: int = 0, num_train_ids: int = 150, num_test_ids: int = 150, images_per_id: int = 10,
             num_cameras: int = 6, size: tuple[int, int] = (128, 64), num_junk: int | None = None,
             num_distractors: int | None = None, quality: int = 90, progress: bool = False) -> Path:
    """Write the data set to ``out_dir`` (Market-1501 layout) and return its path.

    The files go to a temp folder beside ``out_dir``; the manifest ``synthetic.json`` (the
    parameters, the image count and a hash of every image's name and size) is written last;
    then the folder is moved into place (:func:`rrid.files.move_into_place`: an existing
    set is renamed aside first and deleted after). A kill at any moment leaves ``out_dir``
    complete (old or new) or absent, never partial. Only an empty folder or an earlier
    synthetic set (one holding ``synthetic.json``) is replaced; anything else is refused.
    Parameters out of range are refused first (:func:`check_parameters`); a build of the same
    folder in another process is waited for (the lock of :func:`rrid.files.lock_folder`).
    """
    out_dir = require_path(out_dir, "synthetic data set folder")
    check_parameters(dict(seed=seed, num_train_ids=num_train_ids, num_test_ids=num_test_ids,
                          images_per_id=images_per_id, num_cameras=num_cameras, size=size, num_junk=num_junk,
                          num_distractors=num_distractors, quality=quality, progress=progress))
    params = _params(seed, num_train_ids, num_test_ids, images_per_id, num_cameras, size, num_junk, num_distractors, quality)
    with _build_lock(out_dir):
        _check_replaceable(out_dir)
        return _write_set(out_dir, params, progress)


def _build_lock(out_dir):
    """The lock every build of ``out_dir`` holds (beside it: the folder itself is replaced by a rename);
    a second build waits for the first and says so on stderr."""
    return lock_folder(out_dir, "building the synthetic data set", wait=True, inside=False,
                       on_wait=lambda note: print(note, file=sys.stderr, flush=True))


def _write_set(out_dir: Path, params: dict, progress: bool) -> Path:
    """The images and manifest of ``params`` into a temp folder, then moved to ``out_dir``."""
    p = {k: v for k, v in params.items() if k not in ("version", "quality", "size")}
    seed, num_cameras, size, quality = p["seed"], p["num_cameras"], tuple(params["size"]), params["quality"]
    items = plan(**p)
    cams = cameras(seed, num_cameras)
    with temp_dir(out_dir) as tmp:
        for folder in SPLIT_FOLDERS.values():
            (tmp / folder).mkdir()
        if progress:
            items = tqdm(items, desc="synthetic", unit="img")
        for folder, fname, attrs, cam, part, key in items:
            rng = np.random.default_rng([seed, 3, key[0] + 1, key[1]])
            img = render(attrs, cams[cam] if cam is not None else cams[rng.integers(num_cameras)], rng, size, part)
            (tmp / folder / fname).write_bytes(_jpeg(img, quality))
        manifest = {**params, **_listing(tmp)}
        (tmp / PARAMS_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True))  # last: marks it complete
        _check_replaceable(out_dir)
        move_into_place(tmp, out_dir)
    return out_dir


def _check_replaceable(out_dir: Path) -> None:
    """Refuse to replace anything but an empty folder or an earlier synthetic set."""
    target = real_target(out_dir)
    if not (target.exists() or target.is_symlink()):
        return
    if not target.is_dir():
        raise DatasetError(f"synthetic data set folder {out_dir} exists and is not a folder")
    if (target / PARAMS_FILE).is_file() or not any(target.iterdir()):
        return
    raise DatasetError(f"{out_dir} exists and does not hold a synthetic data set (no {PARAMS_FILE}); refusing to "
                       "replace it: remove it yourself or choose another folder")


def _listing(folder: Path) -> dict:
    """``{"files": N, "listing_sha256": ...}``: the count and a hash of the name and size of every image.

    Images only, as the reader sees them (a Thumbs.db or .DS_Store does not change the set).
    """
    h, n = hashlib.sha256(), 0
    for split in SPLIT_FOLDERS.values():
        for entry in sorted(os.scandir(folder / split), key=lambda e: e.name):
            if os.path.splitext(entry.name)[1].lower() not in IMAGE_SUFFIXES:
                continue
            h.update(f"{split}/{entry.name}\t{entry.stat(follow_symlinks=False).st_size}\n".encode("utf-8", "surrogateescape"))
            n += 1
    return {"files": n, "listing_sha256": h.hexdigest()}


def read_manifest(out_dir) -> dict | None:
    """The parameters ``out_dir`` was generated with if it is a complete synthetic set, else None.

    Complete: ``synthetic.json`` is there and its file count and listing hash match the
    images on disk (a folder with an image missing, added or truncated is not accepted).
    """
    out_dir = Path(out_dir)
    manifest = out_dir / PARAMS_FILE
    if file_problem(manifest) is not None:       # absent, or a named pipe that would block the read
        return None
    try:
        with open(manifest, "rb") as f:
            text = f.read(MAX_MANIFEST_BYTES + 1)
        found = json.loads(text) if len(text) <= MAX_MANIFEST_BYTES else None
        listing = _listing(out_dir)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(found, dict) or any(found.get(k) != v for k, v in listing.items()):
        return None
    return {k: v for k, v in found.items() if k not in listing}


def ensure(out_dir, seed: int = 0, **kw) -> Path:
    """``out_dir`` if it already holds this set, complete (same parameters and renderer), else generate it.

    Temp folders left beside ``out_dir`` by a killed run are removed either way. Two processes
    that ensure the same folder at once do not both build it: the second waits for the first
    (:func:`rrid.files.lock_folder`) and then finds the set ready.
    """
    out_dir = require_path(out_dir, "synthetic data set folder")
    check_parameters({"seed": seed, **kw})
    target = real_target(out_dir)
    remove_stale_temps(target.parent, target.name)
    wanted = json.loads(json.dumps(_params(seed, **kw)))
    if read_manifest(out_dir) == wanted:
        return out_dir
    with _build_lock(out_dir):
        if read_manifest(out_dir) == wanted:      # built by the process this one waited for
            return out_dir
        return generate(out_dir, seed=seed, **kw)


def _params(seed, num_train_ids=150, num_test_ids=150, images_per_id=10, num_cameras=6, size=(128, 64),
            num_junk=None, num_distractors=None, quality=90, progress=False):
    return dict(version=RENDERER_VERSION, seed=seed, num_train_ids=num_train_ids, num_test_ids=num_test_ids,
                images_per_id=images_per_id, num_cameras=num_cameras, size=list(size), num_junk=num_junk,
                num_distractors=num_distractors, quality=quality)


CLI_NAMES = {"seed": "--seed", "num_train_ids": "--train-ids", "num_test_ids": "--test-ids",
             "images_per_id": "--images-per-id", "num_cameras": "--cameras", "size.height": "--height",
             "size.width": "--width"}
