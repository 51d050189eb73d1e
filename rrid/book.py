"""Small helpers that every chapter of the book shares.

A chapter starts with the same first cell (``FIRST_CELL``): when ``rrid`` is missing (Colab),
it clones the repository and installs it in editable mode (its dependencies only: no book or
test tools), so that ``configs/`` and ``data/`` are there as in a local checkout; then it calls
:func:`setup` and :func:`banner` with the chapter's label. Everything else here answers one
question a chapter would otherwise answer again and again:

* which mode runs (:func:`mode`, :func:`smoke`, :func:`quick_input_size`), on which device
  (:func:`device`), and what that means for this chapter (:data:`CHAPTERS`, :func:`banner`);
* which pictures a chapter looks at (:func:`crops`: market1501-mini in quick mode, the prepared
  Market-1501 in full mode; :func:`synthetic`), and how full mode gets Market-1501
  (:func:`prepare_market1501`, :func:`market1501`);
* which trained model to look at without retraining it in every chapter (:func:`quick_model`;
  in full mode :func:`full_config` and :func:`full_model`, the run of the training chapter);
* which backbone weights a chapter looks at (:func:`pretrained_backbone`);
* which statements about a network's numbers a chapter checks (:func:`claim`).

The widgets (``rrid.viz.interact``) and the switch between live and static pages
(``rrid.viz.is_static``) are figures' business: they live in :mod:`rrid.viz.widgets`.

Two modes, one switch (``RRID_MODE``), and a setting for CI (``RRID_SMOKE``):

* ``quick``: synthetic data or the 854-image market1501-mini, ResNet-18, 96 x 32 inputs, a few
  epochs; minutes on a laptop CPU. Numbers it produces are *not* the paper's results.
* ``full``: the paper's setting (ImageNet ResNet-50, 384 x 128, Market-1501 once prepared, 80
  epochs); needs a GPU. Each chapter's banner says what it runs and where it falls back.
* ``full`` with ``RRID_SMOKE=1``: every full-mode code path with the smallest amounts (a few
  images and steps, random instead of ImageNet weights, market1501-mini for Market-1501), so
  that CI runs full mode on a CPU (``make test-full``). Its numbers mean nothing.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from typing import NamedTuple

import torch
import yaml

from rrid import ablation, paths, runtime, viz
from rrid.checkpoint import checkpoint_config, load_checkpoint, load_model
from rrid.config import ExperimentConfig, load_config
from rrid.data import Market1501
from rrid.data import synthetic as data_synthetic
from rrid.data.download import prepare_market1501 as unpack_market1501
from rrid.errors import DatasetError, WeightsError
from rrid.files import build_once, file_hash
from rrid.model import resnet_backbone
from rrid.train import fit

MODES = ("quick", "full")

# The first code cell of every chapter, word for word (tests/test_notebooks.py checks it);
# ``{url}`` is ``repository.url`` from ``_config.yml``, the one place the URL is written, and
# ``{label}`` the chapter's label (its first line, ``(ch-relation)=``), a key of ``CHAPTERS``.
# On Colab only the package and its dependencies are installed: the book's and the tests' tools
# (Jupyter Book, nbval, pytest) are for building the book, not for reading it.
FIRST_CELL = """\
# Install rrid when it is missing (Colab), then pick the mode: RRID_MODE=quick|full
import importlib.util, os, sys
if importlib.util.find_spec("rrid") is None:  # the project: package, configs/, data/
    !git clone -q --depth 1 {url} rrid-book
    %pip install -q -e ./rrid-book
    sys.path.insert(0, os.path.abspath("rrid-book"))
import rrid.book
rrid.book.setup()
rrid.book.banner("{label}")"""


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


def device() -> torch.device:
    """Where a chapter computes what it computes itself: the GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def market1501() -> Path | None:
    """The Market-1501 folder full mode reads: ``data/market1501`` of the project once
    ``python -m rrid prepare market1501`` (or :func:`prepare_market1501`) has put it there (the
    configs' ``data.root``); in a smoke run market1501-mini, which has the same layout; None when
    neither is there (a chapter then says so and falls back)."""
    if smoke():
        return paths.market_mini()
    root = paths.resolve("data/market1501")
    try:
        return Market1501.locate(root)
    except DatasetError:
        return None


PREPARE_HINT = ("python -m rrid prepare market1501 --source <Market-1501-v15.09.15.zip: a path, a URL or a Google "
                "Drive link> (the training chapter has a cell for it)")


def crops(note: bool = True) -> Path | None:
    """The real pedestrian crops a chapter looks at: market1501-mini in quick mode; in full mode
    the prepared Market-1501 (:func:`market1501`), else market1501-mini after a printed note
    (``note``) naming the command that prepares Market-1501; None when neither is there (the
    chapter then uses :func:`synthetic`)."""
    if is_quick():
        return paths.market_mini()
    found = market1501()
    if found is None and note:
        print(f"Market-1501 is not prepared here, so this chapter shows "
              f"{'market1501-mini' if paths.market_mini() else 'the synthetic data set'} instead: {PREPARE_HINT}")
    return found or paths.market_mini()


def crops_name(root: Path) -> str:
    """How a chapter names the images of ``root``, a folder :func:`crops` returned."""
    if root == paths.market_mini():
        return "market1501-mini (real Market-1501 crops, Zheng et al. 2015)"
    return f"Market-1501 (Zheng et al. 2015, {root})"


# --- What each chapter runs in each mode ------------------------------------------------------

class ChapterPlan(NamedTuple):
    """What a chapter computes: in quick mode, in full mode, and what it keeps from quick mode in
    full mode, with the reason (empty when nothing). ``{backbone}``, ``{crops}`` and ``{device}``
    are filled in by :func:`banner` with what this machine has."""

    quick: str
    full: str
    kept: str = ""


CHAPTERS = {
    "preface": ChapterPlan("no model is trained or run; shapes come from the meta device",
                           "the same as quick mode: no model is trained or run"),
    "ch-reid-task": ChapterPlan("data: market1501-mini (else the synthetic set); the section on quick mode's "
                                "synthetic set draws that set; no model",
                                "data: {crops}; the section on quick mode's synthetic set draws that set; no model"),
    "ch-backbone": ChapterPlan("shapes, parameters and compute of ResNet-18 and ResNet-50 on the meta device (no "
                               "arithmetic); timed: an untrained ResNet-18 at 96 x 32 on the CPU",
                               "shapes, parameters and compute on the meta device, as in quick mode; timed: an "
                               "untrained ResNet-50 at 384 x 128 on {device}"),
    "ch-stripes": ChapterPlan("model: untrained ResNet-18 at 384 x 128; data: a market1501-mini crop (else a "
                              "synthetic one); trained features: the committed quick head-only ablation",
                              "model: {backbone} at 384 x 128; data: a crop of {crops}; trained features: the "
                              "committed head-only ablation (the full protocol's when committed)",
                              "the quick head-only ablation's rows 3 and 4 unless the full protocol's results are "
                              "committed: running it takes hours of GPU time (the ablations chapter)"),
    "ch-relation": ChapterPlan("model: Ours-S on an untrained ResNet-18; data: market1501-mini crops; trained "
                               "relation modules and Table 3: the head-only protocol's (synthetic, ResNet-18)",
                               "model: Ours-S on {backbone} at 384 x 128; data: crops of {crops}; trained relation "
                               "modules (row 5, rest-only): the full head-only protocol's once the ablation chapter "
                               "has trained them here in full mode, else the quick protocol's (a cell says which)",
                               "until the ablation chapter has run in full mode here, the trained relation modules "
                               "are the quick head-only protocol's (synthetic, ResNet-18): the full protocol's need "
                               "its Market-1501 feature cache, built there on a GPU; Table 3's benchmark is the "
                               "committed quick one in every mode (the full protocol's results are the ablation "
                               "chapter's)"),
    "ch-gcp": ChapterPlan("model: untrained ResNet-18 at 384 x 128; data: a market1501-mini crop; trained GCP and "
                          "Table 4: the head-only protocol's (synthetic, ResNet-18)",
                          "model: {backbone} at 384 x 128; data: a crop of {crops}; trained GCP (rows 8, 5): the "
                          "full head-only protocol's once the ablation chapter has trained them here in full mode, "
                          "else the quick protocol's (a cell says which)",
                          "until the ablation chapter has run in full mode here, the trained GCP is the quick "
                          "head-only protocol's (synthetic, ResNet-18); the Table 4 and Table 2 comparisons are "
                          "the committed quick benchmark's in every mode (the full protocol's results are the "
                          "ablation chapter's)"),
    "ch-losses": ChapterPlan("model: untrained Ours-F on ResNet-18 at 96 x 32; data: a synthetic 8 x 4 batch (the "
                             "augmentation figure: market1501-mini crops, else synthetic images)",
                             "model: untrained Ours-F on ResNet-50 at 384 x 128 on {device}; data: a synthetic "
                             "8 x 4 batch (the augmentation figure: {crops})",
                             "the synthetic 8 x 4 batch of the quick configs: the losses at work on one batch of "
                             "an untrained network need no real data"),
    "ch-training": ChapterPlan("training: quick configs on the synthetic set (ResNet-18, 96 x 32) on {device}; the "
                               "full recipe's data step and run only print what they would do",
                               "data step: Market-1501 from your archive into data/market1501 (a smoke run: a few "
                               "market1501-mini crops, in the cache); training: the paper's recipe "
                               "(configs/market1501/row13_ours_f.yaml, {backbone}, 384 x 128) on {device} once "
                               "the data step has succeeded",
                               "the short demonstration runs (a quick epoch, the resume check) keep the quick "
                               "configs: they show the mechanics in seconds"),
    "ch-evaluation": ChapterPlan("model: the quick Ours-F (ResNet-18, 96 x 32, synthetic); data: its synthetic "
                                 "test split and market1501-mini; Fig. 5: the head-only protocol's models; the "
                                 "authors' model: a stand-in in their file format",
                                 "model: the training chapter's Ours-F (ResNet-50, 384 x 128) when its checkpoint "
                                 "is there, else the quick Ours-F; data: that model's test split (Market-1501 for "
                                 "the training chapter's; a smoke run's is a few market1501-mini crops); the "
                                 "authors' model: their release once DOWNLOAD_AUTHORS_MODEL is set, else a stand-in",
                                 "Fig. 5's retrievals compare the quick head-only protocol's models (synthetic): "
                                 "six end-to-end runs at the paper's scale would take many GPU hours"),
    "ch-ablations": ChapterPlan("the committed head-only benchmark (synthetic, ResNet-18, 5 seeds) and a live run",
                                "the full head-only protocol on {device} (the frozen {backbone}; data: {crops}): its "
                                "committed results when they are here, else it runs first where there is a GPU (or "
                                "in a smoke run); then it trains the head-only models other chapters show; and a "
                                "live run",
                                "without Market-1501 or a GPU to run the full protocol on, the chapter shows the "
                                "committed quick benchmark (synthetic, ResNet-18), and says so"),
    "ch-beyond": ChapterPlan("published numbers; data: market1501-mini crops (else the synthetic set) for the "
                             "image-list example; no model is trained",
                             "published numbers; data: {crops} for the image-list example; no model is trained"),
    "ch-paper-code": ChapterPlan("model: untrained Ours-F on ResNet-18 at 96 x 32; data: a synthetic 16 x 4 batch "
                                 "(random erasing: a market1501-mini crop, else a synthetic one)",
                                 "model: untrained Ours-F on ResNet-50 at 384 x 128 on {device}; data: a synthetic "
                                 "16 x 4 batch (random erasing: a market1501-mini crop, else a synthetic one)"),
}
"""Every chapter's plan, by the label of its first line (tests/test_notebooks.py: one per chapter)."""


def _machine() -> dict:
    """The words :func:`banner` fills in: the backbone's weights, the crops, the device."""
    if smoke():
        backbone = "ResNet-50 with random weights (a smoke run downloads nothing)"
    else:
        backbone = "ImageNet ResNet-50 (random weights after a note when they cannot be downloaded)"
    found = market1501()
    if found is not None:
        where = "market1501-mini, standing in for Market-1501 in a smoke run" if smoke() else f"Market-1501 ({found})"
    else:
        where = ("market1501-mini" if paths.market_mini() else "the synthetic set") + \
            " (Market-1501 is not prepared here)"
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "the CPU"
    return {"backbone": backbone, "crops": where, "device": name}


def banner(label: str = "") -> None:
    """Print which mode produced the outputs below and what this chapter runs in it
    (:data:`CHAPTERS`): model, data, device, and what it keeps from quick mode."""
    on = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    plan = CHAPTERS.get(label)
    words = _machine() if plan is not None else {}
    if mode() == "quick":
        print(f"RRID_MODE=quick on {on}: small data (synthetic or market1501-mini), ResNet-18, "
              "96 x 32 inputs, few epochs.\nNumbers below are quick-mode numbers, not the paper's results.")
        if plan is not None:
            print("This chapter: " + plan.quick.format(**words) + ".")
        return
    if smoke():
        print(f"RRID_MODE=full RRID_SMOKE=1 on {on}: full mode's code paths with the smallest amounts (a few images "
              "and steps, random weights, market1501-mini for Market-1501).\nNumbers below mean nothing.")
    else:
        print(f"RRID_MODE=full on {on}: the paper's setting (ResNet-50, 384 x 128 inputs, "
              "Market-1501 or the data set you pick).")
    if plan is not None:
        print("This chapter: " + plan.full.format(**words) + "."
              + (f"\nKept from quick mode: {plan.kept.format(**words)}." if plan.kept else ""))
    if not torch.cuda.is_available() and not smoke():
        print("No GPU here: full mode's training and feature extraction will be very slow on the CPU.")


def claim(holds: bool, statement: str) -> bool:
    """A statement the chapter's text makes about a network's numbers. The text was written from
    quick mode's networks, so there it is asserted (the built book cannot say what is false); in
    full mode, another network, it is printed with whether it holds here. Returns ``holds``."""
    if is_quick():
        assert holds, statement
    elif not holds:
        print(f"Does not hold for this full-mode network: {statement}")
    return holds


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


LISTING_WIDTH = 88
"""Columns of a listing :func:`show` prints (the page shows about 88; the package's lines go to 120)."""


def fit_listing(source: str, width: int = LISTING_WIDTH, prose: bool = False) -> str:
    """``source`` fitted to ``width`` columns, so that a listing reads on the page instead of
    wrapping back to column 0. The words, in order, are the source's; short text is untouched.

    A paragraph of a docstring or a comment (``prose``: of the whole text, a docstring printed
    on its own) with a line too long is filled again, its continuation lines at the paragraph's
    indentation (a bullet's text, a comment's ``#``). Another long line is broken at spaces and
    continued under its second column where it has one (``name    text``, ``key: 1   # note``),
    else four columns deeper. A word longer than the line is left whole."""
    lines = source.splitlines()
    inside = _inside_docstring(lines)
    out, i = [], 0
    while i < len(lines):
        start = _paragraph_start(lines[i], prose or inside[i] or _is_comment(lines[i]), width)
        if start is None:
            out += _break_line(lines[i], width)
            i += 1
            continue
        first, more = start
        j = i + 1
        while j < len(lines) and (prose or inside[j] == inside[i]) and _continues(lines[j - 1], lines[j], more):
            j += 1
        if max(len(line) for line in lines[i:j]) <= width:
            out += lines[i:j]
        else:
            words = " ".join([lines[i][len(first):]] + [line[len(more):] for line in lines[i + 1:j]])
            out += textwrap.wrap(words, width, initial_indent=first, subsequent_indent=more,
                                 break_long_words=False, break_on_hyphens=False)
        i = j
    return "\n".join(out) + ("\n" if source.endswith("\n") else "")


def _inside_docstring(lines: list[str]) -> list[bool]:
    """Whether each line is prose of a triple-quoted string: it starts inside one, or opens one."""
    inside, flags = False, []
    for line in lines:
        flags.append(inside or line.lstrip().startswith(('"""', 'r"""')))
        inside ^= line.count('"""') % 2 == 1
    return flags


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


_LEAD = re.compile(r'(\s*(?:r?"""|#+)?\s*)((?:[*-]|\d+[.)])\s+)?')
_ALIGNED = re.compile(r"\S(\s{2,})(\S)")           # a second column: text after two or more spaces


def _second_column(line: str, width: int) -> int | None:
    """Where ``line``'s second column (text after two or more spaces) starts, when that leaves
    room to continue under it (16 columns at least); else None."""
    column = _ALIGNED.search(line)
    return column.start(2) if column and column.start(2) < width - 16 else None


def _paragraph_start(line: str, prose: bool, width: int):
    """(prefix of the first line, prefix of its continuation lines) of a paragraph that starts with
    ``line``: prose (a bullet's text continues under the text), an item in columns (``name   text``,
    continued under the text), or code with a comment in a second column (continued as a comment
    there); None for a line that is none of these, or blank."""
    at = _second_column(line, width)
    if at is not None:
        mark = "# " if line.startswith("# ", at) else ""
        return (line[:at] + mark, " " * at + mark) if prose or mark else None
    if not prose or not line.strip():
        return None
    lead, bullet = _LEAD.match(line).groups()
    first = lead + (bullet or "")
    if not line[len(first):].strip():
        return None
    more = lead if _is_comment(line) else " " * len(lead.replace('r"""', "").replace('"""', ""))
    return first, more + " " * len(bullet or "")


def _continues(previous: str, line: str, more: str) -> bool:
    """Whether ``line`` goes on with the paragraph whose continuation prefix is ``more``."""
    text = line[len(more):]
    return (line.startswith(more) and text[:1] not in ("", " ") and not previous.rstrip().endswith((":", '"""'))
            and _LEAD.match(text).group(2) is None and not _ALIGNED.search(text)
            and not text.startswith((">>>", '"""', "#")))


def _break_line(line: str, width: int) -> list[str]:
    """A line longer than ``width`` broken at spaces, continued under its second column, if any."""
    if len(line) <= width:
        return [line]
    indent = line[:len(line) - len(line.lstrip())]
    more = indent + ("# " if _is_comment(line) else "    ")
    at = _second_column(line, width)
    if at is not None:
        more = " " * at + ("# " if line[at] == "#" else "")
    return textwrap.wrap(line.strip(), width, initial_indent=indent, subsequent_indent=more,
                         break_long_words=False, break_on_hyphens=False)


def show(obj):
    """The source of a function, class or module from ``rrid``, highlighted in the notebook, its
    long lines broken to fit the page (:func:`fit_listing`)."""
    from IPython.display import Code   # IPython: there in every notebook, optional for the package

    return Code(fit_listing(inspect.getsource(obj)), language="python")


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
    full mode; random weights in a smoke run, which downloads nothing). ``build(name, pretrained)``
    makes what holds the backbone; the default is
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
    if not is_quick() and not smoke():                 # a smoke run downloads nothing: random weights
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


# --- The training chapter's resume check -------------------------------------------------------

RESUME_TOLERANCE = 0.01
"""On a GPU, how far the resumed run's weights may lie from the uninterrupted run's, as a share of
the distance training moved them from their start (see :func:`resume_check`)."""


def resume_check(plain: dict, resumed: dict, start: dict, on: torch.device) -> tuple[bool, str]:
    """Compare the weights of an uninterrupted run (``plain``) and of an interrupted and resumed one
    (state dicts), both begun from ``start``: ``(whether they agree, the sentence that says how)``.

    On the CPU every tensor must be bitwise equal: its kernels are deterministic, and a resume puts
    back every state a step depends on. On a GPU two runs differ in their last bits even without an
    interruption (non-deterministic kernels, e.g. the atomic additions of cuDNN's backward
    convolutions, and autocast's bf16 / fp16 rounding), and training carries such differences on;
    there the resumed weights must lie within :data:`RESUME_TOLERANCE` of the distance training
    moved them, ``||resumed - plain|| <= 1 % x ||plain - start||`` over every floating-point tensor,
    and integer counters must still be equal."""
    if plain.keys() != resumed.keys():
        return False, "the two runs' checkpoints hold different tensors"
    if on.type == "cpu":
        same = all(torch.equal(plain[k], resumed[k]) for k in plain)
        return same, f"uninterrupted vs. interrupted + resumed, every tensor equal: {same}"
    floats = [k for k in plain if plain[k].is_floating_point()]
    if not all(torch.equal(plain[k], resumed[k]) for k in plain if k not in floats):
        return False, "uninterrupted vs. interrupted + resumed: their integer counters differ"
    gap = sum(float((resumed[k].double() - plain[k].double()).norm() ** 2) for k in floats) ** 0.5
    moved = sum(float((plain[k].double() - start[k].double().to(plain[k].device)).norm() ** 2) for k in floats) ** 0.5
    ok = gap <= RESUME_TOLERANCE * moved
    return ok, (f"uninterrupted vs. interrupted + resumed on {on.type}: the weights differ by {gap:.2g}, "
                f"{gap / max(moved, 1e-30):.1e} of the distance training moved them ({moved:.3g}); a GPU's "
                f"non-deterministic kernels and reduced precision differ in the last bits even between two "
                f"uninterrupted runs, so up to {RESUME_TOLERANCE:.0%} is allowed (bitwise equality on the CPU)")


# --- Full mode: Market-1501, the paper's run, and their smoke-sized stand-ins -------------------

FULL_CONFIG = Path("configs") / "market1501" / "row13_ours_f.yaml"
FULL_RUN = Path("runs") / "market1501_ours_f"
DRIVE_RUN = Path("/content/drive/MyDrive/rrid/market1501_ours_f")

SMOKE_OVERRIDES = ("train.epochs=1", "model.pretrained=false", "data.p=2", "data.k=2", "data.val_ids=1",
                   "data.workers=0", "data.test_batch_size=16", "train.log_every=1", "train.tensorboard=false")
"""What a smoke run changes in a full-mode config: amounts only (one epoch of a few 2 x 2 batches, one
held-out identity, no loader processes) and random weights (nothing is downloaded). The model
(ResNet-50, Ours-F), 384 x 128, the recipe's losses and schedule and every code path stay."""

SMOKE_IDS = 4
"""Identities in each split of the smoke data set (:func:`smoke_zip`)."""


def _smoke_members(mini: Market1501) -> dict[str, Path]:
    """{name in the zip: image} for :func:`smoke_zip`: two training images of each of the first
    ``SMOKE_IDS`` identities; of the first ``SMOKE_IDS`` test identities one query and its
    person's gallery images (at most three, at least one from another camera)."""
    members, top = {}, "Market-1501-v15.09.15"
    by_pid: dict[int, list] = {}
    for r in mini.train:
        by_pid.setdefault(r.pid, []).append(r)
    for pid in sorted(by_pid)[:SMOKE_IDS]:
        for r in by_pid[pid][:2]:
            members[f"{top}/bounding_box_train/{Path(r.path).name}"] = Path(r.path)
    for pid in sorted({q.pid for q in mini.query})[:SMOKE_IDS]:
        query = next(q for q in mini.query if q.pid == pid)
        gallery = sorted((g for g in mini.gallery if g.pid == pid), key=lambda g: g.camid == query.camid)[:3]
        members[f"{top}/query/{Path(query.path).name}"] = Path(query.path)
        members.update({f"{top}/bounding_box_test/{Path(g.path).name}": Path(g.path) for g in gallery})
    return members


def smoke_zip() -> Path:
    """A small ``Market-1501-v15.09.15.zip`` (:func:`_smoke_members` of market1501-mini, else of the
    synthetic set, which has the same layout), built once in the cache's ``smoke/drive/``: what a
    smoke run prepares in place of the reader's archive (on Drive, on Colab)."""
    source = paths.market_mini() or synthetic()
    name = "market1501-mini" if source == paths.market_mini() else "synthetic"

    def make(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w") as zf:
            for member, image in sorted(_smoke_members(Market1501(source)).items()):
                zf.write(image, member)

    return build_once(paths.cache_dir() / "smoke" / "drive" / name / "Market-1501-v15.09.15.zip", make,
                      "building the smoke run's Market-1501 archive")


def smoke_market() -> Path:
    """The smoke run's Market-1501: :func:`smoke_zip` prepared like the real archive (its own md5:
    the published one is the real file's) into the cache's ``smoke/market1501``."""
    archive = smoke_zip()
    root = unpack_market1501(archive, paths.cache_dir() / "smoke" / "market1501", md5=file_hash(archive, "md5"))
    return Market1501.locate(root)


def _mount_drive(source) -> None:
    """On Colab, mount Google Drive when ``source`` lies on it and it is not mounted yet."""
    if runtime.on_colab() and str(source).startswith("/content/drive") and not Path("/content/drive/MyDrive").is_dir():
        from google.colab import drive  # Colab's own module: there only

        drive.mount("/content/drive")


def prepare_market1501(source) -> Path:
    """Full mode's data step: Market-1501 from ``source`` (Market-1501-v15.09.15.zip: a path, e.g. on
    Google Drive, a URL or a Drive link; its published md5 is checked) into ``data/market1501`` of
    the project, where the configs read it; what ``python -m rrid prepare market1501 --source``
    does. A prepared folder is kept, so the cell costs nothing the second time. On Colab it mounts
    Drive when ``source`` is there, and says that the VM's disk is wiped on a disconnect. A smoke
    run prepares :func:`smoke_zip` into the cache instead. Returns the data set's folder."""
    if smoke():
        archive = smoke_zip()
        print(f"smoke run: {archive} (crops of {archive.parent.name}) stands in for {source}")
        found = smoke_market()
        print(f"the smoke run's Market-1501 is ready in {found}")
        return found
    root = paths.resolve("data/market1501")
    try:
        found = Market1501.locate(root)
        print(f"Market-1501 is already prepared in {found}: nothing to do")
    except DatasetError:
        _mount_drive(source)
        print(f"preparing Market-1501 in {root} from {source}")
        found = Market1501.locate(unpack_market1501(source, root))
        print(f"Market-1501 is ready in {found}")
    if runtime.on_colab():
        print("Colab: the VM's disk is wiped when the runtime disconnects; run this cell again in each new session "
              "(with the zip on Drive it only unpacks it again)")
    return found


def full_config(path=FULL_CONFIG, overrides=()) -> ExperimentConfig:
    """A full-mode config (default: Ours-F on Market-1501, the paper's recipe) with ``overrides``;
    in a smoke run also :data:`SMOKE_OVERRIDES` and the smoke data set (:func:`smoke_market`)."""
    path = paths.ROOT / path
    if smoke():
        overrides = [*overrides, *SMOKE_OVERRIDES, f"data.root={smoke_market()}"]
    return load_config(path, list(overrides))


def full_run_dir() -> Path:
    """Where the training chapter's full run lives: ``runs/market1501_ours_f`` of the project; on
    Colab ``/content/runs/...`` (the VM's fast disk; :func:`drive_mirror` keeps the copy that
    survives a disconnect); in a smoke run a folder of the cache."""
    if smoke():
        return paths.cache_dir() / "smoke" / FULL_RUN
    return Path("/content") / FULL_RUN if runtime.on_colab() else paths.resolve(FULL_RUN)


def drive_mirror() -> Path | None:
    """The full run's mirror on Google Drive on Colab (``rrid.runs.Mirror``; Drive is mounted first,
    so the copy never lands on the VM's own disk); None elsewhere."""
    if not runtime.on_colab() or smoke():
        return None
    _mount_drive(DRIVE_RUN)
    return DRIVE_RUN


def full_model(on=None):
    """``(model, config)`` of the training chapter's full run: its ``best.pt`` (in the run folder, else
    in its Drive mirror) in eval mode on ``on`` (default :func:`device`), and the config it was
    trained with; None when no such checkpoint exists (the chapter then says so and falls back).
    A smoke run trains its tiny stand-in first when the training chapter has not."""
    path = full_run_dir() / "best.pt"
    if smoke() and not path.is_file():
        fit(full_config(), out_dir=path.parent, overwrite=True, progress=False)
    if not path.is_file():
        mirror = drive_mirror()
        path = mirror / "best.pt" if mirror is not None else path
        if not path.is_file():
            return None
    config = checkpoint_config(load_checkpoint(path), path)
    return load_model(path, config, on or device()), config


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
