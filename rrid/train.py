"""The training engine: ``fit(config)`` runs the paper's recipe and survives interruptions.

One loop for every device. Per step::

    x, y   = next batch of N = P x K images (P identities, K images each)
    L      = L_triplet + λ L_CE                  (rrid.RRIDLoss, Eq. 3 and 4 of the paper)
    θ     <- SGD(θ, ∇L)                         two groups: backbone 1e-3, heads 1e-2

and per epoch: the learning rates step down (x0.1 at the milestones), the model is evaluated
every ``train.eval_every`` epochs, and ``last.pt`` is written (``best.pt`` too when mAP improved).

Reproducibility. Every batch is drawn after re-seeding the random generators from
(seed, epoch, batch, rank), so the augmentation of batch b is the same whether the run got
there in one go or was killed and resumed from a checkpoint. Together with the P x K
sampler's own (seed, epoch) order and the saved model, optimiser, scheduler and gradient
scaler, a resumed run on the CPU ends with weights bitwise equal to an uninterrupted one.
(With ``data.workers > 0`` the augmentation runs in worker processes that
``rrid.data.build_loaders`` seeds from (seed, rank): runs repeat from the start, but only
``workers: 0`` makes a resume in the middle of an epoch exact.)

Devices. CUDA runs with autocast (bf16 where supported, fp16 plus a gradient scaler
otherwise), channels_last and cudnn benchmark; the CPU runs the same code with autocast off
(or bf16 on request). Under ``torchrun`` the model is wrapped in DistributedDataParallel,
each rank draws its own share of the P x K batches, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from rrid.callbacks import Callback
from rrid.config import ExperimentConfig, config_from_dict, config_to_dict, load_config, save_config
from rrid.files import atomic_write
from rrid.losses import RRIDLoss
from rrid.model import RRID, param_groups

__all__ = ["fit", "FitResult", "TrainerState", "NonFiniteLossError", "CheckpointError",
           "build_dataset", "build_model", "build_run_loaders", "model_payload", "save_checkpoint", "load_checkpoint",
           "load_model", "batch_seed",
           "seed_everything"]

CHECKPOINT_FORMAT = 1
LOSS_PARTS = ("total", "triplet", "ce", "acc")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before the update."""


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (truncated, corrupted, or not an rrid checkpoint)."""


@dataclass
class FitResult:
    history: list[dict]                 # one record per epoch: loss parts, lr, img/s, mAP when evaluated
    best_checkpoint: Optional[Path]     # best.pt (highest mAP), None if never evaluated
    last_checkpoint: Path               # last.pt
    metrics: dict                       # the last evaluation: mAP, rank1, rank5, rank10, mINP


@dataclass
class TrainerState:
    """What callbacks see: the run's position and its objects."""
    config: ExperimentConfig
    model: nn.Module                    # the bare RRID (not the DDP wrapper)
    optimizer: torch.optim.Optimizer
    epoch: int                          # 0-based epoch in progress (or just finished)
    step: int                           # optimiser steps taken so far
    steps_per_epoch: int
    out_dir: Path
    rank: int = 0
    world_size: int = 1
    history: list[dict] = field(default_factory=list)


# ----------------------------------------------------------------------------- building blocks

def build_dataset(cfg: ExperimentConfig):
    """The data set named by ``cfg.data`` (the synthetic one is generated on first use)."""
    from rrid import data as rdata

    d = cfg.data
    if d.dataset == "synthetic":
        dataset = rdata.Market1501(rdata.synthetic.ensure(d.root, **d.synthetic))
    elif d.dataset == "market1501":
        dataset = rdata.Market1501(d.root)
    elif d.dataset == "dukemtmc":
        dataset = rdata.DukeMTMCReID(d.root)
    elif d.dataset == "cuhk03":
        dataset = rdata.CUHK03NP(d.root, d.variant)
    elif d.dataset == "openreid":
        dataset = rdata.OpenReID(d.root)
    else:
        dataset = rdata.ImageList(d.root)
    return hold_out_ids(dataset, d.val_ids) if d.val_ids else dataset


@dataclass
class _Split:
    train: list
    query: list
    gallery: list
    num_train_ids: int
    val: list


def hold_out_ids(dataset, n: int) -> _Split:
    """Train on all but the last ``n`` training identities (the authors' code: 651 + 100 on
    Market-1501). The held-out images are kept in ``.val``; the test split is unchanged."""
    keep = dataset.num_train_ids - n
    if keep < 2:
        raise ValueError(f"data.val_ids={n}: the training split has only {dataset.num_train_ids} identities")
    train = [r for r in dataset.train if r.pid < keep]
    val = [r for r in dataset.train if r.pid >= keep]
    return _Split(train, dataset.query, dataset.gallery, keep, val)


def build_run_loaders(cfg: ExperimentConfig, dataset, device: torch.device, rank: int = 0, world: int = 1):
    """The train / query / gallery loaders of a run, as ``cfg.data`` describes them."""
    from rrid.data import build_loaders

    d = cfg.data
    return build_loaders(dataset, height=d.height, width=d.width, p=d.p, k=d.k, epoch_length=d.epoch_length,
                         seed=cfg.train.seed, workers=d.workers, cache=d.cache, rank=rank, world_size=world,
                         test_batch_size=d.test_batch_size, pin_memory=device.type == "cuda", erasing=d.erasing)


def build_model(cfg: ExperimentConfig, num_classes: int) -> RRID:
    """``RRID(cfg.model, num_classes)`` initialised from ``cfg.train.seed``."""
    torch.manual_seed(cfg.train.seed)
    return RRID(cfg.model, num_classes)


def batch_seed(seed: int, epoch: int, batch: int, rank: int = 0) -> int:
    """The seed of batch ``batch`` of ``epoch`` on ``rank`` (batch -1: the loader's start)."""
    return int(np.random.SeedSequence([seed, epoch, batch + 1, rank]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (augmentation draws from them)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _amp_dtype(mode: str, device: torch.device) -> Optional[torch.dtype]:
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def _pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


@contextlib.contextmanager
def _torch_settings(train, device: torch.device):
    """Threads, determinism and cudnn benchmark for the run; the previous values come back after."""
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    deterministic = train.deterministic == "on" or (train.deterministic == "auto" and device.type == "cpu")
    try:
        if train.num_threads:
            torch.set_num_threads(train.num_threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
        torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic
        torch.backends.cudnn.deterministic = deterministic
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]


def _init_distributed(device_name: str) -> tuple[int, int, int, bool]:
    """(rank, world_size, local_rank, created) from torchrun's environment variables."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world <= 1:
        return 0, 1, local_rank, False
    created = not dist.is_initialized()
    if created:
        cuda = torch.cuda.is_available() and not device_name.startswith("cpu")
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank, created


# ----------------------------------------------------------------------------- checkpoints

def _rng_state(loader_generator: Optional[torch.Generator]) -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": torch.tensor(py[1], dtype=torch.int64), "python_version": py[0],
        "python_gauss": py[2] if py[2] is not None else float("nan"),
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]), "numpy_gauss": float(np_state[4]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def _set_rng_state(state: dict, loader_generator: Optional[torch.Generator]) -> None:
    gauss = state["python_gauss"]
    random.setstate((state["python_version"], tuple(state["python"].tolist()), None if math.isnan(gauss) else gauss))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "loader" in state and loader_generator is not None:
        loader_generator.set_state(state["loader"])


def model_payload(model: RRID, config: ExperimentConfig) -> dict:
    """The part of a checkpoint that ``load_model`` and ``python -m rrid eval`` read: the format
    version, the model's state dict, its number of classes and the run's config. ``fit`` adds
    the training state to it; ``rrid.authors.import_authors`` writes it alone."""
    return {"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "num_classes": model.num_classes,
            "config": config_to_dict(config)}


def save_checkpoint(payload: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``.

    A crash at any point leaves either the old file or the new one, never half of one.
    """
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read a checkpoint written by ``fit`` (``weights_only=True``); a clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {path} cannot be read; it is truncated, corrupted or not a PyTorch file "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            "Delete it (and resume from another) or start the run again.") from None
    if not isinstance(payload, dict) or "model" not in payload:
        raise CheckpointError(f"checkpoint {path} is not an rrid checkpoint: expected a dict with a 'model' entry")
    return payload


def load_model(path: str | os.PathLike, device: Any = "cpu") -> RRID:
    """The trained model of a checkpoint written by ``fit``, in eval mode."""
    ckpt = load_checkpoint(path)
    if "config" not in ckpt or "num_classes" not in ckpt:
        raise CheckpointError(f"checkpoint {path} has no 'config'/'num_classes'; build the model yourself and "
                              "load ckpt['model'] into it")
    cfg = config_from_dict(ckpt["config"], source=f"{path} (config)")
    cfg.model.pretrained = False                 # the checkpoint holds the weights
    model = RRID(cfg.model, ckpt["num_classes"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


def _plain_scheduler_state(state: dict) -> dict:
    # MultiStepLR keeps its milestones in a collections.Counter, which weights_only refuses.
    return {k: (dict(v) if k == "milestones" else v) for k, v in state.items()}


# ----------------------------------------------------------------------------- logging

class _RunLog:
    """metrics.jsonl (one JSON object a line) and optional TensorBoard, rank 0 only."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool, resume_step: Optional[int]):
        self.path, self.enabled, self.writer = out_dir / "metrics.jsonl", enabled, None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            self._truncate(resume_step)
        elif self.path.exists():
            self.path.unlink()
        if tensorboard:
            with contextlib.suppress(ImportError, ModuleNotFoundError):
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def _truncate(self, step: int) -> None:
        """Keep the complete lines up to the checkpoint's step (a killed run may have written more)."""
        kept = []
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                record = json.loads(line)
                if record.get("step", 0) <= step:
                    kept.append(line)
        with atomic_write(self.path) as f:
            f.write("".join(line + "\n" for line in kept))

    def history(self) -> list[dict]:
        if not self.enabled or not self.path.exists():
            return []
        records = [json.loads(line) for line in self.path.read_text().splitlines()]
        return _epoch_history(records)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in _flat(record).items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch", "batch"):
                    self.writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _flat(record: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = value
    return out


def _epoch_history(records: list[dict]) -> list[dict]:
    by_epoch: dict[int, dict] = {}
    for r in records:
        if r["kind"] in ("epoch", "eval"):
            entry = by_epoch.setdefault(r["epoch"], {})
            entry.update({k: v for k, v in r.items() if k != "kind"})
    return [by_epoch[e] for e in sorted(by_epoch)]


def _summary(metrics: dict) -> dict:
    cmc = np.asarray(metrics["cmc"])
    out = {"mAP": float(metrics["mAP"]), "rank1": float(cmc[0])}
    out.update({f"rank{k}": float(cmc[k - 1]) for k in (5, 10) if len(cmc) >= k})
    for key in ("mINP", "num_valid_queries"):
        if key in metrics:
            out[key] = float(metrics[key])
    return out


def _progress_enabled(progress: bool, rank: int) -> bool:
    env = os.environ.get("TQDM_DISABLE", "").lower()
    return progress and rank == 0 and env in ("", "0", "false", "no")


# ----------------------------------------------------------------------------- the loop

def fit(config: ExperimentConfig | str | os.PathLike, out_dir: str | os.PathLike | None = None,
        callbacks: Iterable[Callback] = (), resume: bool = False, device: Any = None,
        progress: bool = True) -> FitResult:
    """Train ``config`` and return its history and checkpoints.

    config    an ``ExperimentConfig`` or the path of a YAML file
    out_dir   run folder: config.yaml, metrics.jsonl, last.pt, best.pt (default:
              ``config.train.out_dir``, else a new temporary folder)
    callbacks ``rrid.Callback`` objects (``rrid.LivePlot`` draws the curves)
    resume    continue from ``out_dir/last.pt`` (a new run when there is none yet)
    device    overrides ``config.train.device`` ("cpu", "cuda", "cuda:1", ...)

    Raises ``NonFiniteLossError`` naming the step when the loss is NaN or infinite; the
    last checkpoint written before it stays in place.
    """
    from tqdm.auto import tqdm

    from rrid.evaluation import evaluate

    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
    t = cfg.train
    rank, world, local_rank, created_group = _init_distributed(str(device or t.device))
    try:
        device = _pick_device(str(device or t.device), local_rank)
        if out_dir is None and rank == 0:
            out_dir = t.out_dir or tempfile.mkdtemp(prefix="rrid-run-")
        if world > 1:                                # every rank needs the folder name
            box = [str(out_dir) if rank == 0 else None]
            dist.broadcast_object_list(box, src=0)
            out_dir = box[0]
        out = Path(out_dir)
        last_path, best_path = out / "last.pt", out / "best.pt"
        ckpt = load_checkpoint(last_path) if resume and last_path.exists() else None
        if resume and ckpt is None and rank == 0:   # the first session of a run started with --resume
            print(f"no checkpoint in {out} yet: starting a new run there")
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out / "config.yaml")
        callbacks = list(callbacks)

        with _torch_settings(t, device):
            amp_dtype = _amp_dtype(t.amp, device)
            channels_last = t.channels_last == "on" or (t.channels_last == "auto" and device.type == "cuda")
            memory_format = torch.channels_last if channels_last else torch.contiguous_format

            dataset = build_dataset(cfg) if rank == 0 else None
            if world > 1:                        # rank 0 generates the synthetic set, the others wait
                dist.barrier()
                dataset = build_dataset(cfg) if rank != 0 else dataset
            d = cfg.data
            loaders = build_run_loaders(cfg, dataset, device, rank, world)
            sampler, generator = loaders.sampler, getattr(loaders.train, "generator", None)

            model = build_model(cfg, dataset.num_train_ids).to(device, memory_format=memory_format)
            if t.sync_bn and world > 1:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            optimizer = torch.optim.SGD(param_groups(model, cfg.optim.backbone_lr, cfg.optim.head_lr),
                                        lr=cfg.optim.head_lr, momentum=cfg.optim.momentum,
                                        weight_decay=cfg.optim.weight_decay, nesterov=cfg.optim.nesterov)
            scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.optim.milestones), cfg.optim.gamma)
            scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
            criterion = RRIDLoss(cfg.loss.margin, cfg.loss.ce_weight, cfg.loss.label_smoothing, cfg.loss.triplet_mode)

            start_epoch, start_batch, step, best_map = 0, 0, 0, -1.0
            sums = torch.zeros(len(LOSS_PARTS), dtype=torch.float64)
            if ckpt is not None:
                model.load_state_dict(ckpt["model"])
                optimizer.load_state_dict(ckpt["optimizer"])
                scheduler.load_state_dict(ckpt["scheduler"])
                scaler.load_state_dict(ckpt["scaler"])
                sampler.load_state_dict(ckpt["sampler"])
                start_epoch, start_batch, step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
                best_map, sums = ckpt["best_map"], ckpt["epoch_sums"].clone()
                _set_rng_state(ckpt["rng"], generator)
            net = model
            if world > 1:
                net = nn.parallel.DistributedDataParallel(
                    model, device_ids=[device.index] if device.type == "cuda" else None)

            log = _RunLog(out, rank == 0, t.tensorboard, step if ckpt is not None else None)
            history = log.history() if ckpt is not None else []
            sampler.set_epoch(0)
            steps_per_epoch = len(sampler)
            state = TrainerState(cfg, model, optimizer, start_epoch, step, steps_per_epoch, out, rank, world, history)
            metrics: dict = {}
            images_per_step = d.p * d.k * world

            def checkpoint(epoch: int, batch: int, path: Path = last_path) -> None:
                if rank != 0:
                    return
                payload = {
                    **model_payload(model, cfg), "optimizer": optimizer.state_dict(),
                    "scheduler": _plain_scheduler_state(scheduler.state_dict()), "scaler": scaler.state_dict(),
                    "sampler": sampler.state_dict(batches_done=batch), "rng": _rng_state(generator),
                    "epoch": epoch, "batch": batch, "step": step, "best_map": best_map, "epoch_sums": sums.clone(),
                    "world_size": world,
                }
                save_checkpoint(payload, path)

            def lrs() -> dict:
                return {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)}

            for cb in callbacks:
                cb.on_fit_start(state)
            show = _progress_enabled(progress, rank)
            epoch_bar = tqdm(total=t.epochs, initial=start_epoch, desc="epochs", disable=not show)
            for epoch in range(start_epoch, t.epochs):
                state.epoch = epoch
                batch0 = start_batch if epoch == start_epoch else 0
                if batch0 == 0:
                    sums.zero_()
                sampler.set_epoch(epoch, start_batch=batch0)
                seed_everything(batch_seed(t.seed, epoch, -1, rank))
                if generator is not None:
                    generator.manual_seed(batch_seed(t.seed, epoch, -1, rank))
                batches = iter(loaders.train)
                net.train()
                bar = tqdm(total=steps_per_epoch, initial=batch0, desc=f"epoch {epoch + 1}", leave=False, disable=not show,
                           unit="img", unit_scale=images_per_step)      # the rate reads in images per second
                tick, tick_step, epoch_tick = time.perf_counter(), step, time.perf_counter()
                for b in range(batch0, steps_per_epoch):
                    seed_everything(batch_seed(t.seed, epoch, b, rank))
                    images, pids, _ = next(batches)
                    images = images.to(device, non_blocking=True, memory_format=memory_format)
                    pids = pids.to(device, non_blocking=True)
                    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                        out_ = net(images)
                    out_ = type(out_)([e.float() for e in out_.embeddings], [lg.float() for lg in out_.logits])
                    loss, parts = criterion(out_, pids)

                    values = torch.stack([parts[k].float() for k in LOSS_PARTS])
                    if world > 1:
                        dist.all_reduce(values)
                        values /= world
                    values = values.double().cpu()
                    if not torch.isfinite(values[0]):
                        kept = f"the last good checkpoint is {last_path}" if last_path.exists() else "no checkpoint was written yet"
                        raise NonFiniteLossError(
                            f"loss is {values[0].item()} at step {step + 1} (epoch {epoch + 1}, batch {b + 1}); "
                            f"training stopped before the update; {kept}")
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    step += 1
                    state.step = step
                    sums += values

                    logs = dict(zip(LOSS_PARTS, values.tolist()))
                    logs["lr"] = lrs()
                    if step % t.log_every == 0 or b + 1 == steps_per_epoch:
                        now = time.perf_counter()
                        logs["img_per_s"] = images_per_step * (step - tick_step) / max(now - tick, 1e-9)
                        tick, tick_step = now, step
                        log.write({"kind": "step", "epoch": epoch, "batch": b + 1, "step": step, **logs})
                    bar.set_postfix(loss=f"{logs['total']:.3f}", refresh=False)
                    bar.update()
                    if t.checkpoint_every_steps and step % t.checkpoint_every_steps == 0 and b + 1 < steps_per_epoch:
                        checkpoint(epoch, b + 1)
                    for cb in callbacks:
                        cb.on_step(state, logs)
                bar.close()
                scheduler.step()

                n = steps_per_epoch
                record = {"kind": "epoch", "epoch": epoch, "step": step,
                          **{k: v / n for k, v in zip(LOSS_PARTS, sums.tolist())}, "lr": lrs(),
                          "img_per_s": images_per_step * (n - batch0) / max(time.perf_counter() - epoch_tick, 1e-9)}
                log.write(record)
                entry = {k: v for k, v in record.items() if k != "kind"}
                for cb in callbacks:
                    cb.on_epoch(state, entry)

                improved = False
                if (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs:
                    if rank == 0:
                        raw, _ = evaluate(model, loaders, flip=cfg.eval.flip, rerank=cfg.eval.rerank,
                                          device=device, amp=amp_dtype is not None, progress=show)
                        metrics = _summary(raw)
                        log.write({"kind": "eval", "epoch": epoch, "step": step, **metrics})
                        entry.update(metrics)
                        improved = metrics["mAP"] > best_map
                        best_map = max(best_map, metrics["mAP"])
                        for cb in callbacks:
                            cb.on_eval(state, metrics)
                    if world > 1:
                        dist.barrier()
                history.append(entry)
                checkpoint(epoch + 1, 0)
                if improved:
                    checkpoint(epoch + 1, 0, best_path)
                epoch_bar.set_postfix({k: f"{entry[k]:.3f}" for k in ("total", "mAP") if k in entry}, refresh=False)
                epoch_bar.update()
            epoch_bar.close()
            for cb in callbacks:
                cb.on_fit_end(state)
            log.close()
            if world > 1:
                dist.barrier()
    finally:
        if created_group and dist.is_initialized():
            dist.destroy_process_group()
    return FitResult(history, best_path if best_path.exists() else None, last_path, metrics)
