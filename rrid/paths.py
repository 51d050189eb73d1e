"""Where things are: the project folder, data sets and caches, found in one place.

* ``ROOT``: the checkout ``rrid`` is imported from (an editable install or a clone: it holds
  ``configs/`` and ``_config.yml``). The book reads its configs and writes its caches here.
* :func:`project_root`: the folder that relative data paths are read from. Configs read
  ``data.root`` relative to the folder that holds their ``configs/`` tree; the command line
  (``prepare --root``, ``synth OUT``) reads relative paths from the same place, so a data set
  prepared from any working directory (``/content`` on Colab) lands where the configs look.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ROOT", "project_root", "config_project", "resolve", "market_mini", "cache_dir", "writable_dir"]

ROOT = Path(__file__).resolve().parents[1]


def _has_configs(folder: Path) -> bool:
    return (folder / "configs").is_dir()


def project_root() -> Path:
    """The nearest folder at or above the working directory that holds ``configs/``; else the
    checkout ``rrid`` is imported from, when it holds ``configs/`` (Colab: ``/content`` has no
    ``configs/``, the clone ``/content/rrid-book`` has); else the working directory."""
    cwd = Path.cwd()
    found = next((d for d in (cwd, *cwd.parents) if _has_configs(d)), None)
    if found is not None:
        return found
    return ROOT if _has_configs(ROOT) else cwd


def config_project(config_path: str | os.PathLike) -> Path:
    """The folder holding the ``configs/`` tree that ``config_path`` lies in (a config's relative
    ``data.root`` is read from there); :func:`project_root` for a config outside such a tree."""
    for parent in Path(config_path).resolve().parents:
        if parent.name == "configs":
            return parent.parent
    return project_root()


def resolve(path: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """``path`` with ``~`` expanded; a relative one joined to ``base`` (default
    :func:`project_root`). The result is absolute."""
    path = Path(os.path.expanduser(str(path)))
    if path.is_absolute():
        return path
    return (Path(base) if base is not None else project_root()).absolute() / path


def writable_dir(preferred: Path, fallback: Path) -> Path:
    """``preferred`` when ``ROOT`` is a writable checkout of the repository, else ``fallback``."""
    if (ROOT / "_config.yml").is_file() and os.access(ROOT, os.W_OK):
        return preferred
    return fallback


def cache_dir() -> Path:
    """Where the book keeps what it trains once (quick models, the ablation's backbone and
    feature cache): ``$RRID_CACHE``, else ``<checkout>/_build/.rrid-cache``, else
    ``~/.cache/rrid/models``."""
    if os.environ.get("RRID_CACHE"):
        return Path(os.environ["RRID_CACHE"])
    return writable_dir(ROOT / "_build" / ".rrid-cache", Path.home() / ".cache" / "rrid" / "models")


def market_mini() -> Path | None:
    """The market1501-mini folder (854 real Market-1501 crops), or None when absent.

    Looked for in ``$RRID_MARKET_MINI``, ``../shared/data/market1501-mini`` beside the
    checkout, then ``data/market1501-mini`` inside it. ``RRID_MARKET_MINI=none`` hides it
    (to see the book as a fresh clone without it shows it).
    """
    env = os.environ.get("RRID_MARKET_MINI")
    if env and env.lower() == "none":
        return None
    candidates = [Path(env)] if env else []
    candidates += [ROOT.parent / "shared" / "data" / "market1501-mini", ROOT / "data" / "market1501-mini"]
    return next((path for path in candidates if (path / "bounding_box_train").is_dir()), None)
