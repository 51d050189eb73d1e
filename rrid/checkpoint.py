"""The checkpoint format: what a ``.pt`` file of rrid holds, how it is written, verified and read.

A checkpoint is a dict saved with ``torch.save`` and read with ``weights_only=True``::

    format        CHECKPOINT_FORMAT (2: with checksums and best_step)
    model         the RRID's state dict
    num_classes   K, the number of training identities (rows of every classifier)
    config        the run's ExperimentConfig as plain values (rrid.config.config_to_dict)
    checksums     a SHA-256 per tensor (dtype, shape, bytes) and one over all other values
    ...           fit adds its training state: optimizer, scheduler, scaler, sampler, rng,
                  epoch, batch, step, best_map, best_step, epoch_sums, world_size

:func:`model_payload` builds the first four entries, :func:`save_checkpoint` adds the checksums
and writes atomically, :func:`load_checkpoint` verifies them, and :func:`load_model` rebuilds the
model, checking every declared size against the weights before a layer is built. ``eval``,
``export``, ``import-authors``, the book and ``fit``'s resume all go through these functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import warnings
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, Optional

import torch
from torch import nn

from rrid.config import ExperimentConfig, config_from_dict, config_to_dict
from rrid.errors import CheckpointError, ConfigError, state_dict_mismatch
from rrid.files import atomic_path, atomic_write, describe_write_error
from rrid.model import RRID

__all__ = ["CHECKPOINT_FORMAT", "MAX_CLASSES", "model_payload", "tensor_checksums", "torch_save", "save_checkpoint",
           "copy_checkpoint", "load_checkpoint", "load_weights", "checkpoint_config", "load_model"]

CHECKPOINT_FORMAT = 2                   # 2: with "checksums" and "best_step"
MAX_CLASSES = 1_000_000                 # identities a checkpoint may declare (Market-1501: 751)


def model_payload(model: RRID, config: ExperimentConfig) -> dict:
    """The part of a checkpoint that :func:`load_model` and ``python -m rrid eval`` read: the
    format version, the model's state dict, its number of classes and the run's config. ``fit``
    adds the training state to it; ``rrid.authors.import_authors`` writes it alone."""
    return {"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "num_classes": model.num_classes,
            "config": config_to_dict(config)}


# ----------------------------------------------------------------------------- checksums

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
    and one SHA-256 over all other values (epoch, step, config, ...): what :func:`save_checkpoint`
    stores under "checksums" and :func:`load_checkpoint` recomputes."""
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
                      "cannot be verified. Re-save it with rrid.checkpoint.save_checkpoint to add them.", stacklevel=3)
        return
    now = tensor_checksums(payload)
    for name, digest in stored.get("tensors", {}).items():
        if now["tensors"].get(name) != digest:
            what = "is missing" if name not in now["tensors"] else "differs from the checksum saved with it"
            raise CheckpointError(f"checkpoint {path} is corrupted: tensor {name!r} {what}. "
                                  "Delete it (and resume from another) or start the run again.")
    extra = [name for name in now["tensors"] if name not in stored.get("tensors", {})]
    if extra or now["values"] != stored.get("values"):
        what = f"tensor {extra[0]!r} has no saved checksum" if extra else "its non-tensor entries (step, config, ...) changed"
        raise CheckpointError(f"checkpoint {path} is corrupted: {what}. Delete it (and resume from another) "
                              "or start the run again.")


# ----------------------------------------------------------------------------- writing

def _write_failed(err: BaseException, path: Path) -> None:
    """Raise a CheckpointError naming ``path`` when ``err`` is a failed write (disk full, ...)."""
    reason = describe_write_error(err)
    if reason is None:
        return                                   # not a write failure: a bug, let it show
    todo = f"free some space in {path.parent}" if "No space" in reason else f"check that {path.parent} is writable"
    raise CheckpointError(f"cannot write checkpoint {path}: {reason}. The previous {path.name}, if any, is "
                          f"unchanged; {todo} (or choose another folder) and continue with --resume") from err


def torch_save(obj: Any, f: IO[bytes]) -> None:
    """``torch.save(obj, f)``, with a Ctrl-C during the write kept a ``KeyboardInterrupt``.

    torch writes through ``f.write`` and turns an exception raised there into a ``RuntimeError``
    ("unexpected pos ..."), which would read as a failed write (a full disk) instead of an
    interrupt: the run would stop with a wrong message and the wrong exit code.
    """
    try:
        torch.save(obj, f)
    except RuntimeError as err:
        if isinstance(err.__context__, KeyboardInterrupt):
            raise err.__context__ from None
        raise


def save_checkpoint(payload: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``.

    The payload is stored with its :func:`tensor_checksums` under "checksums". A crash at any
    point leaves either the old file or the new one, never half of one; a failed write (a
    full disk) is a ``CheckpointError`` naming the file.
    """
    path = Path(path)
    payload = {**payload, "checksums": tensor_checksums(payload)}
    try:
        with atomic_write(path, "wb") as f:
            torch_save(payload, f)
    except (OSError, RuntimeError) as err:
        _write_failed(err, path)
        raise
    return path


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """``dst`` = a byte copy of ``src``, atomically (best.pt is a copy of last.pt)."""
    dst = Path(dst)
    try:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
    except OSError as err:
        _write_failed(err, dst)
        raise
    return dst


# ----------------------------------------------------------------------------- reading

def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read a checkpoint (``weights_only=True``) and verify its checksums.

    A missing, truncated, corrupted (a tensor whose bytes changed) or foreign file is a
    ``CheckpointError`` naming the file; a checkpoint of an older rrid without checksums loads
    with a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist" if not path.exists() else
                              f"checkpoint {path} is not a regular file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise CheckpointError(
            f"checkpoint {path} cannot be read; it is truncated, corrupted or not a PyTorch file "
            f"({type(e).__name__}: {first}). Delete it (and resume from another) or start the run again.") from None
    model = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(model, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in model.items()):
        raise CheckpointError(f"checkpoint {path} is not an rrid checkpoint: expected a dict whose 'model' entry "
                              "is a state dict (names -> tensors)")
    _verify_checksums(payload, path)
    return payload


def load_weights(model: nn.Module, state: Mapping, path: str | os.PathLike, what: str = "the model") -> None:
    """``model.load_state_dict(state)``; a CheckpointError naming ``path`` when they do not fit."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit {what} ({state_dict_mismatch(e)}); use the "
                              "config the checkpoint was trained with") from None


def _num_classes(ckpt: dict, path: Path) -> int:
    """K as the weights say it (rows of every classifier), checked against the declared
    ``num_classes`` before any layer is allocated from it."""
    rows = {t.shape[0] for k, t in ckpt["model"].items() if ".classifiers." in k and k.endswith(".weight") and t.ndim == 2}
    declared = ckpt.get("num_classes", next(iter(rows), None))
    if not isinstance(declared, int) or isinstance(declared, bool) or not 1 <= declared <= MAX_CLASSES:
        raise CheckpointError(f"checkpoint {path}: num_classes must be an integer in 1..{MAX_CLASSES}, "
                              f"got {type(declared).__name__} {str(declared)[:40]}")
    if rows and rows != {declared}:
        raise CheckpointError(f"checkpoint {path}: num_classes is {declared} but its classifiers have "
                              f"{sorted(rows)[:3]} rows; the file was altered or is not an rrid checkpoint")
    return declared


def checkpoint_config(ckpt: dict, path: str | os.PathLike) -> ExperimentConfig:
    """The run's config saved in a checkpoint, validated like a YAML file."""
    raw = ckpt.get("config")
    if not isinstance(raw, dict):
        raise CheckpointError(f"checkpoint {path} has no saved config; pass the run's config "
                              "(load_model(path, config=...), or --config on the command line)")
    try:
        return config_from_dict(raw, source=f"{path} (saved config)")
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {path}: its saved config is not valid ({e})") from None


def load_model(path: str | os.PathLike, config: Optional[ExperimentConfig] = None, device: Any = None) -> RRID:
    """The trained model of a checkpoint, in eval mode on ``device`` (default: the CPU).

    The architecture comes from ``config`` when given (``python -m rrid eval --config``), else from
    the config saved in the file; the number of identities from the weights (checked against the
    declared ``num_classes``). ImageNet weights are never needed: the checkpoint holds them all.
    """
    path = Path(path)
    ckpt = load_checkpoint(path)
    cfg = config if config is not None else checkpoint_config(ckpt, path)
    model = RRID(dataclasses.replace(cfg.model, pretrained=False), _num_classes(ckpt, path))
    what = f"the model of {cfg.name or 'the config'}" if config is not None else "the model of its own config"
    load_weights(model, ckpt["model"], path, what)
    return model.to(device if device is not None else "cpu").eval()
