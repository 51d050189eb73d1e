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

A temp name stays within the file system's limit on a name (``NAME_MAX``, 255 bytes on most)
whatever the target's length: a NAME too long for it is cut and ends in ``~`` and 8 hex digits
of its sha256 (:func:`temp_name`), which :func:`remove_stale_temps` recognises the same way.

Errors of the file system are the user's to fix (a full disk, a read-only folder, a parent that
is a file, a target that is a folder): :func:`output_path_error` turns them into one line
``OutputPathError`` that names the user's target, never the temp file, and
:func:`check_output_path` checks a target before long work starts, creating nothing.

:func:`lock_folder` is the advisory lock every build of a shared folder takes (``fcntl.flock``
on a lock file that records its holder): a second process waits or is told who holds it, and
the lock of a killed process is released with it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Optional

from rrid.errors import FolderInUseError, OutputPathError, one_line

try:
    import fcntl
except ImportError:     # not on Windows (not a target): lock_folder then does not lock
    fcntl = None

__all__ = ["atomic_path", "atomic_write", "move_into_place", "real_target", "temp_dir", "temp_prefix", "temp_name",
           "is_stale_temp", "remove_stale_temps", "describe_write_error", "output_path_error", "check_output_path",
           "lock_folder", "lock_path", "file_problem", "file_kind", "STALE_AGE", "LOCK_NAME"]

STALE_AGE = 3600.0      # seconds: a temp of another host (or an older rrid) untouched this long is stale
LOCK_NAME = ".rrid.lock"


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
    killed writers are removed first. A failure of the file system (the folder cannot be made
    or written, a full disk while the block writes the temp, ``path`` is a folder) is an
    ``OutputPathError`` naming ``path`` (:func:`output_path_error`).
    """
    path = Path(path)
    with _output_errors(path):
        if _is_folder(path, follow=False):
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent, [path.name])
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path, path.parent), suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; these are ordinary files
    try:
        with _output_errors(path, tmp):
            yield Path(tmp)
        with _output_errors(path):
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


# the longest a temp name can be around its NAME: "." NAME ".rrid-" PID "-" START "-" HOST "." and the
# longest ending (mkstemp's 8 characters + ".tmp", or move_into_place's "old-" + 8 hex digits)
_TEMP_OVERHEAD = len(".") + len(".rrid-") + 10 + len("-") + 20 + len("-") + 40 + len(".") + 12


def _name_max(folder: str | os.PathLike) -> int:
    """The longest file name (bytes) the file system of ``folder`` (or of its nearest existing
    folder above) takes; 255 where it cannot tell."""
    folder = Path(os.path.abspath(folder))
    for candidate in (folder, *folder.parents):
        try:
            value = os.pathconf(candidate, "PC_NAME_MAX")
        except (OSError, ValueError, AttributeError):
            continue
        return value if value and value > 0 else 255
    return 255


def temp_name(name: str, folder: str | os.PathLike = ".") -> str:
    """NAME as temp names in ``folder`` spell it: ``name`` itself when the longest temp name made
    from it fits the file system's limit, else its start, ``~`` and 8 hex digits of its sha256
    (the same for every process, so that stale temps are still recognised)."""
    room = _name_max(folder) - _TEMP_OVERHEAD
    raw = os.fsencode(name)
    if len(raw) <= room:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:8]
    return os.fsdecode(raw[: max(room - 9, 0)]) + "~" + digest


def temp_prefix(target: str | os.PathLike, folder: str | os.PathLike | None = None) -> str:
    """``.NAME.rrid-PID-START-HOST.``: the start of every temp name (file or folder) this
    process uses for ``target`` (a path or a bare name) in ``folder`` (default: the target's);
    pass it to ``tempfile.mkstemp`` / ``mkdtemp``. START is empty where there is no /proc; NAME
    is :func:`temp_name` of the target's name."""
    target = Path(target)
    name = temp_name(target.name, target.parent if folder is None else folder)
    return f".{name}.rrid-{os.getpid()}-{_start_time(os.getpid())}-{_host()}."


# .NAME.rrid-PID-START-HOST.REST (NAME may contain dots); older rrids wrote .NAME.XXXXXXXX.tmp
_TEMP = re.compile(r"^\.(?P<name>.+)\.rrid-(?P<pid>\d+)-(?P<start>\d*)-(?P<host>[A-Za-z0-9-]+)\..+$")
_LEGACY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
_LOCK = re.compile(r"^\.(?P<name>.+)\.rrid\.lock$")


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
    removed first, no permission) are ignored: cleaning is a courtesy. The lock file a killed
    holder left beside a target (``.NAME.rrid.lock``, :func:`lock_folder`) goes too, unless a
    live process holds it.
    """
    wanted = None if names is None else {names} if isinstance(names, str) else set(names)
    if wanted is not None:
        wanted |= {temp_name(n, folder) for n in wanted}
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        lock = _LOCK.match(entry.name)
        if lock and (wanted is None or lock["name"] in wanted):
            if _remove_unheld_lock(Path(entry.path)):
                removed.append(Path(entry.path))
            continue
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
    (a folder still there when the block ends is deleted too). The folder that cannot be made,
    and a full disk or read-only file system while the block writes, are an ``OutputPathError``
    naming ``target``.
    """
    target = real_target(target)
    with _output_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target.parent, target.name)
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), dir=target.parent))
    try:
        with _output_errors(target, tmp, _NO_SPACE | {errno.EROFS}):   # others name the file inside: the caller's
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
        aside = target.with_name(temp_prefix(target) + "old-" + secrets.token_hex(4))
        os.rename(target, aside)
    os.rename(tmp, target)
    if aside is not None:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside)
        else:
            aside.unlink()
    return target


# ----------------------------------------------------------------------------- what is at a path

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def file_kind(mode: int) -> str:
    """"a folder", "a named pipe (FIFO)", ... for an ``st_mode`` that is not a regular file's."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def file_problem(path: str | os.PathLike) -> str | None:
    """None when ``path`` is a regular file (or a link to one); else what is there instead:
    "missing", "a broken symbolic link", "a named pipe (FIFO)", "a folder", ..."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken symbolic link" if os.path.islink(path) else "missing"
    except (OSError, ValueError) as e:
        return f"unreadable ({one_line(getattr(e, 'strerror', None) or e, 80)})"
    return None if stat.S_ISREG(mode) else file_kind(mode)


def file_hash(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """The hex digest of the file's bytes (``hashlib``'s ``algorithm``), read ``chunk`` bytes at a time."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_at_most(path: str | os.PathLike, max_bytes: int, error: type[Exception], what: str) -> bytes:
    """The bytes of ``path``, refused with ``error`` (one line naming the file and ``what`` was
    expected) when it cannot be read or holds more than ``max_bytes``: a small text file a user
    gives (a config, a JSON index) is read so, never whole whatever its size."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise error(f"cannot read {path}: {one_line(e.strerror or e, 120)}") from None
    if len(data) > max_bytes:
        raise error(f"cannot read {path}: it is larger than {max_bytes:,} bytes; expected {what}")
    return data


def build_once(path: str | os.PathLike, make: Callable[[Path], None], what: str = "") -> Path:
    """``path``, made by ``make(tmp)`` unless it exists: under ``path``'s lock (a second process
    waits for the first, then finds the file built), written to a temp file and renamed (nobody
    ever reads half of it). The shared caches of the book and the ablation are built so."""
    path = Path(path)
    if not path.is_file():
        with lock_folder(path, what or f"building {path.name}", wait=True, inside=False):
            if not path.is_file():
                with atomic_path(path) as tmp:
                    make(tmp)
    return path


# ----------------------------------------------------------------------------- errors that name the target

_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# what a write into the temp file or folder can hit that is about the target's place, not the writer's input
_WRITE_ERRNOS = _NO_SPACE | {errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _is_folder(path: str | os.PathLike, follow: bool = True) -> bool:
    """Whether ``path`` is a folder (with ``follow=False``: itself, not a link to one); False
    where it cannot be looked at (absent, a name too long, no permission)."""
    try:
        return stat.S_ISDIR(os.stat(path, follow_symlinks=follow).st_mode)
    except (OSError, ValueError):
        return False


def _existing_ancestor(path: Path) -> Path:
    """``path`` or the nearest of its parents that exists."""
    path = Path(os.path.abspath(path))
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return path


def _blocking_file(target: Path) -> Optional[Path]:
    """The first parent of ``target`` that exists and is not a folder (a file in the way), or None."""
    for parent in reversed(Path(os.path.abspath(target)).parents):
        if os.path.lexists(parent) and not _is_folder(parent):
            return parent
    return None


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def output_path_error(err: OSError, target: str | os.PathLike) -> OutputPathError:
    """``err`` (raised while writing ``target`` or its temp) as one line that names ``target``:

    a full disk or quota -> "No space left on device: TARGET"; a read-only file system or no
    permission -> the folder; a parent that is a file -> that parent; a target that is a
    folder; a name too long for the file system; anything else -> its ``strerror``.
    """
    if isinstance(err, OutputPathError):
        return err
    target = Path(target)
    folder = _existing_ancestor(target.parent)
    code, reason = err.errno, err.strerror or str(err) or type(err).__name__
    blocker = _blocking_file(target)
    if code in _NO_SPACE:
        message = f"No space left on device: {target}"
    elif blocker is not None and code in (errno.ENOTDIR, errno.EEXIST, errno.ENOENT, None):
        message = f"cannot write {target}: its parent {blocker} is not a folder (a file of that name is in the way)"
    elif code == errno.EISDIR or _is_folder(target, follow=False):
        message = f"cannot write {target}: it is a folder; give a file name"
    elif code == errno.EROFS or (code in (errno.EACCES, errno.EPERM) and _read_only(folder)):
        message = f"cannot write {target}: its folder {folder} is on a read-only file system"
    elif code in (errno.EACCES, errno.EPERM):
        message = f"cannot write {target}: no permission to write in its folder {folder}"
    elif code == errno.ENAMETOOLONG:
        longest = max(Path(os.path.abspath(target)).parts, key=lambda part: len(os.fsencode(part)))
        which = "its name" if longest == target.name else f"the folder name {one_line(longest, 40)} in it"
        message = (f"cannot write {target}: {which} is too long for the file system there "
                   f"({len(os.fsencode(longest))} bytes, at most {_name_max(folder)})")
    else:
        message = f"cannot write {target}: {reason}"
    return OutputPathError(message, code, reason, str(target))


@contextlib.contextmanager
def _output_errors(target: Path, tmp: str | os.PathLike | None = None,
                   errnos: frozenset | set = _WRITE_ERRNOS) -> Iterator[None]:
    """Turn the OSErrors of the block into ``output_path_error(err, target)``: all of them, or
    with ``tmp`` (the block is the caller's writer) only those of ``errnos`` on ``tmp`` or below
    it (a missing input file the writer reads stays what it is)."""
    try:
        yield
    except OutputPathError:
        raise
    except OSError as err:
        if tmp is not None:
            where = err.filename
            about_tmp = where is None or str(where) == str(target) or str(where).startswith(str(tmp))
            if err.errno not in errnos or not about_tmp:
                raise
        raise output_path_error(err, target) from err


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` if a file can be written there, else the ``OutputPathError`` writing it would
    raise; creates nothing. Call it before long work whose result goes to ``path``.

    Checked: ``path`` is not a folder; no parent of it is a file; its nearest existing folder is
    writable and not on a read-only file system (the missing folders between can then be made);
    every new name on the way fits the file system's limit.
    """
    path = Path(path)

    def refuse(code: int) -> OutputPathError:
        return output_path_error(OSError(code, os.strerror(code), str(path)), path)

    if _is_folder(path, follow=False):
        raise refuse(errno.EISDIR)
    if _blocking_file(path) is not None:
        raise refuse(errno.ENOTDIR)
    folder = _existing_ancestor(path.parent)
    if _read_only(folder):
        raise refuse(errno.EROFS)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise refuse(errno.EACCES)
    new = Path(os.path.abspath(path)).relative_to(folder).parts
    if any(len(os.fsencode(part)) > _name_max(folder) for part in new):
        raise refuse(errno.ENAMETOOLONG)
    return path


# ----------------------------------------------------------------------------- the folder lock

_held: dict[tuple[str, int], list] = {}    # (lock file, thread) -> [fd, depth]: a holder may lock again


def lock_path(folder: str | os.PathLike, inside: bool = True) -> Path:
    """The lock file of ``folder``: ``folder/.rrid.lock``, or with ``inside=False``
    ``.NAME.rrid.lock`` beside it (for a folder that is replaced by a rename, whose lock must
    outlive it). A symbolic link at ``folder`` is followed."""
    folder = real_target(folder)
    return folder / LOCK_NAME if inside else folder.parent / f".{temp_name(folder.name, folder.parent)}{LOCK_NAME}"


def _holder(fd: int) -> str:
    """Who holds the lock file ``fd``, as one line from what its holder wrote there."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        pid, host, command, what = (info.get(k) for k in ("pid", "host", "command", "what"))
        doing = f", {one_line(what, 80)}" if isinstance(what, str) and what else ""
        return f"pid {int(pid)} on {one_line(host, 60)}{doing}: {one_line(command, 160)}"
    except (OSError, ValueError, TypeError, AttributeError):
        return "a process that has not said which yet"


def _acquire(path: Path, folder: Path, wait: bool, on_wait: Optional[Callable[[str], None]]) -> int:
    """An open descriptor of ``path`` holding its exclusive flock (see :func:`lock_folder`)."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:
        if os.path.islink(path):
            raise FolderInUseError(f"cannot lock {folder}: its lock file {path} is a symbolic link; remove it")
        with _output_errors(path):
            fd = os.open(path, flags, 0o666)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise FolderInUseError(f"cannot lock {folder}: its lock file {path} is not a regular file; remove it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                message = f"{folder} is in use by another process ({_holder(fd)})"
                if not wait:
                    raise FolderInUseError(f"{message}; wait until it ends, or use another folder") from None
                if on_wait is not None:
                    on_wait(f"waiting: {message}")
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            if current is not None and os.path.samestat(os.fstat(fd), current):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)        # the holder we waited for removed the file: lock the one now there


def _remove_unheld_lock(path: Path) -> bool:
    """Remove the lock file ``path`` if no process holds it (locking it while it is removed)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False)):
            os.unlink(path)
            return True
    except OSError:          # held (BlockingIOError), or gone meanwhile
        pass
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike, what: str = "", wait: bool = False, *, inside: bool = True,
                on_wait: Optional[Callable[[str], None]] = None) -> Iterator[Path]:
    """Hold the advisory lock of ``folder`` for the block; yield the lock file.

    ``fcntl.flock`` on :func:`lock_path` (made with its folders if missing), into which the
    holder writes its pid, host, command line and ``what`` (e.g. "building the synthetic data
    set"). When another process holds it: with ``wait=False`` a one-line ``FolderInUseError``
    naming the folder and that process; with ``wait=True`` this blocks until it is free
    (``on_wait``, if given, is first called with a one-line note saying whom it waits for).

    The kernel releases the lock when its holder ends, however it ends (``kill -9`` included),
    so a stale lock never blocks; a lock file a killed holder left behind is simply locked and
    rewritten. On release the holder removes the file while still holding it; a process that
    was waiting on the removed file sees that and locks the current one. The same thread may
    lock a folder it already holds (the inner block does not release it). Only processes that
    lock are kept apart (the lock is advisory). Without ``fcntl`` (Windows) nothing is locked.
    """
    path = lock_path(folder, inside)
    key = (os.path.abspath(path), threading.get_ident())
    if fcntl is None or key in _held:
        if key in _held:
            _held[key][1] += 1
        try:
            yield path
        finally:
            if key in _held:
                _held[key][1] -= 1
        return
    with _output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, Path(folder), wait, on_wait)
    _held[key] = [fd, 1]
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv) or sys.executable,
                "what": what, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield path
    finally:
        del _held[key]
        try:
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False)):
                    os.unlink(path)
        finally:
            os.close(fd)            # releases the lock, whatever happened above
