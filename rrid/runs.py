"""The run folder: what ``fit`` writes, when it may write it, and what a resume reads back.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (a JSON line per
logged step, epoch and evaluation), ``last.pt`` (every epoch and every
``train.checkpoint_every_steps`` steps) and ``best.pt`` (a copy of the last.pt of the best mAP):
``RUN_FILES``; and ``tensorboard/``.

* A folder holding a run is refused unless the run resumes (``--resume``: the config must equal
  the saved one field by field, but for ``RESUME_MAY_DIFFER``) or is overwritten (``--overwrite``).
* :func:`open_run` locks the folder (a second run into it is refused, naming the first) and
  checks all of that read-only; :meth:`Run.start` writes the folder only once the data and the
  model are built too; nothing is written before.
* Write order at the end of an epoch: last.pt (which records ``best_step``), then best.pt as its
  copy; a kill between the two leaves a last.pt from which the resume re-creates best.pt.
* ``train.mirror`` (``--mirror``): a :class:`Mirror` folder, e.g. on Google Drive, receives a copy
  of the run every ``train.mirror_every`` epochs and after the last; ``--resume`` on a machine
  whose local folder is empty or older continues from it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch

from rrid import runtime
from rrid.checkpoint import (checkpoint_config, copy_checkpoint, load_checkpoint, save_checkpoint, tensor_checksums,
                             torch_save)
from rrid.config import ConfigError, ExperimentConfig, config_diff, load_config, save_config
from rrid.errors import CheckpointError, RunFolderError, UserError
from rrid.files import atomic_write, lock_folder, remove_stale_temps

__all__ = ["RUN_FILES", "RESUME_MAY_DIFFER", "Run", "RunLog", "Mirror", "write_in_place", "RunInterrupted", "open_run", "check_run_folder"]

RUN_FILES = ("config.yaml", "metrics.jsonl", "last.pt", "best.pt")   # a folder holding any of these holds a run
# what --resume accepts to differ from the saved run: where and how fast it runs, how often it
# logs, evaluates and saves, how it evaluates, and where the data lives; never the model, data, recipe or seed
RESUME_MAY_DIFFER = ("name", "train.epochs", "train.device", "train.num_threads", "train.channels_last",
                     "train.log_every", "train.eval_every", "train.checkpoint_every_steps", "train.tensorboard",
                     "train.out_dir", "train.mirror", "train.mirror_every", "data.root", "data.workers", "data.cache",
                     "data.test_batch_size", "eval.flip", "eval.rerank", "eval.metric")


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``fit``: says where the run can continue from (its message is one line)."""

    def __init__(self, run: "Run"):
        if run.last.exists():
            where = f"continue it with --resume --out {run.out} (from its last checkpoint, last.pt)"
        else:
            where = f"no checkpoint was written yet in {run.out}"
        super().__init__(f"interrupted; {where}")


class RunLog:
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
                from torch.utils.tensorboard import SummaryWriter   # optional: tensorboard may be absent
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
        """One entry per epoch (its "epoch" and "eval" records merged), from what was logged."""
        if not self.enabled or not self.path.exists():
            return []
        by_epoch: dict[int, dict] = {}
        for line in self.path.read_text().splitlines():
            r = json.loads(line)
            if r["kind"] in ("epoch", "eval"):
                by_epoch.setdefault(r["epoch"], {}).update({k: v for k, v in r.items() if k != "kind"})
        return [by_epoch[e] for e in sorted(by_epoch)]

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


def _saved_config(out: Path, ckpt: Optional[dict]) -> Optional[ExperimentConfig]:
    """The config of the run in ``out``: last.pt's (it made the weights), else config.yaml."""
    if ckpt is not None:
        try:
            return checkpoint_config(ckpt, out / "last.pt")
        except CheckpointError as e:
            raise RunFolderError(f"cannot resume {out}: {e}; pass --overwrite to start a new run there") from None
    if not (out / "config.yaml").is_file():
        return None
    try:
        return load_config(out / "config.yaml")
    except ConfigError as e:
        raise RunFolderError(f"cannot resume {out}: its saved config is not valid any more ({e}); "
                             "pass --overwrite to start a new run there") from None


def check_run_folder(out: Path, cfg: ExperimentConfig, resume: bool, overwrite: bool) -> Optional[dict]:
    """Read-only: may a run start in ``out``? Returns last.pt's payload when resuming from it.

    A folder holding a run (any of ``RUN_FILES``) is refused unless ``overwrite`` (its files
    are deleted later, once the data and the model are built) or ``resume`` with the same
    config, compared field by field (``RESUME_MAY_DIFFER`` may differ).
    """
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"run folder {out} is a file, not a folder; choose another --out")
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


class Mirror:
    """A second copy of a run in a folder that outlives the machine: Google Drive on Colab.

    The run folder stays on the machine's fast local disk; every ``every`` epochs and after the
    last one, :meth:`push` copies config.yaml, metrics.jsonl and last.pt (weights, SGD state,
    everything a resume needs) into the mirror, and best.pt as weights only (what ``eval`` and
    ``export`` read). Each file is rewritten in place (no new file, no rename): a mounted Drive
    keeps one file per name instead of sending every replaced copy to its trash, where it would
    count against the quota. ``mirror.json``, written last, records the SHA-256 of each copy, so a
    copy cut short by a disconnect is recognised. :meth:`pull` brings the mirror's run back into
    an empty (or older) local folder: ``--resume`` on a fresh machine continues from it.
    """

    MANIFEST = "mirror.json"

    def __init__(self, folder: str | os.PathLike, every: int = 5):
        self.folder, self.every = Path(folder), every

    def holds_run(self) -> bool:
        return (self.folder / self.MANIFEST).is_file()

    def step(self) -> int:
        """The step of the mirrored last.pt (-1 when the mirror holds no run)."""
        if not self.holds_run():
            return -1
        return int(self._manifest().get("step", -1))

    def _manifest(self) -> dict:
        try:
            manifest = json.loads((self.folder / self.MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise RunFolderError(f"mirror {self.folder}: {self.MANIFEST} cannot be read ({e})") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise RunFolderError(f"mirror {self.folder}: {self.MANIFEST} is not a mirror manifest")
        return manifest

    def push(self, run: "Run", step: int) -> None:
        """Copy the run's files into the mirror, in place; the manifest last."""
        self.folder.mkdir(parents=True, exist_ok=True)
        files = {}
        for name in ("config.yaml", "metrics.jsonl", "last.pt"):
            if (run.out / name).is_file():
                files[name] = write_in_place((run.out / name).read_bytes(), self.folder / name)
        if run.best.is_file():
            best = load_checkpoint(run.best)
            weights = {k: best[k] for k in ("format", "model", "num_classes", "config", "step", "best_map") if k in best}
            buffer = io.BytesIO()
            torch_save({**weights, "checksums": tensor_checksums(weights)}, buffer)
            files["best.pt"] = write_in_place(buffer.getvalue(), self.folder / "best.pt")
        manifest = {"step": step, "files": files}
        write_in_place(json.dumps(manifest, indent=1).encode(), self.folder / self.MANIFEST)

    def pull(self, out: Path) -> None:
        """Copy the mirror's run into ``out`` (after checking every copy against the manifest)."""
        manifest = self._manifest()
        copies = {name: (self.folder / name).read_bytes() for name in manifest["files"]}
        for name, data in copies.items():                  # every copy checked before any is used
            if hashlib.sha256(data).hexdigest() != manifest["files"][name]:
                raise RunFolderError(f"mirror {self.folder}: {name} is not the copy its {self.MANIFEST} records (a "
                                     "copy cut short by a disconnect?); resume from the local run folder instead")
        out.mkdir(parents=True, exist_ok=True)
        for name, data in copies.items():
            with atomic_write(out / name, "wb") as f:
                f.write(data)
        print(f"resuming from the mirror {self.folder} (step {manifest['step']}): copied into {out}")


def write_in_place(data: bytes, path: Path) -> str:
    """Overwrite ``path`` with ``data`` by rewriting its bytes (the file keeps its identity), fsync;
    returns the SHA-256 of ``data``."""
    with open(path, "r+b" if path.exists() else "wb") as f:
        f.write(data)
        f.truncate()
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data).hexdigest()


@dataclass
class Run:
    """The run folder of a ``fit``: where it writes, and the checkpoint it resumes from."""
    out: Path
    checkpoint: Optional[dict]           # last.pt's payload when resuming, else None
    main: bool                           # rank 0: the only process that writes
    overwrite: bool
    log: Optional[RunLog] = None
    mirror: Optional[Mirror] = None

    @property
    def last(self) -> Path:
        return self.out / "last.pt"

    @property
    def best(self) -> Path:
        return self.out / "best.pt"

    def start(self, cfg: ExperimentConfig, resume_step: Optional[int]) -> list[dict]:
        """Everything is checked: only now is the folder written (``overwrite`` deletes the old
        run's files). Returns the history logged so far (empty for a new run)."""
        if self.main:
            if self.overwrite:
                for name in RUN_FILES:
                    (self.out / name).unlink(missing_ok=True)
                shutil.rmtree(self.out / "tensorboard", ignore_errors=True)
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.out, RUN_FILES)
            save_config(cfg, self.out / "config.yaml")
            if self.checkpoint is not None:
                self._restore_best()
        self.log = RunLog(self.out, self.main, cfg.train.tensorboard, resume_step)
        return self.log.history() if resume_step is not None else []

    def _restore_best(self) -> None:
        """After a kill between writing last.pt and its copy best.pt: last.pt *is* the best state
        (its best_step is its step), so best.pt must equal it; copy it again when it does not."""
        ckpt = self.checkpoint
        if ckpt.get("best_step", -1) < 0 or ckpt["best_step"] != ckpt["step"]:
            return
        try:
            ok = self.best.exists() and load_checkpoint(self.best)["step"] == ckpt["step"]
        except CheckpointError:
            ok = False
        if not ok:
            copy_checkpoint(self.last, self.best)

    def save(self, payload: dict, best: bool = False, epochs_done: Optional[int] = None, final: bool = False) -> None:
        """Write last.pt (rank 0), then best.pt as its copy when ``best``; at the end of an epoch
        (``epochs_done``) also the mirror's copy, every ``mirror.every`` epochs and when ``final``."""
        if not self.main:
            return
        save_checkpoint(payload, self.last)
        if best:
            copy_checkpoint(self.last, self.best)
        if self.mirror is not None and epochs_done is not None and (final or epochs_done % self.mirror.every == 0):
            self.mirror.push(self, payload["step"])


@contextlib.contextmanager
def open_run(cfg: ExperimentConfig, out_dir, resume: bool, overwrite: bool, env: runtime.Distributed) -> Iterator[Run]:
    """The checked run folder of a ``fit``, locked for as long as the run lasts.

    Rank 0 takes the folder's lock (and the mirror's) before anything else, so that two runs
    started together into one folder cannot both proceed: the second is refused in one line
    naming the first (``FolderInUseError``); the lock dies with its holder, so a killed run never
    blocks the next. The lock file lies beside the folder, so nothing is written into the folder
    before every check has passed. Then rank 0 checks the folder (read-only) and every rank gets
    its verdict. Ctrl-C inside becomes a one-line :class:`RunInterrupted`.
    """
    mirror = Mirror(cfg.train.mirror, cfg.train.mirror_every) if cfg.train.mirror else None
    with contextlib.ExitStack() as locks:
        out, ckpt, problem = None, None, None
        if env.main:
            out = Path(out_dir or cfg.train.out_dir or tempfile.mkdtemp(prefix="rrid-run-"))
            try:
                locks.enter_context(lock_folder(out, "training (python -m rrid train)", inside=False))
                if mirror is not None:
                    _lock_mirror(locks, mirror)
                _use_mirror(mirror, out, resume, overwrite)
                ckpt = check_run_folder(out, cfg, resume, overwrite)
            except UserError as e:
                problem = e
        out, problem = env.broadcast((str(out), problem))
        if problem is not None:
            raise problem
        out = Path(out)
        if not env.main and resume and (out / "last.pt").exists():
            ckpt = load_checkpoint(out / "last.pt")
        if resume and ckpt is None and env.main:      # the first session of a run started with --resume
            print(f"no checkpoint in {out} yet: starting a new run there")
        run = Run(out, ckpt, env.main, overwrite, mirror=mirror)
        try:
            yield run
        except KeyboardInterrupt:
            raise RunInterrupted(run) from None
        finally:
            if run.log is not None:
                run.log.close()


def _lock_mirror(locks: contextlib.ExitStack, mirror: Mirror) -> None:
    """The mirror's lock too (two runs must not share a mirror either), where its file system can
    lock; on one that cannot (some network mounts) a note says what the lock would have prevented."""
    try:
        locks.enter_context(lock_folder(mirror.folder, "mirroring a run (python -m rrid train)", inside=False))
    except OSError as e:
        if isinstance(e, UserError) or e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
        print(f"note: the file system of {mirror.folder} cannot lock files ({e.strerror}); do not start two runs "
              "with this --mirror at once", file=sys.stderr)


def _use_mirror(mirror: Optional[Mirror], out: Path, resume: bool, overwrite: bool) -> None:
    """Before the run folder is checked: a mirror holding a run is continued (``resume``: its copy
    replaces an empty or older local folder) or replaced (``overwrite``), never silently mixed."""
    if mirror is None or not mirror.holds_run() or overwrite:
        return
    if not resume:
        raise RunFolderError(f"the mirror {mirror.folder} already holds a run: continue it with --resume, replace it "
                             "with --overwrite, or choose another --mirror")
    local = load_checkpoint(out / "last.pt")["step"] if (out / "last.pt").is_file() else -1
    if mirror.step() > local:
        mirror.pull(out)
