"""The errors a user can cause, in one place.

Every check of user input (command-line values, config files, data folders, checkpoints,
archives, output paths) raises a subclass of :class:`UserError` with a message that names the
file or setting and says what was expected. ``python -m rrid`` prints such an error as one line
``error: <message>`` and exits with status 2; any other exception is a bug and keeps its
traceback. Each class also derives from the built-in exception it has always been (a
``ConfigError`` is a ``ValueError``), so existing ``except`` clauses keep working.
"""

from __future__ import annotations

import re

__all__ = ["UserError", "ConfigError", "DatasetError", "CheckpointError", "RunFolderError",
           "WeightsError", "ExportError", "state_dict_mismatch"]


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
