"""Writing files so that nothing half-written is ever left behind, and no temp litter stays.

Every file ``rrid`` writes (checkpoints, configs, logs, ONNX models, result tables) goes
through :func:`atomic_path`: the content is written to a temp file in the target's folder,
flushed to disk, and renamed over the target in one step. A crash at any moment leaves
either the old file or the new one, never a mix.

Folders (the synthetic set, unpacked archives) are built in :func:`temp_dir` beside the
target and moved there by :func:`move_into_place`.

A process killed with ``kill -9`` cannot remove its temps, so every temp name says whose it
is: ``.NAME.rrid-PID-START-HOST.RANDOM`` (:func:`temp_prefix`; START is the process's start
time, so a later process that reuses the PID is not taken for the writer).
:func:`remove_stale_temps` deletes such a file or folder only when it is stale:

    same host, and PID with that START is not running -> the writer is dead: stale
    another host (a shared file system)              -> stale when untouched for ``max_age``
    an older rrid's name ``.NAME.XXXXXXXX.tmp``       -> stale when untouched for ``max_age``
                                                        (only where the caller names NAME)

A live writer (another run in the same folder, another DDP rank) is never touched: its
process is alive, or its file is younger than ``max_age`` (a temp lives as long as one write).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Iterable, Iterator, Optional

__all__ = ["atomic_path", "atomic_write", "move_into_place", "real_target", "temp_dir", "temp_prefix",
           "is_stale_temp", "remove_stale_temps", "describe_write_error", "STALE_AGE"]

STALE_AGE = 3600.0      # seconds: a temp of another host (or an older rrid) untouched this long is stale


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


# ----------------------------------------------------------------------------- temp folders

def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def _start_time(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from /proc); "" if it does not run or no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return ""
    return data[data.rindex(b")") + 2:].split()[19].decode()  # field 22 of proc(5); fields start at 3 here


def temp_prefix(target: str | os.PathLike) -> str:
    """``.NAME.rrid-PID-START-HOST.``: the start of every temp name (file or folder) this
    process uses for ``target`` (a path or a bare name); pass it to ``tempfile.mkstemp`` /
    ``mkdtemp``. START is empty where there is no /proc."""
    return f".{Path(target).name}.rrid-{os.getpid()}-{_start_time(os.getpid())}-{_host()}."


# .NAME.rrid-PID-START-HOST.REST (NAME may contain dots); older rrids wrote .NAME.XXXXXXXX.tmp
_TEMP = re.compile(r"^\.(?P<name>.+)\.rrid-(?P<pid>\d+)-(?P<start>\d*)-(?P<host>[A-Za-z0-9-]+)\..+$")
_LEGACY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


def _alive(pid: int, start: str) -> bool:
    if start and os.path.isdir("/proc/self"):
        return _start_time(pid) == start
    if os.name != "posix":  # no cheap, harmless probe elsewhere: treat every writer as alive
        return True
    try:
        os.kill(pid, 0)  # signal 0: no signal sent, only the existence check
    except ProcessLookupError:
        return False
    except OSError:      # PermissionError: someone else's live process; anything else: cannot tell
        return True
    return True


def is_stale_temp(path: str | os.PathLike, max_age: float = STALE_AGE) -> bool:
    """True when ``path`` is an rrid temp file or folder that no live writer owns (see above)."""
    path = Path(path)
    try:
        age = time.time() - path.lstat().st_mtime
    except OSError:
        return False
    m = _TEMP.match(path.name)
    if m:
        if m["host"] == _host():
            return not _alive(int(m["pid"]), m["start"])
        return age > max_age
    return bool(_LEGACY.match(path.name)) and age > max_age


def remove_stale_temps(folder: str | os.PathLike, names: str | Iterable[str] | None = None,
                       max_age: float = STALE_AGE) -> list[Path]:
    """Delete the stale rrid temps in ``folder`` (not below it) and return their paths.

    ``names``: only temps of these targets (``"market1501"`` or ``["last.pt", "best.pt"]``);
    None: of any target, and then never an older rrid's name (it carries no writer to check).
    Nothing but rrid's temp names is ever considered, and errors (a file another process
    removed first, no permission) are ignored: cleaning is a courtesy.
    """
    wanted = None if names is None else {names} if isinstance(names, str) else set(names)
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


def real_target(target: str | os.PathLike) -> Path:
    """``target``, or where it points when it is a symbolic link (the data go there; the link stays)."""
    target = Path(target)
    return target.resolve() if target.is_symlink() else target


@contextlib.contextmanager
def temp_dir(target: str | os.PathLike) -> Iterator[Path]:
    """A new empty folder beside ``target`` (same file system, so it can be renamed there).

    Stale temps of ``target`` from dead writers are removed first. The folder is deleted
    when the block raises; on success the caller moves it with :func:`move_into_place`
    (a folder still there when the block ends is deleted too).
    """
    target = real_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent, target.name)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target.name), dir=target.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def move_into_place(tmp: str | os.PathLike, target: str | os.PathLike, replace: bool = True) -> Path:
    """Rename the finished folder ``tmp`` to ``target``; return ``target``.

    ``tmp`` gets the mode a plain ``mkdir`` would give (0o777 minus the umask; ``mkdtemp``
    makes 0o700). With ``replace``, an existing ``target`` is first renamed aside to a temp
    name, then ``tmp`` is renamed into place, then the old folder is deleted: a kill at any
    moment leaves ``target`` complete (old or new) or absent, never half-deleted, and the
    leftovers are stale temps that the next :func:`temp_dir` removes. Without ``replace``,
    the rename fails (OSError) unless ``target`` is absent or an empty folder.
    """
    tmp, target = Path(tmp), real_target(target)
    os.chmod(tmp, 0o777 & ~_umask())
    aside = None
    if replace and (target.exists() or target.is_symlink()):
        aside = target.with_name(temp_prefix(target.name) + "old-" + secrets.token_hex(4))
        os.rename(target, aside)
    os.rename(tmp, target)
    if aside is not None:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside)
        else:
            aside.unlink()
    return target
