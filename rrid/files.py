"""Writing files so that nothing half-written is ever left behind.

Every file ``rrid`` writes (checkpoints, configs, logs, ONNX models, result tables) goes
through :func:`atomic_path`: the content is written to a temp file in the target's folder,
flushed to disk, and renamed over the target in one step. A crash at any moment leaves
either the old file or the new one, never a mix.

Folders (the synthetic set, unpacked archives) are built in :func:`temp_dir` beside the
target and moved there by :func:`move_into_place`. Their temp names embed the writer's
process id, start time and host (:func:`temp_prefix`), so that after a ``kill -9`` the next
writer can tell a dead process's leftovers from another process's work in progress and
remove them (:func:`remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import tempfile
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_path", "atomic_write", "move_into_place", "real_target", "remove_stale_temps", "temp_dir", "temp_prefix"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; when the block ends without error, move it to ``path``.

    For writers that take a file name (``torch.onnx.export``, ``shutil.copyfile``). On an
    error, the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


def temp_prefix(name: str) -> str:
    """``".NAME.<pid>-<start>@<host>."``: the start of every temp name this process uses for ``NAME``.

    The writer is named by its pid and start time (so a later process that happens to get
    the same pid, as in a restarted container, is not mistaken for it) and its host.
    """
    return f".{name}.{os.getpid()}-{_start_time(os.getpid())}@{_host()}."


def _alive(pid: int, start: str) -> bool:
    if start and os.path.isdir("/proc/self"):
        return _start_time(pid) == start
    if os.name != "posix":  # no cheap, harmless probe elsewhere: treat every writer as alive
        return True
    try:
        os.kill(pid, 0)  # signal 0: no signal sent, only the existence check
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike, name: str) -> list[Path]:
    """Remove the temp files and folders for ``NAME`` in ``folder`` left by dead writers on this host.

    Only names made by :func:`temp_prefix` are considered; one whose writer still runs (or
    that was written on another host, e.g. over a shared file system) is kept. Returns what
    was removed.
    """
    folder = Path(folder)
    pattern = re.compile(re.escape(f".{name}.") + r"(\d+)-(\d*)@([A-Za-z0-9-]+)\.")
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in folder.iterdir():
            m = pattern.match(entry.name)
            if not m or m.group(3) != _host() or _alive(int(m.group(1)), m.group(2)):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
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
