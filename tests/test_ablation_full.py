"""The full head-only protocol (rrid.ablation.full): band statistics, keys, the band cache, the
benchmark's files on the smoke protocol, and the time estimate's arithmetic."""

import csv
import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image

from rrid import ablation
from rrid.ablation import BandMap, band_bounds, band_statistics, benchmark
from rrid.ablation import estimate as est
from rrid.data import build_transforms
from rrid.data.loaders import load_image
from rrid.losses import RRIDLoss
from rrid.model import TABLE2, GlobalPooling, stripe_bounds, stripe_pool
from test_ablation import _benchmark_module

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = list(range(1, 14)) + ["rest_only"]


@pytest.fixture
def float64():
    """Float64 on both sides: GMP of a union of bands is the max of their maxima exactly, GAP the
    sum of their sums over the cells up to rounding (~1e-16 relative), so torch's default float64
    tolerance (1e-7) is reached only by a wrong band, never by the order of a sum."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(saved)


# ----------------------------------------------------------------------------- band statistics

def test_bands_of_the_paper_map_are_the_cuts_of_every_stripe():
    assert band_bounds(24) == [(0, 4), (4, 6), (6, 8), (8, 12), (12, 16), (16, 18), (18, 20), (20, 24)]
    assert band_bounds(24, (6,)) == [(i, i + 4) for i in range(0, 24, 4)]
    assert band_bounds(6) == [(i, i + 1) for i in range(6)]           # the quick map: one row each
    # a height no scale divides: adaptive stripes share rows, and each is still a union of bands
    for h in (7, 10, 24):
        bounds = band_bounds(h)
        cuts = {a for a, _ in bounds} | {h}
        assert bounds[0][0] == 0 and bounds[-1][1] == h and all(a < b for a, b in bounds)
        for n in (2, 4, 6):
            assert all(a in cuts and b in cuts for a, b in stripe_bounds(h, n))


@pytest.mark.parametrize("height", [24, 7, 6])
def test_band_statistics_pool_exactly_like_the_map(float64, height):
    x = torch.randn(3, 5, height, 4, generator=torch.Generator().manual_seed(height))
    bands = BandMap.from_map(x, band_bounds(height))
    for n in (2, 4, 6):
        for mode in ("gmp", "gap"):
            torch.testing.assert_close(stripe_pool(bands, n, mode), stripe_pool(x, n, mode))
    for mode in ("gmp", "gap", "gap+gmp"):
        pool = GlobalPooling(mode, 5, 2)
        torch.testing.assert_close(pool.pool(bands), pool.pool(x))
    assert torch.equal(stripe_pool(bands, 6, "gmp"), stripe_pool(x, 6, "gmp"))   # a max of maxima: exact
    band_max, band_sum = band_statistics(x, band_bounds(height))
    assert band_max.shape == band_sum.shape == (3, len(band_bounds(height)), 5)


@pytest.mark.parametrize("height, rows", [(24, ROWS), (6, [1, 5, 10, 13, "rest_only"])])
def test_every_row_gives_the_same_embedding_and_loss_from_band_statistics(float64, height, rows):
    """The heads read x only through BandMap's questions: all 13 rows and the rest-only model on the
    paper's 24-row map (and the quick map's one-row bands), in eval mode (the embedding) and train
    mode (every feature, logit and the loss of Eq. 3)."""
    x = torch.randn(8, 512, height, 3, generator=torch.Generator().manual_seed(0)).relu()
    bands = BandMap.from_map(x, band_bounds(height))
    labels = torch.arange(4).repeat_interleave(2)
    for row in rows:
        model = ablation.head_model(row, 0, 4, "resnet18", reduced_dim=16).eval()
        torch.testing.assert_close(model(bands), model(x), msg=f"row {row}")
        model.train()
        a, b = model(bands), model(x)
        for u, v in zip(a.embeddings + a.logits, b.embeddings + b.logits):
            torch.testing.assert_close(u, v, msg=f"row {row}")
        torch.testing.assert_close(RRIDLoss()(a, labels)[0], RRIDLoss()(b, labels)[0])


def test_band_map_indexes_like_the_cache_and_refuses_what_it_does_not_know():
    x = torch.rand(2, 5, 3, 24, 8)                                        # (views, N, C, H, W)
    bounds = band_bounds(24)
    cache = BandMap(*band_statistics(x.flatten(0, 1), bounds), bounds, 8)
    cache = BandMap(cache.band_max.unflatten(0, (2, 5)), cache.band_sum.unflatten(0, (2, 5)), bounds, 8)
    assert cache.shape == (2, 5, 3, 24, 8) and len(cache) == 2
    view, idx = torch.tensor([1, 0]), torch.tensor([4, 2])
    picked = cache[view, idx]
    assert picked.shape == (2, 3, 24, 8)
    torch.testing.assert_close(picked.amax(dim=(2, 3)), x[view, idx].amax(dim=(2, 3)))
    stripe = picked[:, :, 6:12]                                           # bands (6, 8) and (8, 12)
    assert stripe.shape == (2, 3, 6, 8) and stripe.bounds == ((0, 2), (2, 6))
    torch.testing.assert_close(stripe.mean(dim=(2, 3)), x[view, idx][:, :, 6:12].mean(dim=(2, 3)))
    joined = BandMap.cat([cache[:, :2], cache[:, 2:]], dim=1)
    assert torch.equal(joined.band_sum, cache.band_sum)
    with pytest.raises(IndexError, match="not a union of whole bands"):
        picked[:, :, 5:12]
    with pytest.raises(IndexError, match="whole channels"):
        picked[:, 0]
    with pytest.raises(ValueError, match=r"only the max and mean over \(H, W\)"):
        picked.amax(dim=1)
    with pytest.raises(ValueError, match="do not tile"):
        BandMap.from_map(x[0], [(0, 4), (6, 24)])


# ----------------------------------------------------------------------------- protocols and keys

def test_quick_keys_are_unchanged_and_full_keys_differ():
    # the digests of the committed quick results and of their cache (a field added to Protocol,
    # or a change to its digests, would orphan both)
    assert (ablation.QUICK.key(), ablation.QUICK.backbone_key(), ablation.QUICK.features_key()) == \
        ("d1eef31779bf", "4f1a72767481", "3180184f4c2e")
    full, smoke = ablation.FULL, ablation.SMOKE
    assert len({ablation.QUICK.key(), full.key(), smoke.key()}) == 3
    # where the data is, the default number of seeds and the loading processes change no number
    assert dataclasses.replace(full, root="/elsewhere", seeds=9, workers=8).key() == full.key()
    for change in (dict(epochs=11), dict(val_ids=0), dict(views=2), dict(imagenet=False), dict(block_rows=(4, 5))):
        assert dataclasses.replace(full, **change).key() != full.key(), change
    assert (full.height, full.width, full.backbone, full.val_ids, full.p * full.k) == (384, 128, "resnet50", 100, 64)
    assert full.seeds >= 3 and set(full.block_rows) == {4, 5, 6, 7, 8}


@pytest.fixture(scope="module")
def smoke(market_mini, tmp_path_factory):
    """The smoke protocol on market1501-mini and its band cache (built once, in a temp folder)."""
    cache = tmp_path_factory.mktemp("smoke") / "ablation"              # where RRID_CACHE=<its parent> puts it
    protocol = dataclasses.replace(ablation.SMOKE, root=str(market_mini))
    return protocol, cache, ablation.features(protocol, cache)


def test_market_split_holds_out_ids_and_keeps_the_test_split_apart(smoke):
    protocol, _, _ = smoke
    train, query, gallery = ablation.market_split(protocol)
    assert sorted({r.pid for r in train}) == list(range(protocol.max_ids))
    assert len({r.pid for r in query}) == protocol.max_ids and {r.pid for r in gallery} <= {r.pid for r in query}
    every = ablation.market_split(dataclasses.replace(protocol, max_ids=0, val_ids=0))[0]
    held = ablation.market_split(dataclasses.replace(protocol, max_ids=0))[0]
    assert len({r.pid for r in every}) - len({r.pid for r in held}) == protocol.val_ids     # the last ids held out
    assert {r.path for r in held} < {r.path for r in every}


def test_band_cache_holds_the_band_statistics_of_the_backbone_map(smoke):
    protocol, cache, feats = smoke
    train, query, gallery = ablation.market_split(protocol)
    assert feats.train_x.shape[:2] == (protocol.views, len(train)) and feats.train_x.dtype == torch.float16
    assert feats.query_x.shape[:2] == (2, len(query)) and feats.gallery_x.shape[:2] == (2, len(gallery))
    assert feats.train_x.bounds == tuple(band_bounds(6)) and feats.num_classes == protocol.max_ids
    assert np.array_equal(feats.q_pids, [r.pid for r in query])
    net = ablation.frozen_backbone(protocol)
    plain = build_transforms(protocol.height, protocol.width, train=False)
    images = torch.stack([plain(Image.fromarray(load_image(r.path))) for r in gallery[:3]])
    with torch.no_grad():
        x = net(images)
        band_max, band_sum = band_statistics(x, feats.gallery_x.bounds)
    # float16 storage rounds each statistic to 2^-11 of itself. The map differs from the one the cache was
    # computed from by float32 rounding of the conv sums between batch sizes: a few eps32 of its largest
    # entry, bounded by 1e-5 of it (as in test_ablation.py); a band's sum adds that error over its cells
    cells = max(b - a for a, b in feats.gallery_x.bounds) * feats.gallery_x.width
    map_error = 1e-5 * x.abs().max()
    got_max, got_sum = feats.gallery_x.band_max[0, :3].float(), feats.gallery_x.band_sum[0, :3].float()
    assert torch.all((got_max - band_max).abs() <= 2.0 ** -11 * band_max.abs() + map_error)
    assert torch.all((got_sum - band_sum).abs() <= 2.0 ** -11 * band_sum.abs() + cells * map_error)
    files = sorted(p.name for p in cache.glob("*"))
    assert files == [protocol.features_path(cache).name]                 # one file, no lock or temp left


# ----------------------------------------------------------------------------- the benchmark

def test_smoke_benchmark_writes_resumes_and_refuses_another_protocol(smoke, tmp_path, monkeypatch, capsys):
    protocol, cache, _ = smoke
    out = tmp_path / "results"
    monkeypatch.setenv("RRID_SMOKE", "1")
    monkeypatch.setenv("RRID_CACHE", str(cache.parent))               # the script finds the fixture's band cache
    # the script's whole path: the smoke protocol, its estimate, the runs, the four files
    _benchmark_module().main(["--protocol", "full", "--seeds", "0", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "smoke numbers, not results" in printed and "estimate (measured on" in printed and "on a T4" in printed
    files = benchmark.result_files(out, protocol)
    assert [f.name for f in files] == ["ablation_full.csv", "blocks_full.csv", "ablation_full_ap.npz",
                                       "ablation_full.md"]
    first = files.runs.read_text()
    trained = []
    real = ablation.train_heads
    def counted(row, seed, *args, **kwargs):
        trained.append((row, seed))
        return real(row, seed, *args, **kwargs)

    monkeypatch.setattr(benchmark, "train_heads", counted)
    benchmark.run(protocol, [4, 5], [0, 1], out, say=lambda *a, **k: None, cache_dir=cache)
    assert trained == [(4, 1), (5, 1)]                                   # seed 0 was in the CSV: not trained again
    runs = ablation.read_runs(files.runs)
    assert {r: sorted(s) for r, s in runs.items()} == {4: [0, 1], 5: [0, 1]}
    assert first.splitlines()[1] in files.runs.read_text()
    with open(files.runs, newline="") as f:
        assert {r["protocol"] for r in csv.DictReader(f)} == {protocol.key()}
    blocks = ablation.read_blocks(files.blocks)
    assert sorted(blocks) == sorted((r, f"P6/q{i}") for r in (4, 5) for i in range(7))
    with np.load(files.ap) as z:
        assert sorted(z.files) == ["row04_seed0", "row04_seed1", "row05_seed0", "row05_seed1"]
        assert 100 * np.nanmean(z["row05_seed1"]) == pytest.approx(runs[5][1]["mAP"], abs=1e-3)
    report = files.report.read_text()
    assert "| 5 - 4 |" in report and "full mAP" in report and "Full ablation of Table 2" in report
    other = dataclasses.replace(protocol, epochs=2)
    with pytest.raises(benchmark.MixedProtocolsError, match=protocol.key()):
        benchmark.run(other, [4], [0], out, say=lambda *a, **k: None, cache_dir=cache)
    assert not list(out.glob(".*"))                                      # no temp file left


def test_blocks_are_scored_only_for_the_rows_tables_3_and_4_read(smoke):
    protocol, _, feats = smoke
    run = ablation.train_heads(13, 0, dataclasses.replace(protocol, block_rows=(4,)), feats)
    assert run.blocks == {} and run.feature_dim == TABLE2[12].feature_dim
    assert 100 * np.nanmean(run.all_AP) == pytest.approx(run.mAP)


# ----------------------------------------------------------------------------- the time estimate

def test_estimate_arithmetic():
    pr = dataclasses.replace(ablation.FULL, epochs=3, p=4, k=2, views=4, block_rows=(5,))
    n = est.Counts(train=100, train_ids=10, query=7, gallery=30)
    rows = [1, 5, 13]
    rates = est.Rates(image=0.5, step={1: 1.0, 5: 2.0, 13: 4.0}, embed={1: 0.01, 5: 0.02, 13: 0.04}, ranking=3.0,
                      where="by hand")
    e = est.estimate(pr, n, rates, rows, seeds=2)
    assert e.cache == (100 * 4 + 2 * 37) * 0.5
    steps = 3 * (100 // 8)                                                # 3 "once" epochs of 12 batches
    assert e.train == {1: steps * 1.0, 5: steps * 2.0, 13: steps * 4.0}
    # rankings: the whole embedding, and row 5's 7 blocks alone (its P6 q_1..q_6 and q_0)
    assert e.score == pytest.approx({1: 74 * 0.01 + 3.0, 5: 74 * 0.02 + 8 * 3.0, 13: 74 * 0.04 + 3.0})
    assert e.total == pytest.approx(e.cache + 2 * (sum(e.train.values()) + sum(e.score.values())))
    per_seed = e.per_seed
    assert est.seeds_within(pr, n, rates, rows, budget=e.cache + 5.5 * per_seed) == 5
    assert est.seeds_within(pr, n, rates, rows, budget=e.cache + 0.5 * per_seed) == 3     # at least 3
    assert est.duration(40) == "40 s" and est.duration(750) == "12.5 min" and est.duration(3 * 3600) == "3.0 h"


def test_cache_sizes_and_the_t4_figures():
    n = est.Counts(train=11_200, train_ids=651, query=3_368, gallery=15_913)
    maps, bands = est.cache_bytes(ablation.FULL, n)
    views = 11_200 * 4 + 2 * (3_368 + 15_913)
    assert maps == views * 2048 * 24 * 8 * 2 and bands == views * 8 * 2 * 2048 * 2 and maps == 12 * bands
    assert bands < 6 * 2 ** 30 < 15 * 2 ** 30 < maps                     # fits a T4 (15 GiB usable); maps do not
    # ResNet-50's multiply-accumulates (torchvision): 4.09 G at 224 x 224; at 384 x 128 with last stride 1 layer4
    # works on 4x the positions, 6.08 G
    assert est._backbone_ratio(ablation.FULL) == pytest.approx(6_079_905_792 / 4_087_136_256)
    # a training step of row 4 (P6: six C -> c stripe reductions and one for GMP's q_0, seven classifiers c -> K):
    # 3 x the forward's 2 x MACs, for P K images
    flops, params = est._training_flops(4, ablation.FULL, 651)
    assert flops == 3 * 2 * (7 * 2048 * 256 + 7 * 256 * 651) * 64
    assert params == 7 * (2048 * 256 + 256 + 2 * 256) + 7 * (256 * 651 + 651)
    torch.manual_seed(7)
    expected = torch.rand(1)
    torch.manual_seed(7)
    rates = est.t4_rates(ablation.FULL, [1, 4], n, repeats=1)
    assert torch.equal(torch.rand(1), expected)                           # the caller's random state is kept
    assert rates.step[4] > est.T4_MARGIN * flops / est.T4_FP32_FLOPS     # the arithmetic and more (the overhead)
    size = est.counts(dataclasses.replace(ablation.FULL, root="/nonexistent"))       # no data: the paper's sizes
    assert size.estimated and (size.train_ids, size.query) == (651, 3_368)
    assert size.train == round(12_936 * 651 / 751) and math.isclose(size.gallery, 19_732)
