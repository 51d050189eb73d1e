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
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from rrid.callbacks import Callback
from rrid.config import (ConfigError, ExperimentConfig, check_device, config_diff, config_from_dict, config_to_dict,
                         load_config, save_config)
from rrid.errors import CheckpointError, RunFolderError
from rrid.files import atomic_path, atomic_write, describe_write_error, remove_stale_temps
from rrid.losses import RRIDLoss
from rrid.model import RRID, param_groups

__all__ = ["fit", "FitResult", "TrainerState", "NonFiniteLossError", "CheckpointError", "RunFolderError",
           "build_dataset", "build_model", "build_run_loaders", "model_payload", "save_checkpoint", "load_checkpoint",
           "load_model", "load_weights", "state_dict_mismatch", "tensor_checksums", "batch_seed", "seed_everything",
           "RUN_FILES", "RESUME_MAY_DIFFER"]

CHECKPOINT_FORMAT = 2                   # 2: with "checksums" and "best_step"
RUN_FILES = ("config.yaml", "metrics.jsonl", "last.pt", "best.pt")   # a folder holding any of these holds a run
# what --resume accepts to differ from the saved run: where and how fast it runs, how often it
# logs, evaluates and saves, how it evaluates, and where the data lives; never the model, data, recipe or seed
RESUME_MAY_DIFFER = ("name", "train.epochs", "train.device", "train.num_threads", "train.channels_last",
                     "train.log_every", "train.eval_every", "train.checkpoint_every_steps", "train.tensorboard",
                     "train.out_dir", "data.root", "data.workers", "data.cache", "data.test_batch_size",
                     "eval.flip", "eval.rerank", "eval.metric")
LOSS_PARTS = ("total", "triplet", "ce", "acc")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before the update."""


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


def _leaves(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, leaf) of a nested payload, dict keys in sorted order: "model/conv1.weight", "step", ..."""
    if isinstance(obj, dict):
        for key in sorted(obj, key=str):
            yield from _leaves(obj[key], f"{path}/{key}" if path else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _leaves(value, f"{path}/{i}")
    else:
        yield path, obj


def tensor_checksums(payload: dict) -> dict:
    """SHA-256 of every tensor of ``payload`` (its dtype, shape and bytes), keyed by its path,
    and one SHA-256 over all other values (epoch, step, config, ...): what ``save_checkpoint``
    stores under "checksums" and ``load_checkpoint`` recomputes."""
    tensors, values = {}, hashlib.sha256()
    for path, leaf in _leaves({k: v for k, v in payload.items() if k != "checksums"}):
        if isinstance(leaf, torch.Tensor):
            t = leaf.detach().cpu().contiguous().reshape(-1)
            digest = hashlib.sha256(f"{t.dtype} {tuple(leaf.shape)} ".encode())
            digest.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
            tensors[path] = digest.hexdigest()
        else:
            values.update(f"{path}={leaf!r}\n".encode())
    return {"algorithm": "sha256", "tensors": tensors, "values": values.hexdigest()}


def _verify_checksums(payload: dict, path: Path) -> None:
    stored = payload.get("checksums")
    if not isinstance(stored, dict) or stored.get("algorithm") != "sha256":
        warnings.warn(f"checkpoint {path} has no tensor checksums (written by an older rrid): its tensors "
                      "cannot be verified. Re-save it with rrid.train.save_checkpoint to add them.", stacklevel=3)
        return
    now = tensor_checksums(payload)
    for name, digest in stored["tensors"].items():
        if now["tensors"].get(name) != digest:
            what = "is missing" if name not in now["tensors"] else "differs from the checksum saved with it"
            raise CheckpointError(f"checkpoint {path} is corrupted: tensor {name!r} {what}. "
                                  "Delete it (and resume from another) or start the run again.")
    extra = [name for name in now["tensors"] if name not in stored["tensors"]]
    if extra or now["values"] != stored["values"]:
        what = f"tensor {extra[0]!r} has no saved checksum" if extra else "its non-tensor entries (step, config, ...) changed"
        raise CheckpointError(f"checkpoint {path} is corrupted: {what}. Delete it (and resume from another) "
                              "or start the run again.")


def _write_failed(err: BaseException, path: Path) -> None:
    """Raise a CheckpointError naming ``path`` when ``err`` is a failed write (disk full, ...)."""
    reason = describe_write_error(err)
    if reason is None:
        return                                   # not a write failure: a bug, let it show
    todo = f"free some space in {path.parent}" if "No space" in reason else f"check that {path.parent} is writable"
    raise CheckpointError(f"cannot write checkpoint {path}: {reason}. The previous {path.name}, if any, is "
                          f"unchanged; {todo} (or choose another folder) and continue with --resume") from err


def model_payload(model: RRID, config: ExperimentConfig) -> dict:
    """The part of a checkpoint that ``load_model`` and ``python -m rrid eval`` read: the format
    version, the model's state dict, its number of classes and the run's config. ``fit`` adds
    the training state to it; ``rrid.authors.import_authors`` writes it alone."""
    return {"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "num_classes": model.num_classes,
            "config": config_to_dict(config)}


def save_checkpoint(payload: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``.

    The payload is stored with its ``tensor_checksums`` under "checksums". A crash at any
    point leaves either the old file or the new one, never half of one; a failed write (a
    full disk) is a ``CheckpointError`` naming the file.
    """
    path = Path(path)
    payload = {**payload, "checksums": tensor_checksums(payload)}
    try:
        with atomic_write(path, "wb") as f:
            torch.save(payload, f)
    except (OSError, RuntimeError) as err:
        _write_failed(err, path)
        raise
    return path


def _copy_checkpoint(src: Path, dst: Path) -> None:
    """``dst`` = a byte copy of ``src``, atomically (best.pt is a copy of last.pt)."""
    try:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
    except OSError as err:
        _write_failed(err, dst)
        raise


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read a checkpoint written by ``fit`` (``weights_only=True``) and verify its checksums.

    A missing, truncated, corrupted (a tensor whose bytes changed) or foreign file is a
    ``CheckpointError`` naming the file; a checkpoint of an older rrid without checksums loads
    with a warning.
    """
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
    _verify_checksums(payload, path)
    return payload


def state_dict_mismatch(err: RuntimeError) -> str:
    """One short line from ``load_state_dict``'s error: how many keys are missing or unexpected
    (with the first two) and the first size mismatch."""
    parts = []
    for line in str(err).splitlines()[1:]:
        line = line.strip()
        m = re.match(r"^(Missing|Unexpected) key\(s\) in state_dict: (.*)$", line)
        if m:
            keys = re.findall(r'"([^"]+)"', m[2])
            more = f", ... {len(keys) - 2} more" if len(keys) > 2 else ""
            parts.append(f"{m[1]} key(s): {len(keys)} ({', '.join(keys[:2])}{more})")
        elif line.startswith("size mismatch") and not any(p.startswith("size mismatch") for p in parts):
            parts.append(line[:200])
    return "; ".join(parts) or (str(err).splitlines() or ["state dict mismatch"])[0]


def load_weights(model: nn.Module, state: dict, path: str | os.PathLike, what: str = "the model") -> None:
    """``model.load_state_dict(state)``; a CheckpointError naming ``path`` when they do not fit."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit {what} ({state_dict_mismatch(e)}); use the "
                              "config the checkpoint was trained with") from None


def load_model(path: str | os.PathLike, device: Any = "cpu") -> RRID:
    """The trained model of a checkpoint written by ``fit``, in eval mode."""
    ckpt = load_checkpoint(path)
    if "config" not in ckpt or "num_classes" not in ckpt:
        raise CheckpointError(f"checkpoint {path} has no 'config'/'num_classes'; build the model yourself and "
                              "load ckpt['model'] into it")
    cfg = config_from_dict(ckpt["config"], source=f"{path} (config)")
    cfg.model.pretrained = False                 # the checkpoint holds the weights
    model = RRID(cfg.model, ckpt["num_classes"])
    load_weights(model, ckpt["model"], path, "the model of its own config")
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
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:                      # a full disk: name the file
            raise OSError(e.errno, f"{e.strerror or e} (writing the run log)", str(self.path)) from e
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

def _saved_config(out: Path, ckpt: Optional[dict]) -> Optional[ExperimentConfig]:
    """The config of the run in ``out``: last.pt's (it made the weights), else config.yaml."""
    source = out / "last.pt" if ckpt is not None else out / "config.yaml"
    if ckpt is not None:
        raw = ckpt.get("config")
    elif source.is_file():
        import yaml

        try:
            raw = yaml.safe_load(source.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise RunFolderError(f"cannot resume {out}: its {source.name} cannot be read ({e}); "
                                 "pass --overwrite to start a new run there") from None
    else:
        return None
    if not isinstance(raw, dict):
        return None
    try:
        return config_from_dict(raw, source=f"{source} (saved config)")
    except ConfigError as e:
        raise RunFolderError(f"cannot resume {out}: its saved config is not valid any more ({e}); "
                             "pass --overwrite to start a new run there") from None


def _check_run_folder(out: Path, cfg: ExperimentConfig, resume: bool, overwrite: bool) -> Optional[dict]:
    """Read-only: may a run start in ``out``? Returns last.pt's payload when resuming from it.

    A folder holding a run (any of ``RUN_FILES``) is refused unless ``overwrite`` (its files
    are deleted later, once the data and the model are built) or ``resume`` with the same
    config, compared field by field (``RESUME_MAY_DIFFER`` may differ).
    """
    present = [name for name in RUN_FILES if (out / name).exists()]
    if overwrite or not present:
        return None
    if not resume:
        raise RunFolderError(
            f"{out} already holds a run ({', '.join(present)}): continue it with --resume (fit(resume=True)), "
            "replace it with --overwrite (fit(overwrite=True) deletes those files), or choose another folder")
    last = out / "last.pt"
    ckpt = load_checkpoint(last) if last.exists() else None
    if ckpt is None and (out / "best.pt").exists():
        raise RunFolderError(f"cannot resume {out}: it has best.pt but no last.pt to continue from; "
                             "pass --overwrite to start a new run there (best.pt is deleted) or choose another folder")
    saved = _saved_config(out, ckpt)
    if saved is not None:
        diff = config_diff(saved, cfg, ignore=RESUME_MAY_DIFFER)
        if diff:
            raise RunFolderError(
                f"cannot resume {out}: the config differs from the saved run's in {len(diff)} field(s): "
                f"{'; '.join(diff)}. Resume with the saved config ({out / 'config.yaml'}), or pass --overwrite "
                "to start a new run there")
    return ckpt


def _clear_run(out: Path) -> None:
    """Delete the files of the run in ``out`` (``RUN_FILES`` and tensorboard/), nothing else."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    if (out / "tensorboard").is_dir():
        shutil.rmtree(out / "tensorboard")


def _restore_best(last_path: Path, best_path: Path, ckpt: dict) -> None:
    """After a kill between writing last.pt and its copy best.pt: last.pt *is* the best state
    (its best_step is its step), so best.pt must equal it; copy it again when it does not."""
    if ckpt.get("best_step", -1) < 0 or ckpt["best_step"] != ckpt["step"]:
        return
    try:
        ok = best_path.exists() and load_checkpoint(best_path)["step"] == ckpt["step"]
    except CheckpointError:
        ok = False
    if not ok:
        _copy_checkpoint(last_path, best_path)


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

    A folder that holds a run is refused without ``resume`` or ``overwrite``
    (``RunFolderError``), and nothing is written before the folder, the data and the model
    have been checked. Raises ``NonFiniteLossError`` naming the step when the loss is NaN or
    infinite; the last checkpoint written before it stays in place.
    """
    from tqdm.auto import tqdm

    from rrid.evaluation import evaluate

    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
    t = cfg.train
    if resume and overwrite:
        raise ValueError("fit(resume=True, overwrite=True): choose one (--resume or --overwrite)")
    check_device(str(device or t.device), "--device" if device else "train.device")
    rank, world, local_rank, created_group = _init_distributed(str(device or t.device))
    try:
        device = _pick_device(str(device or t.device), local_rank)
        if out_dir is None and rank == 0:
            out_dir = t.out_dir or tempfile.mkdtemp(prefix="rrid-run-")
        out = Path(out_dir) if rank == 0 else None
        ckpt, problem = None, None
        if rank == 0:
            try:
                ckpt = _check_run_folder(out, cfg, resume, overwrite)
            except (RunFolderError, CheckpointError) as e:
                problem = e
        if world > 1:                                # every rank needs the folder name and the verdict
            box = [str(out_dir) if rank == 0 else None, problem]
            dist.broadcast_object_list(box, src=0)
            out, problem = Path(box[0]), box[1]
        if problem is not None:
            raise problem
        last_path, best_path = out / "last.pt", out / "best.pt"
        if rank != 0 and resume and last_path.exists():
            ckpt = load_checkpoint(last_path)
        if resume and ckpt is None and rank == 0:   # the first session of a run started with --resume
            print(f"no checkpoint in {out} yet: starting a new run there")
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

            if ckpt is not None and ckpt.get("num_classes", dataset.num_train_ids) != dataset.num_train_ids:
                raise CheckpointError(f"checkpoint {last_path} was trained on {ckpt['num_classes']} identities, "
                                      f"the data set in {d.root} has {dataset.num_train_ids}: resume on the same data")
            model_cfg = cfg
            if ckpt is not None:                 # the checkpoint holds the weights: no ImageNet file needed
                model_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=False))
            model = build_model(model_cfg, dataset.num_train_ids).to(device, memory_format=memory_format)
            if t.sync_bn and world > 1:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            optimizer = torch.optim.SGD(param_groups(model, cfg.optim.backbone_lr, cfg.optim.head_lr),
                                        lr=cfg.optim.head_lr, momentum=cfg.optim.momentum,
                                        weight_decay=cfg.optim.weight_decay, nesterov=cfg.optim.nesterov)
            scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.optim.milestones), cfg.optim.gamma)
            scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
            criterion = RRIDLoss(cfg.loss.margin, cfg.loss.ce_weight, cfg.loss.label_smoothing, cfg.loss.triplet_mode)

            start_epoch, start_batch, step, best_map, best_step = 0, 0, 0, -1.0, -1
            sums = torch.zeros(len(LOSS_PARTS), dtype=torch.float64)
            if ckpt is not None:
                load_weights(model, ckpt["model"], last_path, f"the model of {cfg.name or 'the config'}")
                optimizer.load_state_dict(ckpt["optimizer"])
                scheduler.load_state_dict(ckpt["scheduler"])
                scaler.load_state_dict(ckpt["scaler"])
                sampler.load_state_dict(ckpt["sampler"])
                start_epoch, start_batch, step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
                best_map, sums = ckpt["best_map"], ckpt["epoch_sums"].clone()
                best_step = ckpt.get("best_step", -1)
                _set_rng_state(ckpt["rng"], generator)

            if rank == 0:                        # everything is checked: now the folder is written
                if overwrite:
                    _clear_run(out)
                out.mkdir(parents=True, exist_ok=True)
                remove_stale_temps(out, RUN_FILES)
                save_config(cfg, out / "config.yaml")
                if ckpt is not None:
                    _restore_best(last_path, best_path, ckpt)
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

            def checkpoint(epoch: int, batch: int) -> None:
                if rank != 0:
                    return
                payload = {
                    **model_payload(model, cfg), "optimizer": optimizer.state_dict(),
                    "scheduler": _plain_scheduler_state(scheduler.state_dict()), "scaler": scaler.state_dict(),
                    "sampler": sampler.state_dict(batches_done=batch), "rng": _rng_state(generator),
                    "epoch": epoch, "batch": batch, "step": step, "best_map": best_map, "best_step": best_step,
                    "epoch_sums": sums.clone(), "world_size": world,
                }
                save_checkpoint(payload, last_path)

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
                                          device=device, amp=amp_dtype is not None, progress=show,
                                          ranking_metric=cfg.eval.metric)
                        metrics = _summary(raw)
                        log.write({"kind": "eval", "epoch": epoch, "step": step, **metrics})
                        entry.update(metrics)
                        improved = metrics["mAP"] > best_map
                        if improved:
                            best_map, best_step = metrics["mAP"], step
                        for cb in callbacks:
                            cb.on_eval(state, metrics)
                    if world > 1:
                        dist.barrier()
                history.append(entry)
                # last.pt first (it records best_step = step), then best.pt as its copy: a kill
                # between the two leaves a last.pt from which resume re-creates best.pt
                checkpoint(epoch + 1, 0)
                if improved and rank == 0:
                    _copy_checkpoint(last_path, best_path)
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
