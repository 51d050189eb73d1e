"""Writing files so that nothing half-written is ever left behind.

Every file ``rrid`` writes (checkpoints, configs, logs, ONNX models, result tables) goes
through :func:`atomic_path`: the content is written to a temp file in the target's folder,
flushed to disk, and renamed over the target in one step. A crash at any moment leaves
either the old file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_path", "atomic_write"]


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
