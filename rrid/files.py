"""Writing files so that nothing half-written is ever left behind, and no temp litter stays.

Every file ``rrid`` writes (checkpoints, configs, logs, ONNX models, result tables) goes
through :func:`atomic_path`: the content is written to a temp file in the target's folder,
flushed to disk, and renamed over the target in one step. A crash at any moment leaves
either the old file or the new one, never a mix.

A process killed with ``kill -9`` cannot remove its temp file, so temp names say whose they
are: ``.NAME.rrid-PID-HOST.RANDOM.tmp`` (:func:`temp_prefix`). :func:`remove_stale_temps`
deletes such a file or folder only when it is stale:

    same host, and no live process has that PID      -> the writer is dead: stale
    another host (a shared file system)             -> stale when untouched for ``max_age``
    an older rrid's name ``.NAME.XXXXXXXX.tmp``      -> stale when untouched for ``max_age``
                                                       (only where the caller names NAME)

A live writer (another run in the same folder, another DDP rank) is never touched: its PID is
alive, or its file is younger than ``max_age`` (a temp file lives only as long as one write).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Iterable, Iterator, Optional

__all__ = ["atomic_path", "atomic_write", "temp_prefix", "is_stale_temp", "remove_stale_temps",
           "describe_write_error", "STALE_AGE"]

STALE_AGE = 3600.0      # seconds: a temp of another host (or an older rrid) untouched this long is stale

# .NAME.rrid-PID-HOST.RANDOM.tmp (tempfile's RANDOM is 8 of [a-z0-9_]); NAME may contain dots
_TEMP = re.compile(r"^\.(?P<name>.+)\.rrid-(?P<pid>\d+)-(?P<host>[A-Za-z0-9-]*)\.[a-z0-9_]+\.tmp$")
_LEGACY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")      # before the PID was in the name


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def temp_prefix(target: str | os.PathLike) -> str:
    """``.NAME.rrid-PID-HOST.``: the prefix of this process's temp files (and folders) for
    ``target``; pass it to ``tempfile.mkstemp`` / ``mkdtemp`` with ``suffix=".tmp"``."""
    return f".{Path(target).name}.rrid-{os.getpid()}-{_host()}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # alive, owned by another user
        return True
    except OSError:
        return True                  # cannot tell: treat as alive
    return True


def is_stale_temp(path: str | os.PathLike, max_age: float = STALE_AGE) -> bool:
    """True when ``path`` is an rrid temp file or folder that no live writer owns (see above)."""
    path = Path(path)
    m = _TEMP.match(path.name)
    try:
        age = time.time() - path.lstat().st_mtime
    except OSError:
        return False
    if m:
        if m["host"] == _host():
            return not _pid_alive(int(m["pid"]))
        return age > max_age
    return bool(_LEGACY.match(path.name)) and age > max_age


def remove_stale_temps(folder: str | os.PathLike, names: Optional[Iterable[str]] = None,
                       max_age: float = STALE_AGE) -> list[Path]:
    """Delete the stale rrid temps in ``folder`` (not below it) and return their paths.

    ``names``: only temps of these targets (e.g. ``["last.pt", "best.pt"]``); None: any
    target. Nothing but names that match rrid's temp pattern is ever considered, and errors
    (a file another process removed first, no permission) are ignored: cleaning is a courtesy.
    """
    folder = Path(folder)
    wanted = None if names is None else set(names)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name) or (wanted is not None and _LEGACY.match(entry.name))
        if not m or (wanted is not None and m["name"] not in wanted):
            continue
        path = Path(entry.path)
        if not is_stale_temp(path, max_age):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def describe_write_error(err: BaseException) -> Optional[str]:
    """A short reason for a failed write ("No space left on device", ...), or None when
    ``err`` does not look like a write failure (then it is a bug: let it propagate)."""
    text = str(err)
    if isinstance(err, OSError):
        if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)) or "No space left" in text:
            return "No space left on device"
        return err.strerror or text or type(err).__name__
    if isinstance(err, RuntimeError):
        if "No space left" in text:
            return "No space left on device"
        # torch's zip writer reports a short write without errno or path
        if "unexpected pos" in text or "file write failed" in text or "PytorchStreamWriter failed" in text:
            return f"the write stopped part-way, most likely No space left on device ({text.splitlines()[0]})"
    return None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; when the block ends without error, move it to ``path``.

    For writers that take a file name (``torch.onnx.export``, ``shutil.copyfile``). On an
    error, the temp file is removed and ``path`` is untouched. Stale temps of ``path`` left by
    killed writers are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, [path.name])
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; these are ordinary files
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """``with atomic_write(path, "wb") as f: ...``: like ``open(path, mode)``, but atomic."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_write(mode={mode!r}): expected a write mode, 'w' or 'wb'")
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f
