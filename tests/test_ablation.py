"""The head-only ablation protocol (rrid.ablation) on a tiny protocol, and its benchmark script."""

import argparse
import csv
import importlib.util
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as st

import rrid.book
from rrid import ablation
from rrid.__main__ import _model_spec, _quick_spec, main
from rrid.model import TABLE2
from rrid.stats import AGREES, CANNOT_TELL, CONTRADICTS, SMALLER
from rrid.viz import LivePlot

# 6 + 6 training identities and 6 test identities of 4 images at 64 x 32 (a 4 x 2 map),
# one backbone epoch: seconds on one CPU thread.
TINY = ablation.Protocol(backbone_ids=6, train_ids=6, test_ids=6, images_per_id=4, height=64, width=32,
                         backbone_epochs=1, backbone_batch=8, views=3, epochs=4, p=3, k=2, milestones=(3,))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cache = tmp_path_factory.mktemp("ablation")
    return cache, ablation.features(TINY, cache)


def test_feature_cache_shapes_and_reuse(tiny):
    cache, feats = tiny
    v, n, c, h, w = feats.train_x.shape
    assert (v, n, c, h, w) == (3, 6 * 4, 512, 4, 2) and feats.train_x.dtype == torch.float16
    assert feats.num_classes == 6 and sorted(set(feats.train_labels.tolist())) == list(range(6))
    assert feats.query_x.shape == (2, len(feats.q_pids), 512, 4, 2) and len(feats.q_pids) == 6 * 2
    assert feats.gallery_x.shape[:2] == (2, len(feats.g_pids))
    # view 1 is the mirror image: the backbone map of a mirrored image is not the map of the image
    assert not torch.equal(feats.train_x[0], feats.train_x[1])
    # the backbone and the cache are built once: a second call reads the same files
    files = sorted(cache.glob("*.pt"))
    assert [f.name.split("-")[0] for f in files] == ["backbone", "features"]
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = ablation.build_features(TINY, cache)
    assert torch.equal(again.train_x, feats.train_x) and [f.stat().st_mtime_ns for f in files] == mtimes
    assert not list(cache.glob("*.lock")) and not list(cache.glob(".*.tmp"))


def test_the_backbone_is_frozen_and_has_last_stride_1(tiny):
    cache, _ = tiny
    net = ablation.train_backbone(TINY, cache)
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    assert net(torch.zeros(1, 3, 64, 32)).shape == (1, 512, 4, 2)     # 64 / 16 x 32 / 16


def test_head_model_is_the_package_model_without_backbone():
    a, b = ablation.head_model(4, seed=3, num_classes=7), ablation.head_model(5, seed=3, num_classes=7)
    assert isinstance(a.backbone, torch.nn.Identity)
    x = torch.randn(2, 512, 6, 2)
    a.eval()
    assert a(x).shape == (2, TABLE2[3].feature_dim)
    # pairing: the same seed gives both rows the same first layers (P6's p-reductions come first)
    assert torch.equal(a.heads["P6"].local.p_layers[0].conv.weight, b.heads["P6"].local.p_layers[0].conv.weight)
    c = ablation.head_model(4, seed=4, num_classes=7)
    assert not torch.equal(a.heads["P6"].local.p_layers[0].conv.weight, c.heads["P6"].local.p_layers[0].conv.weight)


def test_batches_depend_on_seed_and_epoch_only():
    labels = torch.arange(6).repeat_interleave(4)
    one = list(ablation.batches(labels, 3, TINY, seed=1, epoch=2))
    two = list(ablation.batches(labels, 3, TINY, seed=1, epoch=2))
    assert len(one) == 24 // (3 * 2) and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, two))
    for idx, view in one:                                             # P identities x K images each
        assert len(idx) == 6 and len(set(labels[idx].tolist())) == 3 and int(view.max()) < 3
    other = list(ablation.batches(labels, 3, TINY, seed=2, epoch=2))
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(one, other))


def test_training_lowers_the_loss_and_repeats_exactly(tiny):
    cache, feats = tiny
    run = ablation.train_heads(5, 0, TINY, feats)
    again = ablation.train_heads(5, 0, TINY, feats)
    first, last = run.history[0]["total"], run.history[-1]["total"]
    assert last < 0.8 * first, (first, last)
    # the same seed gives the same numbers (CPU, one thread): runs are paired and repeatable
    assert run.mAP == again.mAP and np.array_equal(run.all_AP, again.all_AP, equal_nan=True)
    assert [h["total"] for h in run.history] == [h["total"] for h in again.history]
    assert run.feature_dim == TABLE2[4].feature_dim and len(run.all_AP) == len(feats.q_pids)
    assert 0 <= run.mAP <= 100 and run.mAP == pytest.approx(100 * np.nanmean(run.all_AP), abs=1e-9)
    assert list(run.blocks) == [f"P6/q{i}" for i in range(1, 7)] + ["P6/q0"]


def test_evaluation_is_flip_averaged_and_matches_evaluate_ranking(tiny):
    from rrid.evaluation import pairwise_distance
    from rrid.metrics import evaluate_ranking

    _, feats = tiny
    model = ablation.head_model(4, 0, feats.num_classes)
    model.eval()
    with torch.no_grad():
        x = torch.cat([feats.query_x, feats.gallery_x], dim=1).float()
        emb = torch.nn.functional.normalize((model(x[0]) + model(x[1])) / 2, dim=1)
    nq = len(feats.q_pids)
    ref = evaluate_ranking(pairwise_distance(emb[:nq], emb[nq:]), feats.q_pids, feats.g_pids, feats.q_camids, feats.g_camids)
    got = ablation.evaluate_heads(model, feats)
    assert got["mAP"] == pytest.approx(100 * ref["mAP"], abs=1e-6)
    # one block alone: its own L2 normalisation
    q0 = torch.nn.functional.normalize(((model(x[0]) + model(x[1])) / 2)[:, -256:], dim=1)
    ref_q0 = evaluate_ranking(pairwise_distance(q0[:nq], q0[nq:]), feats.q_pids, feats.g_pids, feats.q_camids, feats.g_camids)
    assert got["blocks"]["P6/q0"][0] == pytest.approx(100 * ref_q0["mAP"], abs=1e-6)


def test_live_ablation_overlays_two_rows_in_one_liveplot(tiny):
    cache, feats = tiny
    plot = LivePlot(live=False)
    runs = ablation.live_ablation(4, 5, seed=0, protocol=TINY, plot=plot, eval_every=2, cache_dir=cache)
    assert list(runs) == [4, 5]
    assert [r["label"] for r in plot.runs] == ["row 4", "row 5"]
    per_epoch = 24 // 6                     # 6 identities x 4 images, batches of 3 x 2
    # the loss reaches the plot where the loop reads it on the host: every LOG_EVERY steps and at
    # the end of every epoch
    synced = [s for s in range(1, TINY.epochs * per_epoch + 1) if s % ablation.LOG_EVERY == 0 or s % per_epoch == 0]
    assert [r["steps"] for r in plot.runs] == [synced, synced]
    assert [len(r["evals"]) for r in plot.runs] == [2, 2]                      # epochs 2 and 4
    assert plot.runs[1]["evals"][-1][1] == pytest.approx(runs[5].mAP / 100)
    # the runs are the same as a plain train_heads of the same (row, seed)
    assert runs[4].mAP == ablation.train_heads(4, 0, TINY, feats).mAP
    lines = plot.fig.axes[0].get_lines()
    assert {line.get_color() for line in lines} == {"C0", "C1"}              # one colour per row


def _write_runs(path, values):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "seed", "mAP", "rank1", "mINP"])
        for (row, seed), m in values.items():
            w.writerow([row, seed, m, m + 10, m - 10])


def test_comparisons_recompute_with_scipy(tmp_path):
    rng = np.random.default_rng(0)
    values = {(row, s): 50 + row + rng.normal(0, 0.5) for row in range(1, 14) for s in range(5)}
    _write_runs(tmp_path / "runs.csv", values)
    runs = ablation.read_runs(tmp_path / "runs.csv")
    out = ablation.comparisons(runs)
    assert [(c.a, c.b) for c in out] == ablation.COMPARISONS
    for c in out:
        a = [values[c.a, s] for s in range(5)]
        b = [values[c.b, s] for s in range(5)]
        ci = st.ttest_rel(a, b).confidence_interval(0.95)
        assert (c.quick.low, c.quick.high) == pytest.approx((ci.low, ci.high), abs=1e-9)
        assert c.paper == pytest.approx(TABLE2[c.a - 1].market_map - TABLE2[c.b - 1].market_map)
    # row 13 - row 12: +1 planted, the paper +1.6: agrees; row 12 - row 11 with one seed: cannot tell
    assert out[ablation.COMPARISONS.index((13, 12))].verdict.category == AGREES
    one = ablation.comparisons({12: {0: {"mAP": 1.0}}, 11: {0: {"mAP": 0.0}}}, [(12, 11)])
    assert one[0].verdict.category == CANNOT_TELL and one[0].quick.n == 1


def test_block_comparisons_signs():
    blocks = {}
    for row in (4, 5, 6, 7, 8):
        for name in [f"P6/q{i}" for i in range(1, 7)] + ["P6/q0"]:
            noise = np.random.default_rng(row).normal(0, 0.3, 5)
            blocks[row, name] = {s: {"mAP": 10.0 * row + noise[s], "rank1": 0.0} for s in range(5)}
    out = ablation.block_comparisons(blocks)
    t3 = [c for c in out if c.block != "P6/q0"]
    # RM + 10 in every region, the paper's 18-29: above 0, short of the paper's size
    assert len(t3) == 6 and all(c.paper > 0 and c.verdict.category == SMALLER for c in t3)
    gcp_gap = next(c for c in out if (c.a, c.b) == (8, 6))
    expected = np.mean([blocks[8, "P6/q0"][s]["mAP"] - blocks[6, "P6/q0"][s]["mAP"] for s in range(5)])
    assert gcp_gap.paper == pytest.approx(84.6 - 81.0) and gcp_gap.quick.mean == pytest.approx(expected)
    gmp_gap = next(c for c in out if (c.a, c.b) == (5, 6))                            # GMP (row 5) - GAP (row 6)
    assert gmp_gap.paper > 0 and gmp_gap.verdict.category == CONTRADICTS


def _benchmark_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation_quick.py"
    spec = importlib.util.spec_from_file_location("ablation_quick", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_script_resumes_and_writes_what_it_reads(tmp_path, tiny, monkeypatch):
    cache, _ = tiny
    bench = _benchmark_module()
    monkeypatch.setattr(ablation, "default_cache_dir", lambda: cache)
    out = tmp_path / "results"
    bench.main(["--rows", "4", "5", "--seeds", "0", "--out", str(out)], protocol=TINY)
    first = (out / "ablation_quick.csv").read_text()
    bench.main(["--rows", "4", "5", "--seeds", "0", "1", "--out", str(out)], protocol=TINY)
    runs = ablation.read_runs(out / "ablation_quick.csv")
    assert {r: sorted(s) for r, s in runs.items()} == {4: [0, 1], 5: [0, 1]}
    assert (out / "ablation_quick.csv").read_text().startswith(first.splitlines()[0])
    assert first.splitlines()[1] in (out / "ablation_quick.csv").read_text()       # seed 0 kept, not retrained
    blocks = ablation.read_blocks(out / "blocks_quick.csv")
    assert sorted(blocks[5, "P6/q3"]) == [0, 1]
    with np.load(out / "ablation_quick_ap.npz") as z:
        assert sorted(z.files) == ["row04_seed0", "row04_seed1", "row05_seed0", "row05_seed1"]
        ap = z["row05_seed1"]
    assert 100 * np.nanmean(ap) == pytest.approx(runs[5][1]["mAP"], abs=1e-3)        # the CSV has 3 decimals
    summary = (out / "ablation_quick.md").read_text()
    assert "| 5 - 4 |" in summary and "not the paper's\nresults" in summary
    assert not list(out.glob(".*"))                                                  # no temp file left


def test_end_to_end_runs_are_paired_too():
    """rrid.fit's runs of two rows with one seed start from the same backbone and draw the
    same batches (build_model seeds before the backbone is built; the sampler takes the seed)."""
    from rrid.config import load_config
    from rrid.data import PKSampler
    from rrid.train import build_model

    root = Path(__file__).resolve().parents[1] / "configs" / "quick"
    a = build_model(load_config(root / "row04.yaml", ["train.seed=3"]), 10)
    b = build_model(load_config(root / "row13.yaml", ["train.seed=3"]), 10)
    sa, sb = a.backbone.state_dict(), b.backbone.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    pids = np.repeat(np.arange(10), 4)
    assert PKSampler(pids, 4, 2, seed=3).global_batches(0) == PKSampler(pids, 4, 2, seed=3).global_batches(0)


# ----------------------------------------------------------------------------- trained models, rank, prepare

def test_rest_only_is_row_5_with_the_fig6_relation():
    from rrid.model import RestOnlyRelation

    a, b = ablation.head_model("rest_only", seed=3, num_classes=7), ablation.head_model(5, seed=3, num_classes=7)
    assert isinstance(a.heads["P6"].local, RestOnlyRelation) and a.config.relation == "rest_only"
    assert a.config.global_pool == b.config.global_pool and a.config.scales == b.config.scales == (6,)
    assert a.heads["P6"].local.R_p[0].conv.weight.shape == (256, 256, 1, 1)      # R_p: c -> c (row 5: 2c -> c)
    assert b.heads["P6"].local.R_p[0].conv.weight.shape == (256, 512, 1, 1)
    # paired with row 5: the same seed gives the same p-layers
    assert torch.equal(a.heads["P6"].local.p_layers[0].conv.weight, b.heads["P6"].local.p_layers[0].conv.weight)
    with pytest.raises(ValueError, match="rest_only"):
        ablation.row_config("rest-only")


@pytest.fixture(scope="module")
def trained(tiny):
    cache, feats = tiny
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    model = ablation.trained_model("rest_only", seed=1, protocol=TINY, cache_dir=cache)
    assert torch.equal(torch.rand(1), before)            # the caller's random state is left as it was
    return cache, feats, model


def test_trained_model_is_trained_once_then_loaded(trained):
    cache, feats, model = trained
    path = cache / f"heads-{TINY.key()}-rest_only-seed1.pt"
    assert path.is_file() and not list(cache.glob("*.lock"))
    mtime = path.stat().st_mtime_ns
    again = ablation.trained_model("rest_only", seed=1, protocol=TINY, cache_dir=cache)
    assert path.stat().st_mtime_ns == mtime                                    # loaded, not retrained
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # eval mode, on the CPU, the frozen backbone with last stride 1: (64 / 16) x (32 / 16)
    assert not model.training and next(model.parameters()).device.type == "cpu"
    assert not any(p.requires_grad for p in model.backbone.parameters())
    backbone = ablation.train_backbone(TINY, cache).state_dict()
    assert all(torch.equal(backbone[k], model.backbone.state_dict()[k]) for k in backbone)
    out = model.forward_features(torch.zeros(2, 3, 64, 32))
    assert out["x"].shape == (2, 512, 4, 2) and out["P6"]["q"].shape == (2, 6, 256)
    # the stored run is the run train_heads gives for the same (row, seed): training is deterministic
    run, fresh = ablation.trained_run("rest_only", 1, TINY, cache), ablation.train_heads("rest_only", 1, TINY, feats)
    assert run.row == "rest_only" and run.mAP == fresh.mAP and run.blocks == fresh.blocks
    assert np.array_equal(run.all_AP, fresh.all_AP, equal_nan=True)
    assert ablation.evaluate_heads(model, feats)["mAP"] == run.mAP             # the loaded heads are the trained ones


def test_trained_model_embeds_images_as_the_cache_path(trained):
    cache, feats, model = trained
    _, _, dataset = ablation.synthetic_split(TINY, cache)
    images = ablation.images(dataset.query, TINY)
    assert images.shape == (len(dataset.query), 3, 64, 32)
    with torch.no_grad():
        x = model.backbone(images)
        direct = (model(images) + model(torch.flip(images, dims=[3]))) / 2     # flip after the resize
    # the cache stores x in float16: its error is the rounding, at most 2^-11 of |x| (round to nearest),
    # plus float32 differences of the conv sums between batch sizes: a few float32 eps (1.2e-7) times the
    # size of the terms summed, bounded here by 1e-5 of the map's largest entry
    plain = feats.query_x[0].float()
    assert torch.all((x - plain).abs() <= 2.0 ** -11 * x.abs() + 1e-5 * x.abs().max())
    cached = ablation.embed_cached(model, feats)[:len(dataset.query)]
    # through the heads (1 x 1 convs, BN, ReLU, max) the float16 rounding of x and the mirrored view
    # (flipped before the resize in the cache, after it here) move the embedding by a small fraction
    # of its scale: 4 float16 unit roundoffs (4 x 2^-11 = 2e-3) of its largest entry bound it
    # (measured on this protocol: 0.5e-4 to 2.5e-4 for rows 1, 5, 13 and rest_only)
    scale = direct.abs().max()
    assert (direct - cached).abs().max() <= 4 * 2.0 ** -11 * scale, float((direct - cached).abs().max() / scale)


def test_rank_uses_the_cache_and_matches_evaluate_heads(trained):
    from rrid.metrics import evaluate_ranking
    from rrid.retrieval import Ranking, top_k

    cache, feats, model = trained
    ranking = ablation.rank(model, protocol=TINY, cache_dir=cache)
    assert isinstance(ranking, Ranking) and ranking.distmat.shape == (len(feats.q_pids), len(feats.g_pids))
    _, _, dataset = ablation.synthetic_split(TINY, cache)
    assert ranking.query.paths == [str(r.path) for r in dataset.query]
    assert np.array_equal(ranking.gallery.pids, feats.g_pids) and np.array_equal(ranking.gallery.camids, feats.g_camids)
    run = ablation.trained_run("rest_only", 1, TINY, cache)
    m = evaluate_ranking(ranking.distmat, ranking.query.pids, ranking.gallery.pids, ranking.query.camids,
                         ranking.gallery.camids)
    assert 100 * m["mAP"] == run.mAP
    # one block: its own normalisation, as the benchmark scores Tables 3 and 4
    q0 = ablation.rank("rest_only", seed=1, protocol=TINY, blocks=["P6/q0"], cache_dir=cache)
    m0 = evaluate_ranking(q0.distmat, q0.query.pids, q0.gallery.pids, q0.query.camids, q0.gallery.camids)
    assert 100 * m0["mAP"] == pytest.approx(run.blocks["P6/q0"][0], abs=1e-9)
    assert len(top_k(q0, 0, 3)[0]) == 3
    with pytest.raises(ValueError, match="block_names"):
        ablation.rank(model, protocol=TINY, blocks=["P4/q0"], cache_dir=cache)


def test_prepare_builds_once_reproducibly_and_says_what_it_did(tiny, tmp_path, capsys):
    cache, feats = tiny
    fresh = tmp_path / "ablation"
    seconds = rrid.book.prepare(TINY, fresh, models=[(4, 0)])
    first = capsys.readouterr().out
    assert first.count("built in") == 4 and "found" not in first and set(seconds) == {
        "synthetic set", "backbone", "feature cache", "heads 4 seed 0", "total"}
    files = {f.name: f.stat().st_mtime_ns for f in fresh.iterdir()}
    rrid.book.prepare(TINY, fresh, models=[(4, 0)])
    second = capsys.readouterr().out
    assert second.count("found") == 4 and "built" not in second
    assert {f.name: f.stat().st_mtime_ns for f in fresh.iterdir()} == files
    # a second build of the same protocol (same threads) is bit-identical to the fixture's
    a, b = ablation.train_backbone(TINY, fresh).state_dict(), ablation.train_backbone(TINY, cache).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    again = ablation.build_features(TINY, fresh)
    assert torch.equal(again.train_x, feats.train_x) and torch.equal(again.gallery_x, feats.gallery_x)


def test_features_prints_a_note_before_building(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ablation.protocol, "build_features", lambda *a, **k: "built")
    assert ablation.features(TINY, tmp_path) == "built"
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "python -m rrid prepare-book" in out and "GPU" in out
    ablation.protocol._MEMO.clear()


def test_prepare_trains_the_quick_models_into_the_book_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RRID_CACHE", str(tmp_path / "book-cache"))
    trained = []

    def fake_quick_model(row=13, epochs=None):   # what quick_model leaves behind: its checkpoint
        trained.append(row)
        path = rrid.book.quick_model_path(row, epochs)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"checkpoint")

    monkeypatch.setattr(rrid.book, "quick_model", fake_quick_model)
    monkeypatch.setattr(ablation, "synthetic_split", lambda *a: None)   # the head-only steps are tested above
    monkeypatch.setattr(ablation, "train_backbone", lambda *a, **k: None)
    monkeypatch.setattr(ablation, "build_features", lambda *a, **k: None)
    seconds = rrid.book.prepare(TINY, tmp_path / "ablation", models=[], quick_models=[13])
    assert trained == [13] and "quick model 13" in seconds
    assert rrid.book.quick_model_path(13) == tmp_path / "book-cache" / "row13.pt"
    assert "end-to-end quick model of row 13 (row13.yaml): built" in capsys.readouterr().out
    rrid.book.prepare(TINY, tmp_path / "ablation", models=[], quick_models=[13])
    assert "end-to-end quick model of row 13 (row13.yaml): found (row13.pt)" in capsys.readouterr().out
    assert inspect.signature(rrid.book.prepare).parameters["quick_models"].default == (), \
        "the function trains no quick model unless asked (tests stay fast)"
    # --quick-only (make test's second process): the quick models alone, no head-only step at all
    monkeypatch.setattr(ablation, "synthetic_split", lambda *a: pytest.fail("--quick-only built the synthetic split"))
    monkeypatch.setattr(ablation, "trained_run", lambda *a: pytest.fail("--quick-only trained heads"))
    rrid.book.quick_model_path(13).unlink()
    trained.clear()
    assert main(["prepare-book", "--cache-dir", str(tmp_path / "ablation"), "--quick-only", "--models", "4"]) == 0
    out = capsys.readouterr().out
    assert trained == [13] and "built" in out and "synthetic" not in out and "heads" not in out
    assert _quick_spec("13") == 13 and _quick_spec("rest_only") == "rest_only"
    with pytest.raises(argparse.ArgumentTypeError, match="--quick-models '99'"):
        _quick_spec("99")


def test_prepare_cli_parses_models():
    assert _model_spec("13:2") == (13, 2) and _model_spec("rest_only") == ("rest_only", 0)
    with pytest.raises(argparse.ArgumentTypeError, match="--models '14'"):
        _model_spec("14")


@pytest.mark.parametrize("threads", [1, 2])
def test_head_training_repeats_bit_for_bit_in_each_thread_setting(tiny, threads):
    from dataclasses import replace

    _, feats = tiny
    pr = replace(TINY, threads=threads, epochs=2)
    a, b = ablation.train_heads(8, 0, pr, feats), ablation.train_heads(8, 0, pr, feats)
    assert a.mAP == b.mAP and a.history == b.history and a.blocks == b.blocks


RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def test_committed_results_are_of_this_protocol_and_meet_the_power_goal():
    """The results chapter 9 reads: made with the package's current protocol (a change to the
    protocol or to RRIDConfig's defaults must be followed by a re-run of the benchmark), every
    row with the same >= 5 seeds, and every paired interval recomputed here with scipy (a
    held-out check of rrid.stats) with a half-width within the benchmark's goal."""
    with open(RESULTS / "ablation_quick.csv", newline="") as f:
        records = list(csv.DictReader(f))
    assert {r["protocol"] for r in records} == {ablation.QUICK.key()}, \
        "benchmarks/results/ablation_quick.csv predates the package's protocol: run benchmarks/ablation_quick.py --fresh"
    runs = ablation.read_runs(RESULTS / "ablation_quick.csv")
    blocks = ablation.read_blocks(RESULTS / "blocks_quick.csv")
    seeds = sorted(runs[1])
    assert len(seeds) >= 5 and sorted(runs) == list(range(1, 14)) and all(sorted(v) == seeds for v in runs.values())
    for c in ablation.comparisons(runs) + ablation.block_comparisons(blocks):
        per_seed = (lambda r: runs[r]) if c.block is None else (lambda r: blocks[r, c.block])
        a = [per_seed(c.a)[s]["mAP"] for s in seeds]
        b = [per_seed(c.b)[s]["mAP"] for s in seeds]
        ci = st.ttest_rel(a, b).confidence_interval(0.95)
        assert (c.quick.low, c.quick.high) == pytest.approx((ci.low, ci.high), abs=1e-9)
        assert c.quick.half_width <= ablation.POWER_GOAL, (c.a, c.b, c.block, c.quick)
