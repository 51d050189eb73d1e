"""Two-process DistributedDataParallel on gloo (CPU): the run finishes, resumes, and agrees
with a one-process computation of the same global batches."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rrid.config import load_config
from rrid.data import build_loaders
from rrid.losses import RRIDLoss
from rrid.model import param_groups
from rrid.checkpoint import load_checkpoint
from rrid.runtime import batch_seed, seed_everything
from rrid.train import build_dataset, build_model

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quick" / "ours_f.yaml"
pytestmark = pytest.mark.slow
WORLD = 2


def overrides(tmp: Path) -> list[str]:
    """Quick Ours-F on 16 + 16 synthetic identities: 96 training images, 6 global batches of
    4 x 4 per epoch, 3 per rank."""
    sets = {"data.root": str(tmp / "synth"), "data.synthetic": "{num_train_ids: 16, num_test_ids: 16, images_per_id: 6}",
            "data.p": 4, "data.k": 4, "train.num_threads": 1, "train.log_every": 1, "train.eval_every": 100,
            "optim.milestones": "[1]"}
    return [f"{k}={v}" for k, v in sets.items()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(out: Path, sets: list[str], *extra: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", f"--log-dir={out.parent / 'torchelastic'}",  # not a folder in /tmp
           "-m", "rrid", "train", "--config", str(QUICK), "--out", str(out), *extra]
    for item in sets:
        cmd += ["--set", item]
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def one_process_reference(cfg, steps_per_epoch: int):
    """What DDP computes, in one process: per step, rank r's batch is drawn exactly as rank r
    draws it (sampler share r, augmentation seeded from (seed, epoch, batch, r)); each batch
    goes through the model on its own (BatchNorm sees 16 images, as on each rank), and the
    gradient is that of (L_0 + L_1) / 2 = the average of the per-rank gradients, which is
    what DDP's all-reduce gives. Returns the final parameters and the per-step mean losses."""
    data = build_dataset(cfg)
    d, t = cfg.data, cfg.train
    loaders = [build_loaders(data, d.height, d.width, d.p, d.k, d.epoch_length, t.seed, 0, False, r, WORLD,
                             d.test_batch_size, False, d.erasing) for r in range(WORLD)]
    model = build_model(cfg, data.num_train_ids)
    opt = torch.optim.SGD(param_groups(model, cfg.optim.backbone_lr, cfg.optim.head_lr), lr=cfg.optim.head_lr,
                          momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.optim.milestones), cfg.optim.gamma)
    crit = RRIDLoss(cfg.loss.margin, cfg.loss.ce_weight)
    losses = []
    model.train()
    for epoch in range(t.epochs):
        iters = []
        for r, ld in enumerate(loaders):
            ld.sampler.set_epoch(epoch)
            seed_everything(batch_seed(t.seed, epoch, -1, r))
            iters.append(iter(ld.train))
        for b in range(steps_per_epoch):
            total = 0
            for r in range(WORLD):
                seed_everything(batch_seed(t.seed, epoch, b, r))
                images, pids, _ = next(iters[r])
                total = total + crit(model(images), pids)[0] / WORLD
            opt.zero_grad()
            total.backward()
            opt.step()
            losses.append(total.item())
        sched.step()
    return dict(model.named_parameters()), losses


def test_two_process_gloo_run_resumes_and_matches_one_process(tmp_path):
    sets = overrides(tmp_path)
    cfg = load_config(QUICK, sets + ["train.epochs=2"])
    torch.set_num_threads(1)
    build_dataset(cfg)                                       # generate the data once, before the ranks start
    run = tmp_path / "ddp"
    torchrun(run, sets + ["train.epochs=1"])
    first = load_checkpoint(run / "last.pt")
    assert (first["epoch"], first["step"], first["world_size"]) == (1, 3, WORLD)   # 6 global batches = 3 steps
    torchrun(run, sets + ["train.epochs=2"], "--resume")
    last = load_checkpoint(run / "last.pt")
    assert (last["epoch"], last["step"]) == (2, 6)

    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ddp_losses = [r["total"] for r in log if r["kind"] == "step"]
    assert [r["step"] for r in log if r["kind"] == "step"] == [1, 2, 3, 4, 5, 6]
    assert [r["kind"] for r in log].count("eval") == 2               # rank 0 evaluated at the end of each run

    params, ref_losses = one_process_reference(cfg, steps_per_epoch=3)
    initial = dict(build_model(cfg, build_dataset(cfg).num_train_ids).named_parameters())
    # Tolerance: the two computations differ only in the order of float32 additions (DDP sums
    # the two ranks' gradients in its buckets); after six SGD steps that is ~1e-6 of each
    # tensor's magnitude. So: 1e-4 relative for the losses, and 1e-4 of each parameter tensor's
    # largest magnitude (a per-tensor scale: conv weights are ~1e-2, BN weights ~1).
    assert ddp_losses == pytest.approx(ref_losses, rel=1e-4)
    for name, p in params.items():
        tol = 1e-4 * p.detach().abs().max().item()
        torch.testing.assert_close(last["model"][name], p.detach(), rtol=0, atol=tol, msg=name)
        # the check can fail: six steps moved every tensor by more than 10 x its tolerance, so a
        # rank that skipped a step or gradients summed instead of averaged would show. Not the
        # bias of a conv that feeds a BatchNorm (every Reduction's conv.bias): BN subtracts the
        # batch mean, so its gradient is exactly zero and only weight decay moves it, by
        # lr x 5e-4 x |b| a step.
        if name.endswith(".conv.bias"):
            continue
        moved = (p.detach() - initial[name].detach()).abs().max().item()
        assert moved > 10 * tol, f"{name} moved by {moved:.2e} only, within 10 x its tolerance {tol:.2e}"
