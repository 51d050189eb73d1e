"""Small helpers that every chapter of the book shares.

A chapter starts with the same first cell (``FIRST_CELL``): when ``rrid`` is missing (Colab),
it clones the repository and installs it in editable mode, so that ``configs/`` and ``data/``
are there as in a local checkout; then it calls :func:`setup` and :func:`banner`. Everything else here answers
one question a chapter would otherwise answer again and again:

* which mode runs (:func:`mode`, :func:`quick_input_size`),
* where the synthetic images are (:func:`synthetic`; market1501-mini: ``rrid.paths.market_mini``),
* which trained model to look at without retraining it in every chapter (:func:`quick_model`),
* which backbone weights a chapter looks at (:func:`pretrained_backbone`).

The widgets (``rrid.viz.interact``) and the switch between live and static pages
(``rrid.viz.is_static``) are figures' business: they live in :mod:`rrid.viz.widgets`.

Two modes, one switch (``RRID_MODE``):

* ``quick``: synthetic data or the 854-image market1501-mini, ResNet-18, 96 x 32 inputs, a few
  epochs; minutes on a laptop CPU. Numbers it produces are *not* the paper's results.
* ``full``: the paper's setting (ResNet-50, 384 x 128, 80 epochs on Market-1501); needs a GPU.
"""

from __future__ import annotations

import inspect
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import yaml

from rrid import ablation, paths, runtime, viz
from rrid.checkpoint import load_model
from rrid.config import load_config
from rrid.data import Market1501
from rrid.data import synthetic as data_synthetic
from rrid.errors import DatasetError, WeightsError
from rrid.files import build_once
from rrid.model import resnet_backbone
from rrid.train import fit

MODES = ("quick", "full")

# The first code cell of every chapter, word for word (tests/test_notebooks.py checks it);
# ``{url}`` is ``repository.url`` from ``_config.yml``, the one place the URL is written.
FIRST_CELL = """\
# Install rrid when it is missing (e.g. on Colab), then pick the mode: RRID_MODE=quick|full
import importlib.util, os, sys
if importlib.util.find_spec("rrid") is None:  # the whole project: package, configs/, data/
    !git clone -q --depth 1 {url} rrid-book
    %pip install -q -e "./rrid-book[book]"
    sys.path.insert(0, os.path.abspath("rrid-book"))
import rrid.book
rrid.book.setup()
rrid.book.banner()"""


def chapters(toc: Path | None = None) -> list[str]:
    """The book's pages in ``_toc.yml`` order, as written there (``"book/intro"``, ...)."""

    def walk(node):
        if isinstance(node, dict):
            found = [node[k] for k in ("root", "file") if k in node]
            return found + [f for v in node.values() if isinstance(v, (list, dict)) for f in walk(v)]
        if isinstance(node, list):
            return [f for item in node for f in walk(item)]
        return []

    return walk(yaml.safe_load(Path(toc or paths.ROOT / "_toc.yml").read_text()))


def mode() -> str:
    """``"quick"`` or ``"full"``: ``$RRID_MODE`` if set, else full when CUDA is present."""
    value = os.environ.get("RRID_MODE", "").strip().lower()
    if value:
        if value not in MODES:
            raise ValueError(f"RRID_MODE={value!r}: expected one of {MODES}")
        return value
    return "full" if torch.cuda.is_available() else "quick"


def is_quick() -> bool:
    return mode() == "quick"


def smoke() -> bool:
    """``RRID_SMOKE=1``: full mode's code paths with the smallest amounts (epochs, iterations,
    images, seeds), market1501-mini standing in for Market-1501 and random weights for ImageNet's:
    how CI runs every chapter's full-mode branch on a CPU (``make test-full``). Not for results."""
    value = os.environ.get("RRID_SMOKE", "").strip().lower()
    if value not in ("", "0", "1", "true", "false", "yes", "no"):
        raise ValueError(f"RRID_SMOKE={value!r}: expected 1 (smoke test) or 0")
    return value in ("1", "true", "yes")


def market1501() -> Path | None:
    """The Market-1501 folder full mode reads: ``data/market1501`` of the project once
    ``python -m rrid prepare market1501`` has put it there (the configs' ``data.root``); in a
    smoke run market1501-mini, which has the same layout; None when neither is there (a chapter
    then says so and falls back)."""
    if smoke():
        return paths.market_mini()
    root = paths.resolve("data/market1501")
    try:
        return Market1501.locate(root)
    except DatasetError:
        return None


def banner() -> None:
    """Print which mode produced the outputs below, and what that means."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    if mode() == "quick":
        print(f"RRID_MODE=quick on {device}: small data (synthetic or market1501-mini), ResNet-18, "
              "96 x 32 inputs, few epochs.\nNumbers below are quick-mode numbers, not the paper's results.")
    else:
        print(f"RRID_MODE=full on {device}: the paper's setting (ResNet-50, 384 x 128 inputs, "
              "Market-1501 or the data set you pick).")


def setup(seed: int = 0) -> str:
    """Seed python, numpy and torch, set the book's figure style; return the mode.

    Inside a notebook it also selects the inline matplotlib backend, so figures appear even
    when ``MPLBACKEND=Agg`` is exported (as the Makefile does for scripts). Quick mode uses
    min(2, cores) torch threads; they sleep when idle because ``import rrid`` set
    ``OMP_WAIT_POLICY=PASSIVE`` before torch was first imported.
    """
    runtime.seed_everything(seed)
    if mode() == "quick":
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    _inline_figures()
    viz.use_style()
    return mode()


def _inline_figures() -> None:
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        shell.run_line_magic("matplotlib", "inline")


def show(obj):
    """The source of a function, class or module from ``rrid``, highlighted in the notebook."""
    from IPython.display import Code   # IPython: there in every notebook, optional for the package

    return Code(inspect.getsource(obj), language="python")


def quick_input_size() -> tuple[int, int]:
    """Input (height, width): (96, 32) in quick mode, the paper's (384, 128) in full mode."""
    return (96, 32) if mode() == "quick" else (384, 128)


def backbone_name() -> str:
    """``resnet18`` in quick mode, the paper's ``resnet50`` in full mode."""
    return "resnet18" if mode() == "quick" else "resnet50"


_BACKBONE_WORDS = {"resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50"}


def _feature_extractor(name: str, pretrained: bool):
    """``rrid.model.resnet_backbone(name, pretrained, last_stride=1)``."""
    return resnet_backbone(name, pretrained=pretrained, last_stride=1)


def pretrained_backbone(build=None, name: str | None = None):
    """The mode's backbone as chapters 3-5 look at it: untrained in quick mode, with ImageNet
    weights in full mode, and untrained after a printed note when those weights cannot be had.

    ``name``: a ResNet (default :func:`backbone_name`: ResNet-18 in quick mode, ResNet-50 in
    full mode). ``build(name, pretrained)`` makes what holds the backbone; the default is
    ``rrid.model.resnet_backbone(name, pretrained, last_stride=1)``, the bare feature extractor
    (chapters 3 and 5); chapter 4 builds a whole ``RRID`` around it. In full mode a
    :class:`rrid.errors.WeightsError` (no network, a file that fails its checksum) is printed
    and ``build(name, False)`` is used instead, so the chapter still runs. Returns
    ``(built, words)``, the words saying which weights it has: ``"untrained ResNet-18"``,
    ``"ImageNet ResNet-50"``.
    """
    name = name or backbone_name()
    build = build or _feature_extractor
    words = _BACKBONE_WORDS.get(name, name)
    if not is_quick():
        try:
            return build(name, True), f"ImageNet {words}"
        except WeightsError as err:
            print(err)
    return build(name, False), f"untrained {words}"


def synthetic(seed: int = 0) -> Path:
    """The synthetic Market-1501-layout data set, generated once (seeded) and reused.

    Written to ``<repo>/data/synthetic`` in a checkout, ``~/.cache/rrid/synthetic`` otherwise.
    """
    name = "synthetic" if seed == 0 else f"synthetic-seed{seed}"
    out = paths.writable_dir(paths.ROOT / "data" / name, Path.home() / ".cache" / "rrid" / name)
    return Path(data_synthetic.ensure(out, seed=seed))


def quick_config_path(row: int | str = 13) -> Path:
    """``configs/quick/rowNN.yaml``: the CPU version of a row of the paper's Table 2 (13 = Ours-F);
    a name instead of a row picks ``configs/quick/<name>.yaml`` (e.g. ``"rest_only"``, Fig. 6)."""
    name = row if isinstance(row, str) else f"row{row:02d}"
    path = paths.ROOT / "configs" / "quick" / f"{name}.yaml"
    if not path.is_file():
        what = f"named {row!r}" if isinstance(row, str) else f"for Table 2 row {row}"
        raise FileNotFoundError(f"no quick config {what}: expected {path}")
    return path


def quick_model_path(row: int | str = 13, epochs: int | None = None) -> Path:
    """Where :func:`quick_model` keeps the checkpoint of ``row`` (``<cache_dir>/row13.pt``; with
    ``epochs``, ``row13-e1.pt``): present once the model is trained."""
    return paths.cache_dir() / (quick_config_path(row).stem + (f"-e{epochs}" if epochs is not None else "") + ".pt")


def quick_model(row: int | str = 13, epochs: int | None = None):
    """The model of Table 2's ``row`` trained in quick mode: trained once, then loaded.

    ``row`` may also name a file of ``configs/quick/`` (``quick_model("rest_only")``: the paper's
    Fig. 6 model, q_i = p̄_i + R_p(r̄_i)).

    Chapters 7-9 all look at the same small model, so the first caller trains it with
    :func:`rrid.fit` on ``configs/quick/rowNN.yaml`` and keeps its checkpoint under
    :func:`rrid.paths.cache_dir` (:func:`quick_model_path`; :func:`prepare`, which ``make book``
    runs first, trains the rows of :data:`BOOK_QUICK_MODELS` there ahead of the chapters, since one
    takes minutes on a 2-core CPU); later callers (other chapters, other processes) load it.
    :func:`rrid.files.build_once` keeps two processes from training the same model at once, and
    the checkpoint appears by atomic rename, so a reader never sees half of it. Returns ``(model, config)``, the model
    in eval mode on the CPU.
    """
    overrides = [f"train.epochs={epochs}"] if epochs is not None else []
    config = load_config(quick_config_path(row), overrides)
    done = quick_model_path(row, epochs)

    def train(tmp: Path) -> None:     # the run folder is the cache's own: a build killed half-way is replaced
        result = fit(config, out_dir=done.parent / f"{done.stem}-run", progress=False, overwrite=True)
        shutil.copyfile(result.last_checkpoint, tmp)

    build_once(done, train, f"training the quick model of {done.stem}")
    return load_model(done), config


# --- The preparation step: what the chapters read, built once before they run ---------------

BOOK_MODELS = ((4, 0), (5, 0), ("rest_only", 0), (6, 0), (7, 0), (8, 0), (13, 0))
"""(row, seed) of the head-only models (``rrid.ablation.trained_model``) the chapters draw."""

BOOK_QUICK_MODELS = (13,)
"""Rows whose end-to-end quick model (:func:`quick_model`) the chapters load (minutes each on a
2-core CPU: longer than a chapter's cell should take)."""


def prepare(protocol=None, cache_dir=None, models=BOOK_MODELS, quick_models=(), heads: bool = True,
            out=print) -> dict[str, float]:
    """Build everything the chapters read, once (``python -m rrid prepare-book``; ``make book`` runs it
    first): the head-only protocol's synthetic split, backbone and feature cache and the heads of
    ``models`` ((row, seed) pairs; ``heads=False`` skips all of these), then the end-to-end quick
    models of ``quick_models`` (the command passes :data:`BOOK_QUICK_MODELS`). ``make test`` runs
    the two halves side by side in two processes.
    Each step is skipped when its file exists (atomic and locked, like every build here). Prints a
    line per step and returns {step: seconds}."""
    pr = protocol or ablation.QUICK
    start, seconds = time.perf_counter(), {}

    def step(name: str, path: Path, build, what: str) -> None:
        found, t0 = path.exists(), time.perf_counter()
        build()
        seconds[name] = time.perf_counter() - t0
        out(f"  {what}: " + (f"found ({path.name})" if found else f"built in {seconds[name]:.0f} s"), flush=True)

    where = ablation.cache_file(pr, "features", cache_dir).parent
    out(f"rrid prepare-book: head-only protocol {pr.key()}, cache {where}", flush=True)
    if heads:
        step("synthetic set", ablation.cache_file(pr, "synthetic", cache_dir),
             lambda: ablation.synthetic_split(pr, cache_dir),
             f"synthetic set ({pr.backbone_ids} + {pr.train_ids} + {pr.test_ids} identities)")
        step("backbone", ablation.cache_file(pr, "backbone", cache_dir),
             lambda: ablation.train_backbone(pr, cache_dir, progress=True),
             f"backbone ({pr.backbone}, {pr.backbone_epochs} epochs, {pr.backbone_threads} thread(s))")
        step("feature cache", ablation.cache_file(pr, "features", cache_dir),
             lambda: ablation.build_features(pr, cache_dir, progress=True),
             f"feature cache ({pr.views} training views, test images plain and mirrored)")
        for row, seed in models:
            step(f"heads {row} seed {seed}", ablation.heads_file(row, seed, pr, cache_dir),
                 lambda: ablation.trained_run(row, seed, pr, cache_dir), f"heads of row {row}, seed {seed}")
    for row in quick_models:
        step(f"quick model {row}", quick_model_path(row), lambda: quick_model(row),
             f"end-to-end quick model of row {row} ({quick_config_path(row).name})")
    seconds["total"] = time.perf_counter() - start
    out(f"rrid prepare-book: done in {seconds['total']:.0f} s", flush=True)
    return seconds
