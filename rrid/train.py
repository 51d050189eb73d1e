"""The training engine: ``fit(config)`` runs the paper's recipe and survives interruptions.

Per step (:func:`train_step`)::

    x, y   = next batch of N = P x K images (P identities, K images each)
    L      = L_triplet + λ L_CE                  (rrid.RRIDLoss, Eq. 3 and 4 of the paper)
    θ     <- SGD(θ, ∇L)                         two groups: backbone 1e-3, heads 1e-2

and per epoch (:func:`fit`): the learning rates step down (x0.1 at the milestones), the model is
evaluated every ``train.eval_every`` epochs, and ``last.pt`` is written (``best.pt`` too when
mAP improved). The loss values stay on the device and are brought to the host only every
``train.log_every`` steps (:func:`train_one_epoch`): there they are logged, checked for NaN and
handed to the callbacks, so a step never waits for the GPU.

Reproducibility. Every batch is drawn after re-seeding the random generators from
(seed, epoch, batch, rank), so the augmentation of batch b is the same whether the run got
there in one go or was killed and resumed from a checkpoint. Together with the P x K
sampler's own (seed, epoch) order and the saved model, optimiser, scheduler and gradient
scaler, a resumed run on the CPU ends with weights bitwise equal to an uninterrupted one.
(With ``data.workers > 0`` the augmentation runs in worker processes that
``rrid.data.build_loaders`` seeds from (seed, rank): runs repeat from the start, but only
``workers: 0`` makes a resume in the middle of an epoch exact.)

Devices (:mod:`rrid.runtime`). CUDA runs with autocast (bf16 on GPUs with bf16 convolutions,
fp16 plus a gradient scaler on older ones), channels_last and cudnn benchmark; the CPU runs the
same code with autocast off (or bf16 on request). Under ``torchrun`` the model is wrapped in
DistributedDataParallel, each rank draws its own share of the P x K batches, and only rank 0
writes files and evaluates.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from rrid import data as rdata
from rrid import runtime
from rrid.callbacks import Callback
from rrid.checkpoint import load_weights, model_payload
from rrid.config import ConfigError, ExperimentConfig, OptimConfig, check_device, load_config
from rrid.errors import CheckpointError, RunFolderError
from rrid.evaluation import evaluate
from rrid.losses import RRIDLoss
from rrid.metrics import summarize
from rrid.model import RRID, param_groups
from rrid.runs import Run, open_run
from rrid.weights import imagenet_state_dict

__all__ = ["fit", "FitResult", "TrainerState", "NonFiniteLossError", "train_step", "train_one_epoch",
           "build_optimizer", "build_scheduler", "build_dataset", "hold_out_ids", "build_model", "build_run_loaders",
           "LOSS_PARTS"]

LOSS_PARTS = ("total", "triplet", "ce", "acc")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped and wrote nothing after it."""


@dataclass
class FitResult:
    history: list[dict]                 # one record per epoch: loss parts, lr, img/s, mAP when evaluated
    best_checkpoint: Optional[Path]     # best.pt (highest mAP), None if never evaluated
    last_checkpoint: Path               # last.pt
    metrics: dict                       # the last evaluation: mAP, rank1, rank5, rank10, mINP


@dataclass
class TrainerState:
    """What a training loop carries from step to step; callbacks see it too.

    ``model`` is the bare RRID, ``net`` what the step calls (the DDP wrapper under ``torchrun``).
    ``sums`` holds the running sums of ``LOSS_PARTS`` over the epoch, on the device.
    """
    config: Optional[ExperimentConfig]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    epoch: int = 0                      # 0-based epoch in progress (or just finished)
    step: int = 0                       # optimiser steps taken so far
    steps_per_epoch: int = 0
    out_dir: Optional[Path] = None
    rank: int = 0
    world_size: int = 1
    history: list[dict] = field(default_factory=list)
    scheduler: Any = None               # stepped by the caller, once per epoch
    step_scheduler: Any = None          # stepped by train_step after every update
    criterion: nn.Module = field(default_factory=RRIDLoss)
    scaler: Optional[torch.amp.GradScaler] = None
    net: Optional[nn.Module] = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp_dtype: Optional[torch.dtype] = None
    memory_format: torch.memory_format = torch.contiguous_format
    batch: int = 0                      # batches of the current epoch done
    sums: Optional[torch.Tensor] = None
    best_map: float = -1.0
    best_step: int = -1
    _bad: Optional[torch.Tensor] = None  # (step, value) of the first non-finite loss, on the device

    def __post_init__(self):
        self.net = self.net if self.net is not None else self.model
        self.sums = self.sums if self.sums is not None else torch.zeros(len(LOSS_PARTS), dtype=torch.float64)
        self.sums = self.sums.to(self.device)
        self._bad = torch.tensor([-1.0, 0.0], dtype=torch.float64, device=self.device)

    def lrs(self) -> dict:
        return {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}


# ----------------------------------------------------------------------------- one step, one epoch

def train_step(state: TrainerState, inputs: torch.Tensor, labels: torch.Tensor, check: bool = False) -> torch.Tensor:
    """One SGD step on a batch: ``state.criterion`` (``RRIDLoss``: L = L_triplet + λ L_CE, Eq. 3)
    on ``state.net(inputs)`` under autocast, backward (through the gradient scaler with fp16),
    update, and the per-step schedule if any.

    Returns the detached loss parts (``LOSS_PARTS``) on the device: nothing here waits for the
    GPU. ``check`` validates the batch's P x K structure (that costs one host sync).
    """
    with runtime.autocast(state.device, state.amp_dtype):
        out = state.net(inputs)
    loss, parts = state.criterion(out, labels, check=check)
    state.optimizer.zero_grad(set_to_none=True)
    if state.scaler is not None and state.scaler.is_enabled():
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        loss.backward()
        state.optimizer.step()
    if state.step_scheduler is not None:
        state.step_scheduler.step()
    state.step += 1
    values = torch.stack([parts[k].float() for k in LOSS_PARTS])
    _track_nonfinite(state, values[0])
    return values


def _track_nonfinite(state: TrainerState, total: torch.Tensor) -> None:
    """Remember (step, value) of the first non-finite loss in ``state._bad``, on the device: no
    host sync here (``torch.full`` fills on the device; ``torch.tensor(step)`` would copy and wait)."""
    first = (state._bad[0] < 0) & ~torch.isfinite(total)
    now = torch.stack([torch.full((), state.step, dtype=torch.float64, device=total.device), total.double()])
    state._bad = torch.where(first, now, state._bad)


def _host_values(state: TrainerState, values: torch.Tensor) -> dict:
    """The step's loss parts (averaged over ranks) as floats, after checking that no loss since the
    last check was NaN or infinite (``NonFiniteLossError`` names the first such step)."""
    packed = torch.cat([values.double(), state.sums, state._bad[:1].clamp(min=0)])
    if state.world_size > 1:
        dist.all_reduce(packed)
        packed[:2 * len(LOSS_PARTS)] /= state.world_size
    packed = packed.cpu()
    if not torch.isfinite(packed[:2 * len(LOSS_PARTS)]).all() or packed[-1] > 0:
        bad_step, bad_value = state._bad.tolist()
        bad_step = int(bad_step) if bad_step >= 0 else state.step
        batch = state.batch - (state.step - bad_step)
        raise NonFiniteLossError(
            f"loss is {bad_value if bad_step >= 0 else float('nan')} at step {bad_step} (epoch {state.epoch + 1}, "
            f"batch {batch}); training stopped at step {state.step}, where losses are checked "
            "(every train.log_every steps), and wrote nothing after it")
    return dict(zip(LOSS_PARTS, packed[:len(LOSS_PARTS)].tolist()))


def train_one_epoch(state: TrainerState, batches: Iterable, callbacks: Iterable[Callback] = (), log_every: int = 20,
                    sync_also: int = 0, on_sync=None) -> dict:
    """Run :func:`train_step` over ``batches`` (pairs of inputs and labels): the rest of an epoch of
    ``state.steps_per_epoch`` batches, of which ``state.batch`` are done.

    The loss parts are summed on the device; every ``log_every`` steps, every ``sync_also`` steps
    (0: never) and at the end of the epoch they come to the host once: checked for NaN, handed to
    ``on_sync(state, logs)`` and to every callback's ``on_step(state, logs)`` with logs = the
    step's parts and ``"lr"``. Returns the epoch's record: the mean of each part and the lr.
    """
    callbacks = list(callbacks)
    for i, (inputs, labels) in enumerate(batches):
        values = train_step(state, inputs, labels, check=i == 0)
        state.sums += values.double()
        state.batch += 1
        last = state.batch == state.steps_per_epoch
        if last or state.step % log_every == 0 or (sync_also and state.step % sync_also == 0):
            logs = {**_host_values(state, values), "lr": state.lrs()}
            if on_sync is not None:
                on_sync(state, logs)
            for cb in callbacks:
                cb.on_step(state, logs)
    sums = state.sums.clone()
    if state.world_size > 1:
        dist.all_reduce(sums)
        sums /= state.world_size
    return {**dict(zip(LOSS_PARTS, (sums.cpu() / state.steps_per_epoch).tolist())), "lr": state.lrs()}


# ----------------------------------------------------------------------------- building a run

def build_optimizer(params, optim: OptimConfig) -> torch.optim.SGD:
    """SGD with momentum and weight decay. ``params``: parameters, or groups with their own "lr"
    (:func:`rrid.param_groups`: backbone 1e-3, heads 1e-2); groups without one use ``optim.head_lr``."""
    return torch.optim.SGD(params, lr=optim.head_lr, momentum=optim.momentum, weight_decay=optim.weight_decay,
                           nesterov=optim.nesterov)


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig):
    """The staircase schedule, stepped once per epoch: every learning rate x ``gamma`` at each of
    ``milestones`` (epochs 40 and 60 of 80 in the paper)."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(optim.milestones), optim.gamma)


def build_dataset(cfg: ExperimentConfig):
    """The data set named by ``cfg.data`` (the synthetic one is generated on first use)."""
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
    dataset = hold_out_ids(dataset, d.val_ids) if d.val_ids else dataset
    if d.p > dataset.num_train_ids:
        raise ConfigError(f"data.p={d.p}: the training split of {d.root} has only {dataset.num_train_ids} identities; "
                          f"set data.p to at most {dataset.num_train_ids}")
    return dataset


@dataclass
class _Split:
    train: list
    query: list
    gallery: list
    num_train_ids: int
    val: list


def hold_out_ids(dataset, n: int) -> _Split:
    """Train on all but the last ``n`` training identities (the authors' code: 651 + 100 on
    Market-1501; ``data.val_ids``, 100 in ``configs/base.yaml``). Training labels are 0..K-1 in
    sorted order of the original ids, so these are the last ``n`` ids in that order. The
    held-out images are kept in ``.val`` (``fit`` does not use them); the test split is unchanged.
    A split that leaves fewer than 2 identities is a ``ConfigError`` naming ``data.val_ids``."""
    keep = dataset.num_train_ids - n
    if keep < 2:
        raise ConfigError(f"data.val_ids={n}: expected at most {dataset.num_train_ids - 2} (the training split has "
                          f"{dataset.num_train_ids} identities and at least 2 must remain); "
                          "--set data.val_ids=0 trains on all of them")
    train = [r for r in dataset.train if r.pid < keep]
    val = [r for r in dataset.train if r.pid >= keep]
    return _Split(train, dataset.query, dataset.gallery, keep, val)


def build_run_loaders(cfg: ExperimentConfig, dataset, device: torch.device, rank: int = 0, world: int = 1):
    """The train / query / gallery loaders of a run, as ``cfg.data`` describes them."""
    d = cfg.data
    return rdata.build_loaders(dataset, height=d.height, width=d.width, p=d.p, k=d.k, epoch_length=d.epoch_length,
                               seed=cfg.train.seed, workers=d.workers, cache=d.cache, rank=rank, world_size=world,
                               test_batch_size=d.test_batch_size, pin_memory=device.type == "cuda", erasing=d.erasing)


def build_model(cfg: ExperimentConfig, num_classes: int) -> RRID:
    """``RRID(cfg.model, num_classes)`` initialised from ``cfg.train.seed``."""
    torch.manual_seed(cfg.train.seed)
    return RRID(cfg.model, num_classes)


def _build_state(cfg: ExperimentConfig, num_classes: int, env: runtime.Distributed, run: Run) -> TrainerState:
    """Model, optimiser, schedule, gradient scaler and loss of a run, on its device."""
    t, device = cfg.train, env.device
    if cfg.model.pretrained and run.checkpoint is None:      # fetched and verified once, by rank 0 first
        env.main_first(lambda: imagenet_state_dict(cfg.model.backbone))
    model_cfg = cfg if run.checkpoint is None else dataclasses.replace(     # the checkpoint holds the weights
        cfg, model=dataclasses.replace(cfg.model, pretrained=False))
    amp = runtime.amp_dtype(t.amp, device)
    channels_last = t.channels_last == "on" or (t.channels_last == "auto" and device.type == "cuda")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(model_cfg, num_classes).to(device, memory_format=memory_format)
    if t.sync_bn and env.world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(param_groups(model, cfg.optim.backbone_lr, cfg.optim.head_lr), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim)
    criterion = RRIDLoss(cfg.loss.margin, cfg.loss.ce_weight, cfg.loss.label_smoothing, cfg.loss.triplet_mode)
    return TrainerState(cfg, model, optimizer, out_dir=run.out, rank=env.rank, world_size=env.world,
                        scheduler=scheduler, criterion=criterion, device=device, amp_dtype=amp,
                        scaler=torch.amp.GradScaler(device.type, enabled=amp == torch.float16),
                        memory_format=memory_format)


def _resume(state: TrainerState, ckpt: dict, loaders, run: Run) -> None:
    """Put the state of ``last.pt`` back: weights, optimiser, schedule, scaler, sampler, counters
    and every random generator."""
    saved_world = ckpt.get("world_size", 1)
    if saved_world != state.world_size:
        raise RunFolderError(f"cannot resume {run.out}: its last.pt was saved by a run of {saved_world} process(es), "
                             f"this one has {state.world_size}; resume with the same number of GPUs "
                             f"(torchrun --nproc_per_node={saved_world}) or start a new run elsewhere")
    load_weights(state.model, ckpt["model"], run.last, f"the model of {state.config.name or 'the config'}")
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    state.scaler.load_state_dict(ckpt["scaler"])
    try:
        loaders.sampler.load_state_dict(ckpt["sampler"])
    except ValueError as e:
        raise RunFolderError(f"cannot resume {run.out}: the training data differ from the saved run's ({e})") from None
    state.epoch, state.batch, state.step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
    state.best_map, state.best_step = ckpt["best_map"], ckpt.get("best_step", -1)
    state.sums = ckpt["epoch_sums"].clone().to(state.device)
    runtime.set_rng_state(ckpt["rng"], getattr(loaders.train, "generator", None), state.device)


# ----------------------------------------------------------------------------- the run folder

# ----------------------------------------------------------------------------- the epoch

def _batches(state: TrainerState, loaders, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The epoch's batches from ``start`` on, each drawn after re-seeding every generator from
    (seed, epoch, batch, rank), and moved to the device."""
    seed, epoch, rank = state.config.train.seed, state.epoch, state.rank
    loaders.sampler.set_epoch(epoch, start_batch=start)
    runtime.seed_everything(runtime.batch_seed(seed, epoch, -1, rank))
    generator = getattr(loaders.train, "generator", None)
    if generator is not None:
        generator.manual_seed(runtime.batch_seed(seed, epoch, -1, rank))
    batches = iter(loaders.train)
    for b in range(start, state.steps_per_epoch):
        runtime.seed_everything(runtime.batch_seed(seed, epoch, b, rank))
        images, pids, _ = next(batches)
        yield (images.to(state.device, non_blocking=True, memory_format=state.memory_format),
               pids.to(state.device, non_blocking=True))


def _train_epoch(state: TrainerState, loaders, run: Run, callbacks: list, bar) -> dict:
    """One epoch of training: log lines, mid-epoch checkpoints, callbacks; the epoch's record."""
    t, start, images_per_step = state.config.train, state.batch, state.config.data.p * state.config.data.k
    images_per_step *= state.world_size
    if start == 0:
        state.sums.zero_()
    state.net.train()
    clock = {"time": time.perf_counter(), "step": state.step, "epoch": time.perf_counter()}

    def on_sync(state: TrainerState, logs: dict) -> None:
        now = time.perf_counter()
        logs["img_per_s"] = images_per_step * (state.step - clock["step"]) / max(now - clock["time"], 1e-9)
        clock.update(time=now, step=state.step)
        run.log.write({"kind": "step", "epoch": state.epoch, "batch": state.batch, "step": state.step, **logs})
        bar.update(state.batch - bar.n)
        bar.set_postfix(loss=f"{logs['total']:.3f}", refresh=False)
        if t.checkpoint_every_steps and state.step % t.checkpoint_every_steps == 0 \
                and state.batch < state.steps_per_epoch:
            run.save(_checkpoint(state, loaders))

    try:
        record = train_one_epoch(state, _batches(state, loaders, start), callbacks, t.log_every,
                                 t.checkpoint_every_steps, on_sync)
    except NonFiniteLossError as e:
        kept = f"the last good checkpoint is {run.last}" if run.last.exists() else "no checkpoint was written yet"
        raise NonFiniteLossError(f"{e}; {kept}") from None
    state.scheduler.step()
    elapsed = max(time.perf_counter() - clock["epoch"], 1e-9)
    record = {"kind": "epoch", "epoch": state.epoch, "step": state.step, **record,
              "img_per_s": images_per_step * (state.steps_per_epoch - start) / elapsed}
    run.log.write(record)
    return {k: v for k, v in record.items() if k != "kind"}


def _evaluate(state: TrainerState, loaders, run: Run, callbacks: list, progress: bool) -> dict:
    """mAP and CMC on the test split (rank 0; the other ranks wait); {} when no evaluation is due."""
    t, e = state.config.train, state.config.eval
    if not ((state.epoch + 1) % t.eval_every == 0 or state.epoch + 1 == t.epochs):
        return {}
    metrics = {}
    if run.main:
        raw, _ = evaluate(state.model, loaders, flip=e.flip, rerank=e.rerank, device=state.device,
                          amp=state.amp_dtype or False, progress=progress, ranking_metric=e.metric)
        metrics = summarize(raw)
        run.log.write({"kind": "eval", "epoch": state.epoch, "step": state.step, **metrics})
        for cb in callbacks:
            cb.on_eval(state, metrics)
    if state.world_size > 1:
        dist.barrier()
    return metrics


def _end_epoch(state: TrainerState, loaders, run: Run, entry: dict, metrics: dict) -> None:
    """Close the epoch: record it, write last.pt (it records best_step), then best.pt as its copy
    when mAP improved. A kill between the two leaves a last.pt from which resume re-creates best.pt."""
    entry.update(metrics)
    improved = bool(metrics) and metrics["mAP"] > state.best_map
    if improved:
        state.best_map, state.best_step = metrics["mAP"], state.step
    state.history.append(entry)
    state.batch = 0
    run.save(_checkpoint(state, loaders), best=improved, epochs_done=state.epoch + 1,
             final=state.epoch + 1 == state.config.train.epochs)


def _checkpoint(state: TrainerState, loaders) -> dict:
    """last.pt's payload: the model and everything a resume needs, after ``state.batch`` batches of
    ``state.epoch`` (0: the epoch is done and the next starts)."""
    batch = state.batch if state.batch < state.steps_per_epoch else 0
    return {
        **model_payload(state.model, state.config), "optimizer": state.optimizer.state_dict(),
        "scheduler": _plain_scheduler_state(state.scheduler.state_dict()), "scaler": state.scaler.state_dict(),
        "sampler": loaders.sampler.state_dict(batches_done=batch),
        "rng": runtime.rng_state(getattr(loaders.train, "generator", None), state.device),
        "epoch": state.epoch + (batch == 0), "batch": batch, "step": state.step, "best_map": state.best_map,
        "best_step": state.best_step, "epoch_sums": state.sums.cpu().clone(), "world_size": state.world_size,
    }


def _plain_scheduler_state(state: dict) -> dict:
    # MultiStepLR keeps its milestones in a collections.Counter, which weights_only refuses.
    return {k: (dict(v) if k == "milestones" else v) for k, v in state.items()}


def _check_classes(run: Run, dataset) -> None:
    saved = run.checkpoint.get("num_classes", dataset.num_train_ids)
    if saved != dataset.num_train_ids:
        raise CheckpointError(f"checkpoint {run.last} was trained on {saved} identities, the data set has "
                              f"{dataset.num_train_ids}: resume on the same data")


def _progress(progress: bool, env: runtime.Distributed) -> bool:
    value = os.environ.get("TQDM_DISABLE", "").lower()
    return progress and env.main and value in ("", "0", "false", "no")


def fit(config: ExperimentConfig | str | os.PathLike, out_dir: str | os.PathLike | None = None,
        callbacks: Iterable[Callback] = (), resume: bool = False, device: Any = None,
        progress: bool = True, overwrite: bool = False) -> FitResult:
    """Train ``config`` and return its history and checkpoints.

    config    an ``ExperimentConfig`` or the path of a YAML file
    out_dir   run folder: config.yaml, metrics.jsonl, last.pt, best.pt (default:
              ``config.train.out_dir``, else a new temporary folder)
    callbacks ``rrid.Callback`` objects (``rrid.LivePlot`` draws the curves)
    resume    continue from ``out_dir/last.pt`` (a new run when there is none yet); the config
              must equal the saved one except for ``RESUME_MAY_DIFFER`` (epochs, device, ...)
    device    overrides ``config.train.device`` ("cpu", "cuda", "cuda:1", ...)
    overwrite start a new run in a folder that holds one, deleting its files

    A folder that holds a run is refused without ``resume`` or ``overwrite`` (``RunFolderError``),
    and nothing is written before the folder, the data and the model have been checked. Raises
    ``NonFiniteLossError`` naming the step when the loss is NaN or infinite; the last checkpoint
    written before it stays in place.
    """
    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
    if resume and overwrite:
        raise ValueError("fit(resume=True, overwrite=True): choose one (--resume or --overwrite)")
    device = check_device(str(device or cfg.train.device), "--device" if device else "train.device")
    callbacks = list(callbacks)
    with runtime.distributed(device) as env, open_run(cfg, out_dir, resume, overwrite, env) as run, \
            runtime.torch_settings(cfg.train, env.device):
        dataset = env.main_first(lambda: build_dataset(cfg))     # rank 0 generates a synthetic set first
        loaders = build_run_loaders(cfg, dataset, env.device, env.rank, env.world)
        state = _build_state(cfg, dataset.num_train_ids, env, run)
        if run.checkpoint is not None:
            _check_classes(run, dataset)
            _resume(state, run.checkpoint, loaders, run)
        state.history = run.start(cfg, state.step if run.checkpoint is not None else None)   # written from here on
        if env.world > 1:
            state.net = nn.parallel.DistributedDataParallel(
                state.model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
        loaders.sampler.set_epoch(0)
        state.steps_per_epoch = len(loaders.sampler)
        metrics, show = {}, _progress(progress, env)
        for cb in callbacks:
            cb.on_fit_start(state)
        epochs = tqdm(total=cfg.train.epochs, initial=state.epoch, desc="epochs", disable=not show)
        for epoch in range(state.epoch, cfg.train.epochs):
            state.epoch = epoch
            with tqdm(total=state.steps_per_epoch, initial=state.batch, desc=f"epoch {epoch + 1}", leave=False,
                      disable=not show, unit="img", unit_scale=cfg.data.p * cfg.data.k * env.world) as bar:
                entry = _train_epoch(state, loaders, run, callbacks, bar)
            for cb in callbacks:
                cb.on_epoch(state, entry)
            evaluated = _evaluate(state, loaders, run, callbacks, show)
            metrics = evaluated or metrics
            _end_epoch(state, loaders, run, entry, evaluated)
            epochs.set_postfix({k: f"{entry[k]:.3f}" for k in ("total", "mAP") if k in entry}, refresh=False)
            epochs.update()
        epochs.close()
        for cb in callbacks:
            cb.on_fit_end(state)
        env.barrier()
    return FitResult(state.history, run.best if run.best.exists() else None, run.last, metrics)
