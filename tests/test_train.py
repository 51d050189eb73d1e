"""rrid.train: learning on the synthetic set, bitwise kill-and-resume, atomic and checked checkpoints."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rrid.callbacks import Callback
from rrid.checkpoint import load_checkpoint, load_model, save_checkpoint
from rrid.config import ConfigError, apply_overrides, load_config
from rrid.errors import CheckpointError
from rrid.train import NonFiniteLossError, build_dataset, fit, hold_out_ids
from rrid.viz import LivePlot
from tiny import QUICK, assert_same_weights, read_log, tiny_overrides

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    return load_config(QUICK, tiny_overrides(tmp))


# ----------------------------------------------------------------------------- the training split

def test_val_ids_holds_out_the_last_training_identities(tiny_cfg):
    """data.val_ids = n trains on the first K - n identities (labels 0..K-n-1, as the authors'
    651 + 100 split of Market-1501) and keeps the other n aside; the test split is untouched."""
    whole = build_dataset(apply_overrides(tiny_cfg, ["data.val_ids=0"]))
    split = build_dataset(apply_overrides(tiny_cfg, ["data.val_ids=4"]))
    assert whole.num_train_ids == 16 and split.num_train_ids == 12
    assert {r.pid for r in split.train} == set(range(12)) and {r.pid for r in split.val} == set(range(12, 16))
    assert sorted(split.train + split.val) == sorted(whole.train)
    assert (split.query, split.gallery) == (whole.query, whole.gallery)
    with pytest.raises(ConfigError, match=r"data.val_ids=15: expected at most 14"):
        hold_out_ids(whole, 15)
    # for a synthetic set the config knows the identities, and refuses it before any data is read
    with pytest.raises(ConfigError, match=r"data.val_ids=15: .*data.p=4 identities per batch, but the synthetic set"):
        apply_overrides(tiny_cfg, ["data.val_ids=15"])


# ----------------------------------------------------------------------------- learning

def test_quick_config_learns(tmp_path):
    """The quick Ours-F config on a small synthetic set (24 + 24 identities, 6 images each).

    Epochs of the authors' length (every image an anchor once: 144 / 8 = 18 batches). One
    epoch lowers the loss L = L_triplet + λ L_CE on a fixed training batch (the run's initial
    weights against its weights after epoch 1); two epochs (the run resumed from its epoch-1
    checkpoint) give an mAP far above chance. Chance: with a random ranking a
    query's AP is about the fraction of valid gallery entries that match it, so chance mAP ~
    mean over queries of #matches / #valid gallery, computed below from the split (~4 %).
    We require 5 x chance: this seeded CPU run gets about 0.8.
    """
    from rrid.data import build_loaders
    from rrid.losses import RRIDLoss
    from rrid.train import build_model

    cfg = load_config(QUICK, [f"data.root={tmp_path / 'synth'}", "train.num_threads=1",
                              "data.synthetic={num_train_ids: 24, num_test_ids: 24, images_per_id: 6}",
                              "data.epoch_length=official", "train.epochs=1", "train.eval_every=2",
                              "optim.milestones=[2]"])
    fit(cfg, out_dir=tmp_path / "run", progress=False)
    data = build_dataset(cfg)
    loaders = build_loaders(data, cfg.data.height, cfg.data.width, cfg.data.p, cfg.data.k, "once", seed=1, workers=0)
    torch.manual_seed(1)
    images, pids, _ = next(iter(loaders.train))
    crit = RRIDLoss(cfg.loss.margin, cfg.loss.ce_weight)
    with torch.no_grad():
        before = crit(build_model(cfg, data.num_train_ids).train()(images), pids)[0].item()
        after = crit(load_model(tmp_path / "run" / "last.pt").train()(images), pids)[0].item()
    assert after < 0.9 * before, (before, after)

    result = fit(apply_overrides(cfg, ["train.epochs=2"]), out_dir=tmp_path / "run", resume=True, progress=False)
    g_pids = np.array([r.pid for r in data.gallery])
    g_cams = np.array([r.camid for r in data.gallery])
    chance = np.mean([((g_pids == q.pid) & (g_cams != q.camid)).sum() / ((g_pids != q.pid) | (g_cams != q.camid)).sum()
                      for q in data.query])
    assert chance < 0.1
    assert result.metrics["mAP"] > 5 * chance, (result.metrics, chance)
    assert [h["epoch"] for h in result.history] == [0, 1] and result.history[-1]["mAP"] == result.metrics["mAP"]
    assert result.best_checkpoint == tmp_path / "run" / "best.pt"


# ----------------------------------------------------------------------------- resume

def test_kill_and_resume_is_bitwise_identical(tmp_path, tiny_cfg):
    """SIGKILL a real training process after a mid-run checkpoint, resume, and compare every
    tensor of the final weights with an uninterrupted run."""
    cfg = apply_overrides(tiny_cfg, ["train.checkpoint_every_steps=1"])
    build_dataset(cfg)                                   # generate the data outside the timed run
    killed = tmp_path / "killed"
    env = {**os.environ, "TQDM_DISABLE": "1"}
    # --resume on an empty folder starts a new run (the Colab recipe: the same command every session)
    cmd = [sys.executable, "-m", "rrid", "train", "--config", str(QUICK), "--out", str(killed), "--resume"]
    for item in tiny_overrides(Path(cfg.data.root).parent, **{"train.checkpoint_every_steps": 1}):
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = killed / "metrics.jsonl"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:    # wait until step 4 is logged:
            if log.exists() and any(json.loads(line)["step"] >= 4 for line in log.read_text().splitlines()[:-1]):
                break                                            # the checkpoint of step 3 is on disk
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed: " + proc.stdout.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    partial = load_checkpoint(killed / "last.pt")
    steps_total = cfg.train.epochs * batches_per_epoch(cfg)
    assert 3 <= partial["step"] < steps_total, partial["step"]

    resumed = fit(tiny_cfg, out_dir=killed, resume=True, progress=False)       # no more per-step checkpoints
    straight = fit(tiny_cfg, out_dir=tmp_path / "straight", progress=False)
    assert_same_weights(load_checkpoint(resumed.last_checkpoint)["model"], load_checkpoint(straight.last_checkpoint)["model"])
    assert_same_weights(load_checkpoint(resumed.last_checkpoint)["optimizer"]["state"][0],
                        load_checkpoint(straight.last_checkpoint)["optimizer"]["state"][0])
    # the resumed log has each step once, with the same losses as the uninterrupted run
    a = [(r["step"], r["total"]) for r in read_log(killed) if r["kind"] == "step"]
    b = [(r["step"], r["total"]) for r in read_log(tmp_path / "straight") if r["kind"] == "step"]
    assert a == b and [s for s, _ in a] == list(range(1, steps_total + 1))
    assert resumed.metrics == straight.metrics


def batches_per_epoch(cfg) -> int:
    from rrid.data import PKSampler
    data = build_dataset(cfg)
    return len(PKSampler([r.pid for r in data.train], cfg.data.p, cfg.data.k, cfg.data.epoch_length))


# ----------------------------------------------------------------------------- checkpoints

def test_crash_during_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.arange(4.0)}, "step": 1}, path)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")             # some bytes reach the disk, then the crash
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="simulated"):
        save_checkpoint({"model": {"w": torch.zeros(4)}, "step": 2}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]     # no temp file left
    assert load_checkpoint(path)["step"] == 1


def test_corrupted_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.randn(1000)}, "step": 1}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])      # truncated
    with pytest.raises(CheckpointError, match="truncated, corrupted") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


class Poison(Callback):
    """Sets one weight to NaN after step ``at``: the next loss is NaN."""

    def __init__(self, at: int):
        self.at = at

    def on_step(self, state, logs):
        if state.step == self.at:
            with torch.no_grad():
                next(state.model.parameters()).view(-1)[0] = float("nan")


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_cfg):
    cfg = apply_overrides(tiny_cfg, ["train.checkpoint_every_steps=1"])
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3 \(epoch 1, batch 3\)") as err:
        fit(cfg, out_dir=run, callbacks=[Poison(at=2)], progress=False)
    assert str(run / "last.pt") in str(err.value)
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())


def test_history_liveplot_and_load_model(tmp_path, tiny_cfg):
    """LivePlot (static here: pytest) records every step and draws its figure at the end;
    load_model gives back the trained weights; metrics.jsonl has step, epoch and eval lines."""
    cfg = apply_overrides(tiny_cfg, ["train.epochs=1", "train.eval_every=1"])
    plot = LivePlot()
    result = fit(cfg, out_dir=tmp_path / "run", callbacks=[plot], progress=False)
    log = read_log(tmp_path / "run")
    steps = [r for r in log if r["kind"] == "step"]
    assert plot.live is False and plot.fig is not None and len(plot.fig.axes) == 3
    assert plot.steps == [s["step"] for s in steps] and plot.parts["total"] == [s["total"] for s in steps]
    # the plotted point is 100 x the same float; the epoch mean is a float64 sum of the logged step
    # values: pytest.approx's relative 1e-6 is far above float64 rounding (~1e-15)
    assert [line.get_ydata()[0] for line in plot.fig.axes[2].lines][0] == pytest.approx(100 * result.metrics["mAP"])
    assert [r["kind"] for r in log[-2:]] == ["epoch", "eval"]
    assert log[-2]["total"] == pytest.approx(np.mean([s["total"] for s in steps]))
    assert set(log[-2]["lr"]) == {"backbone", "head"}
    model = load_model(result.last_checkpoint)
    assert_same_weights(model.state_dict(), load_checkpoint(result.last_checkpoint)["model"])
    assert load_config(tmp_path / "run" / "config.yaml") == cfg


def test_eval_metric_reaches_fit_and_the_eval_command(tmp_path, tiny_cfg, monkeypatch, capsys):
    """eval.metric=cuhk03_single_shot: fit's periodic evaluation and ``python -m rrid eval`` both
    hand it to rrid.evaluate, and report the single-shot rank-1 (seeded: the same in both)."""
    import rrid.__main__
    import rrid.evaluation
    import rrid.train
    from rrid.__main__ import main

    seen, original = [], rrid.evaluation.evaluate

    def spy(*args, **kwargs):
        metrics, distmat = original(*args, **kwargs)
        seen.append((kwargs.get("ranking_metric"), metrics))
        return metrics, distmat

    for module in (rrid.evaluation, rrid.train, rrid.__main__):     # wherever the commands take it from
        monkeypatch.setattr(module, "evaluate", spy, raising=False)
    cfg = apply_overrides(tiny_cfg, ["train.epochs=1", "train.eval_every=1", "eval.metric=cuhk03_single_shot"])
    fit(cfg, out_dir=tmp_path / "run", progress=False)
    (metric, metrics), = seen
    assert metric == "cuhk03_single_shot" and metrics["metric"] == "cuhk03_single_shot"
    logged = read_log(tmp_path / "run")[-1]
    assert logged["kind"] == "eval" and logged["rank1"] == metrics["cmc"][0] != metrics["cmc_market"][0]

    assert main(["eval", "--config", str(tmp_path / "run" / "config.yaml"), "--checkpoint",
                 str(tmp_path / "run" / "last.pt"), "--json", str(tmp_path / "m.json")]) == 0
    assert seen[-1][0] == "cuhk03_single_shot" and "(CMC: cuhk03_single_shot)" in capsys.readouterr().out
    # eval runs with the config's threads as fit did: the same ranking; 1e-9 covers the JSON round trip
    assert json.loads((tmp_path / "m.json").read_text())["rank1"] == pytest.approx(logged["rank1"], abs=1e-9)
