"""Transforms checked numerically, and the loaders built on them."""

import numpy as np
import pytest
import torch
from PIL import Image

from rrid.data import IMAGENET_MEAN, IMAGENET_STD, ImageDataset, Market1501, OfficialRandomErasing, build_loaders, build_transforms


def test_test_transform_resizes_and_normalises():
    img = Image.new("RGB", (64, 128), (255, 128, 0))
    x = build_transforms(96, 32, train=False)(img)
    assert x.shape == (3, 96, 32) and x.dtype == torch.float32 and type(x) is torch.Tensor
    expected = (torch.tensor([255, 128, 0]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    # |x| <= 2.7 here: /255, - mean and / std round to at most a few ulps of values <= 1 / std = 4.4,
    # i.e. < 2e-6; 1e-5 is 5 times that and 1/1700 of one grey level (1 / 255 / std = 0.017)
    assert torch.allclose(x, expected.view(3, 1, 1).expand(3, 96, 32), atol=1e-5)


def test_train_transform_flips_with_torch_rng():
    arr = np.zeros((128, 64, 3), np.uint8)
    arr[:, :32] = 255  # left half white
    tf = build_transforms(128, 64, train=True, erasing=None)
    torch.manual_seed(0)
    outs = [tf(Image.fromarray(arr)) for _ in range(20)]
    flipped = [bool(o[0, 0, 0] < o[0, 0, -1]) for o in outs]
    assert 0 < sum(flipped) < 20
    torch.manual_seed(0)
    assert all(torch.equal(a, tf(Image.fromarray(arr))) for a in outs)
    assert torch.equal(outs[flipped.index(True)], outs[flipped.index(False)].flip(-1))


def test_zhong_erasing_fills_mean():
    tf = build_transforms(96, 32, train=True, erasing="zhong", flip=False)
    torch.manual_seed(1)
    img = Image.new("RGB", (32, 96), (255, 255, 255))
    outs = [tf(img) for _ in range(40)]
    erased = [(o == 0).all(0) for o in outs]
    fractions = [e.float().mean().item() for e in erased if e.any()]
    assert 5 < len(fractions) < 35  # p = 0.5
    assert all(0.015 <= f <= 0.42 for f in fractions)


def test_official_eraser_one_colour_box():
    eraser = OfficialRandomErasing(p=1.0)
    torch.manual_seed(0)
    for _ in range(50):
        x = torch.full((3, 96, 32), 7.0)
        y = eraser(x)
        mask = (y != 7.0).any(0)
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert mask.sum() == h * w  # a rectangle
        assert rows[-1] - rows[0] + 1 == h and cols[-1] - cols[0] + 1 == w
        frac = h * w / (96 * 32)
        assert 0.015 <= frac <= 0.215  # 2-20 % of the area, up to rounding
        colour = y[:, mask]
        assert (colour == colour[:, :1]).all()  # one colour
        rgb = colour[:, 0] * torch.tensor(IMAGENET_STD) + torch.tensor(IMAGENET_MEAN)
        assert ((rgb >= -1e-6) & (rgb <= 1 + 1e-6)).all()
    torch.manual_seed(0)
    fired = sum(bool((OfficialRandomErasing()(torch.zeros(3, 96, 32)) != 0).any()) for _ in range(200))
    assert 120 <= fired <= 180  # p = 0.75
    with pytest.raises(ValueError, match="erasing"):
        build_transforms(96, 32, train=True, erasing="random")


def test_image_dataset_cache(synthetic_small):
    ds = Market1501(synthetic_small)
    cache = {}
    data = ImageDataset(ds.query, build_transforms(64, 32, train=False), cache)
    x, pid, camid = data[3]
    assert x.shape == (3, 64, 32) and (pid, camid) == ds.query[3][1:]
    assert list(cache) == [ds.query[3].path] and cache[ds.query[3].path].shape == (128, 64, 3)
    assert torch.equal(data[3][0], x)


def test_build_loaders(synthetic_small):
    ds = Market1501(synthetic_small)
    loaders = build_loaders(ds, 64, 32, p=4, k=3, workers=0, test_batch_size=10, cache=True)
    assert len(loaders.train) == len(loaders.sampler) == len(ds.train) // 4
    x, pids, camids = next(iter(loaders.train))
    assert x.shape == (12, 3, 64, 32) and pids.tolist() == [p for p in pids.tolist()[::3] for _ in range(3)]
    order = [pid for _, pids, _ in loaders.query for pid in pids.tolist()]
    assert order == [r.pid for r in ds.query]  # in order, no shuffle
    assert sum(len(b[0]) for b in loaders.gallery) == len(ds.gallery)
    assert loaders.query.dataset.cache is loaders.train.dataset.cache


@pytest.mark.slow
def test_loader_workers_reproducible(synthetic_small):
    ds = Market1501(synthetic_small)

    def first_batch():
        loaders = build_loaders(ds, 64, 32, p=4, k=2, workers=1, seed=5)
        batch = next(iter(loaders.train))[0]
        del loaders
        return batch

    assert torch.equal(first_batch(), first_batch())


# ----------------------------------------------------------------------------- observe_train_transform

from rrid.data.transforms import observe_train_transform  # noqa: E402
from rrid.explain import augmentation_samples  # noqa: E402

# As documented (rrid/data/transforms.py, official-code-notes.md): probability, area range, aspect range
DOCUMENTED = {"official": (0.75, (0.02, 0.2), (0.3, 3.3), 100), "zhong": (0.5, (0.02, 0.4), (0.3, 3.3), 10)}
H, W = 96, 32


def noise_image(seed=0):
    """8-bit noise: no two columns alike, so a flip is always visible."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8))


def failure_per_attempt(scale, ratio, height, width, grid=2000):
    """P(a drawn box does not fit), in float64 over a midpoint grid of the two uniform draws
    (area fraction, log aspect) and the erasers' rounding h = round(sqrt(A r)), w = round(sqrt(A / r))."""
    a = scale[0] + (np.arange(grid) + 0.5) / grid * (scale[1] - scale[0])
    log_r = np.log(ratio[0]) + (np.arange(grid) + 0.5) / grid * (np.log(ratio[1]) - np.log(ratio[0]))
    area, r = np.meshgrid(a * height * width, np.exp(log_r))
    h, w = np.round(np.sqrt(area * r)), np.round(np.sqrt(area / r))
    return 1 - np.mean((h > 0) & (h < height) & (w > 0) & (w < width))


@pytest.mark.parametrize("erasing", ["official", "zhong"])
def test_erasing_as_observed_matches_its_documentation(erasing):
    p, (lo, hi), (r_lo, r_hi), attempts = DOCUMENTED[erasing]
    n = 400
    samples = augmentation_samples([noise_image()] * n, erasing, H, W, seed=0)
    plain = build_transforms(H, W, train=False)(noise_image())
    # The eraser fires with probability p and then gives up only if every attempt draws a box
    # that does not fit: P(erased) = p (1 - q^attempts), within 1e-5 of p at 96 x 32.
    q = failure_per_attempt((lo, hi), (r_lo, r_hi), H, W)
    p_erased = p * (1 - q ** attempts)
    assert 0.05 < q < 0.6 and p - p_erased < 1e-5
    erased = [s for s in samples if s.box is not None]
    # Binomial(n, p): a count more than 4 standard deviations from n p has probability < 1e-4
    assert abs(len(erased) - n * p_erased) <= 4 * np.sqrt(n * p_erased * (1 - p_erased))
    for s in samples:
        base = plain.flip(-1) if s.flipped else plain
        changed = (s.image != base).any(0)
        if s.box is None:
            assert not changed.any()
            continue
        top, left, h, w = s.box
        assert changed.sum() == h * w and changed[top:top + h, left:left + w].all()  # one rectangle
        # before rounding h*, w* lie within 0.5 of h, w; their product is the drawn area and
        # their ratio the drawn aspect: both must be reachable from the documented ranges
        assert (h - 0.5) * (w - 0.5) <= hi * H * W and (h + 0.5) * (w + 0.5) >= lo * H * W
        assert (h - 0.5) / (w + 0.5) <= r_hi and (h + 0.5) / (w - 0.5) >= r_lo
        assert lo * 0.7 < s.erased_fraction < hi * 1.3 and h < H and w < W
        fill = s.image[:, top:top + h, left:left + w]
        if erasing == "zhong":
            assert (fill == 0).all()  # the ImageNet mean after normalisation
        else:
            assert (fill == fill[:, :1, :1]).all()  # one colour


def test_flips_mirror_exactly_and_half_the_time():
    n = 400
    samples = augmentation_samples([noise_image(1)] * n, None, H, W, seed=3)
    plain = build_transforms(H, W, train=False)(noise_image(1))
    for s in samples:
        assert s.box is None and torch.equal(s.image, plain.flip(-1) if s.flipped else plain)
    flips = sum(s.flipped for s in samples)
    assert abs(flips - n / 2) <= 4 * np.sqrt(n / 4)  # Binomial(n, 1/2), 4 standard deviations
    assert not any(s.flipped for s in augmentation_samples([noise_image(1)] * 20, None, H, W, flip=False))


def test_augmentation_samples_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = augmentation_samples([noise_image(2)] * 6, "official", H, W, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = augmentation_samples([noise_image(2)] * 6, "official", H, W, seed=7)
    c = augmentation_samples([noise_image(2)] * 6, "official", H, W, seed=8)
    assert all(torch.equal(x.image, y.image) and x.box == y.box for x, y in zip(a, b))
    assert not all(torch.equal(x.image, y.image) for x, y in zip(a, c))
    torch.manual_seed(0)
    direct = observe_train_transform(noise_image(2), H, W, "official")
    assert direct.image.shape == (3, H, W)
