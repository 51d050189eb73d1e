"""The errors a user can cause, in one place, and the helpers that keep their messages to one line.

Every check of user input (command-line values, config files, data folders, checkpoints,
archives, output paths) raises a subclass of :class:`UserError` with a message that names the
file or setting and says what was expected. ``python -m rrid`` prints such an error as one line
``error: <message>`` and exits with status 2; any other exception is a bug and keeps its
traceback. Each class also derives from the built-in exception it has always been (a
``ConfigError`` is a ``ValueError``), so existing ``except`` clauses keep working.

A message may show a value read from an untrusted file (a YAML value, a pickle's argument, a
file name with a newline in it): :func:`short_repr`, :func:`one_line` and :func:`listing` show it in one line of
bounded length, without walking (or formatting) more of it than they print.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any, Iterable

__all__ = ["UserError", "ConfigError", "DatasetError", "CheckpointError", "RunFolderError",
           "WeightsError", "ExportError", "OutputPathError", "FolderInUseError", "short_repr", "one_line", "listing",
           "state_dict_mismatch"]


class UserError(Exception):
    """Bad input the user can fix; the command line shows it as one line and exits 2."""


class ConfigError(UserError, ValueError):
    """A configuration file or override that does not describe a valid run."""


class DatasetError(UserError, ValueError):
    """A data set on disk is missing, malformed or does not follow its protocol."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file that cannot be read (truncated, corrupted, failed checksum, not an rrid
    checkpoint, does not fit the model) or written (a full disk)."""


class RunFolderError(UserError, RuntimeError):
    """A run folder that holds another run (without resume or overwrite), is in use by another
    process, or a resume whose config differs from the saved run's."""


class WeightsError(UserError, RuntimeError):
    """ImageNet weights that are missing, fail their checksum, or are not a plain state dict."""


class ExportError(UserError, RuntimeError):
    """The ONNX export cannot run here (the ``onnx`` package is missing) or its result is wrong."""


class OutputPathError(UserError, OSError):
    """A file the user asked for cannot be written there: a full disk, a read-only or foreign
    folder, a parent that is a file, a target that is a folder, a name too long.

    The message names the user's path (never an internal temp file). ``errno``, ``strerror`` and
    ``filename`` (the target) are those of the ``OSError`` it stands for, so code that looks at
    ``err.errno`` (``rrid.files.describe_write_error``) keeps working; ``str(err)`` is the message.
    """

    def __init__(self, message: str, errno: int | None = None, strerror: str | None = None,
                 filename: str | None = None):
        super().__init__(message)
        self.errno, self.strerror, self.filename = errno, strerror, filename

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class FolderInUseError(UserError, RuntimeError):
    """A folder another live process holds the lock of (``rrid.files.lock_folder``); the message
    names the folder and that process (pid, host, command)."""


class _BoundedRepr(reprlib.Repr):
    """reprlib's, also bounded for the types it would format whole (big ints, bytes)."""

    def repr_int(self, x, level):
        if x.bit_length() > 128:
            return f"<an integer of {x.bit_length()} bits>"
        return repr(x)

    def repr_bytes(self, x, level):
        return repr(x[: self.maxstring]) + ("..." if len(x) > self.maxstring else "")

    repr_bytearray = repr_bytes


_REPR = _BoundedRepr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 60, 60, 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 4


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for a message: one line, at most ``limit`` characters, and computed from
    a bounded part of ``value`` (a nested list of a billion elements costs what four of its
    elements cost). Strings keep Python's escapes, so a newline shows as ``\\n``."""
    text = repr(value[:limit]) if isinstance(value, (str, bytes)) else _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(name: Any, limit: int = 100) -> str:
    """``str(name)`` for a message: control characters (a newline in a file name) escaped, at
    most ``limit`` characters; a value that is not a string is shown by :func:`short_repr`."""
    text = name if isinstance(name, str) else short_repr(name, limit)
    text = text[: limit * 4]
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        text = repr(text)[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def listing(names: Iterable[Any], limit: int = 5, sort: bool = False, width: int = 100) -> str:
    """``"3: a, b, c"``, ``"12: a, b, c, d, e and 7 more"``: how many ``names`` there are and the
    first ``limit`` of them (in sorted order with ``sort``), each on one line and at most
    ``width`` characters (file names and tensor names come from files the user gave)."""
    names = list(names)
    if sort:
        names = sorted(names, key=str)
    shown = ", ".join(one_line(n, width) for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{len(names)}: {shown}{more}"


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
