"""The chapters as committed: stripped, listed in the table of contents, and built to one plan.

Every chapter is an ``.ipynb`` under ``book/`` that
* has no outputs, no execution counts and no widget state (nbval and the book build execute it);
* is in ``_toc.yml``, and everything in ``_toc.yml`` exists;
* starts with ``rrid.book.FIRST_CELL`` for ``_config.yml``'s ``repository.url`` (the one place
  the URL is written); a chapter opens with "What you will learn" and ends with "Exercises".
The preface, ``book/intro.ipynb``, is a notebook too (it draws the paper's Fig. 1 and Table 1): it
starts with the same first cell, explains the two modes and links every page of the book.
The small helpers in ``rrid/book.py`` are tested here too.
"""

import json
import re
from pathlib import Path

import pytest
import yaml

from page_checks import LINE_LIMIT, long_code_lines
from rrid import book, paths

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
PREFACE = ROOT / "book" / "intro.ipynb"
CHAPTERS = [p for p in NOTEBOOKS if p != PREFACE]


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell):
    text = cell["source"]
    return "".join(text) if isinstance(text, list) else text


def test_toc_lists_every_chapter_and_nothing_else():
    entries = book.chapters()
    assert entries[0] == "book/intro", "the preface is the root of the book"
    assert len(entries) == len(set(entries)), f"a chapter is listed twice in _toc.yml: {entries}"
    on_disk = {f"book/{p.stem}" for p in NOTEBOOKS} | {f"book/{p.stem}" for p in (ROOT / "book").glob("*.md")}
    assert set(entries) == on_disk, (
        f"in _toc.yml but not in book/: {sorted(set(entries) - on_disk)}; "
        f"in book/ but not in _toc.yml: {sorted(on_disk - set(entries))}")


def test_config_pins_the_build_rules():
    assert CONFIG["only_build_toc_files"] is True
    assert CONFIG["execute"]["execute_notebooks"] == "force"
    assert CONFIG["execute"]["raise_on_error"] is True
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["repository"]["url"].startswith("https://github.com/")
    assert CONFIG["html"]["use_repository_button"] is True
    import ipywidgets

    assert ipywidgets.__version__.split(".")[0] == "8"
    sphinx = CONFIG["sphinx"]["config"]
    assert sphinx["nb_render_markdown_format"] == "myst", "a Markdown table a cell returns must render as a table"
    assert sphinx["myst_linkify_fuzzy_links"] is False, "a file name in an output (args.py) is not a link"
    assert sphinx["nb_ipywidgets_js"] == {}, "no page needs ipywidgets' JavaScript (and it comes from CDNs)"
    assert "//" not in sphinx["mathjax_path"] and ".mathjax" in sphinx["html_static_path"], "MathJax from the build"


def test_toc_numbers_the_chapters_and_not_the_reference_pages():
    """Figures are numbered by chapter (Fig. 4.2): every part but the reference pages is numbered,
    chapters only (numbered: 1), and a figure takes its chapter's number (numfig_secnum_depth: 1)."""
    parts = yaml.safe_load((ROOT / "_toc.yml").read_text())["parts"]
    numbered = {part["caption"]: part.get("numbered") for part in parts}
    assert numbered.pop("Reference", None) is None, "the reference pages are not chapters"
    assert numbered and set(numbered.values()) == {1}, f"parts not numbered chapter by chapter: {numbered}"
    assert CONFIG["sphinx"]["config"]["numfig_secnum_depth"] == 1


def test_no_code_line_is_longer_than_88_columns():
    over = {path.stem: long_code_lines(load(path)) for path in NOTEBOOKS}
    count = sum(len(lines) for lines in over.values())
    assert count == 0, f"{count} code lines over {LINE_LIMIT} columns: " + ", ".join(
        f"{stem} {len(lines)}" for stem, lines in over.items() if lines)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_a_chapter_removes_the_temp_folders_it_makes(path):
    """A folder a chapter makes in the temp folder is removed by the chapter: in a ``with`` block, or
    by a later cell's ``.cleanup()`` of its TemporaryDirectory (nbval kills the kernel, so no
    finalizer runs). make book and make test-full check the same at run time (in_scratch)."""
    code = "\n".join("".join(c["source"]) for c in load(path)["cells"] if c["cell_type"] == "code")
    assert "mkdtemp(" not in code, f"{path.name}: tempfile.mkdtemp is never removed; use TemporaryDirectory"
    kept = re.findall(r"^\s*(\w+) = tempfile\.TemporaryDirectory\(", code, flags=re.M)
    for name in kept:
        assert code.count(f"{name}.cleanup()") == 1, f"{path.name}: no cell calls {name}.cleanup()"
    assert code.count("tempfile.TemporaryDirectory(") == len(kept) + len(
        re.findall(r"with tempfile\.TemporaryDirectory\(", code)), f"{path.name}: a temp folder without a name"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_stripped(path):
    nb = load(path)
    assert nb["nbformat"] == 4
    assert "widgets" not in nb["metadata"], f"{path.name}: strip metadata.widgets (widget state)"
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec must be python3"
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {i}: commit without outputs"
            assert cell.get("execution_count") is None, f"{path.name} cell {i}: commit without execution counts"
        assert "execution" not in cell.get("metadata", {}), f"{path.name} cell {i}: strip execution timestamps"
        assert "widgets" not in cell.get("metadata", {}), f"{path.name} cell {i}: strip widget state"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_cell_installs_rrid_from_the_configured_repository(path):
    code = [c for c in load(path)["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cell"
    first = source(code[0])
    url = CONFIG["repository"]["url"]
    found = re.search(r"git clone -q --depth 1 (\S+) ", first)
    assert found and found.group(1) == url, f"{path.name}: the install URL must equal _config.yml's repository.url ({url})"
    label = re.match(r"\(([\w-]+)\)=\n", source(load(path)["cells"][0])).group(1)
    assert first == book.FIRST_CELL.format(url=url, label=label), (
        f"{path.name}: the first code cell must be rrid.book.FIRST_CELL with the chapter's label {label!r}")


def test_every_chapter_has_a_plan_and_every_plan_a_chapter():
    labels = [re.match(r"\(([\w-]+)\)=\n", source(load(p)["cells"][0])).group(1) for p in NOTEBOOKS]
    assert sorted(labels) == sorted(book.CHAPTERS), "rrid.book.CHAPTERS: one plan per chapter label"
    words = {"backbone": "B", "crops": "C", "device": "D"}
    for label, plan in book.CHAPTERS.items():
        for text in plan:
            text.format(**words)                    # only the fields banner() fills in


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_opens_with_what_you_will_learn_and_ends_with_exercises(path):
    cells = load(path)["cells"]
    title = re.sub(r"^\([\w-]+\)=\n", "", source(cells[0]))  # an optional label line first: (ch-relation)=
    assert cells[0]["cell_type"] == "markdown" and title.startswith("# "), f"{path.name}: start with a '# Title'"
    opening = []
    for cell in cells:
        if cell["cell_type"] == "code":
            break
        opening.append(source(cell))
    assert re.search(r"what you will learn", "\n".join(opening), re.I), f"{path.name}: open with 'What you will learn' before the first code cell"
    headings = [line for c in cells if c["cell_type"] == "markdown" for line in source(c).splitlines() if line.startswith("## ")]
    assert headings and re.match(r"## Exercises\s*$", headings[-1]), f"{path.name}: the last section must be '## Exercises'"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_checked_cells_check_themselves(path):
    """Committed notebooks have no outputs, so nbval has nothing to compare a cell tagged
    ``nbval-check-output`` against: such a cell must assert its own numbers (``assert``, or
    ``rrid.book.claim``, which asserts in quick mode and reports in full mode)."""
    for i, cell in enumerate(load(path)["cells"]):
        if cell["cell_type"] != "code":
            continue
        checked = "nbval-check-output" in cell["metadata"].get("tags", []) or "# NBVAL_CHECK_OUTPUT" in source(cell)
        if checked:
            assert re.search(r"^\s*(assert |rrid\.book\.claim\()", source(cell), re.M), (
                f"{path.name} cell {i}: a checked cell needs an assert")


def markdown_of(path):
    return "\n".join(source(c) for c in load(path)["cells"] if c["cell_type"] == "markdown")


def test_preface_states_the_modes_and_links_every_page():
    assert PREFACE.is_file(), "the preface is book/intro.ipynb"
    text = markdown_of(PREFACE)
    assert re.sub(r"^\([\w-]+\)=\n", "", text).startswith("# "), "the preface starts with its title"
    for word in ("RRID_MODE", "quick", "full", "Colab"):
        assert word in text
    refs = set(re.findall(r"\{ref\}`(?:[^`<]*<)?([\w-]+)>?`", text))  # {ref}`label` or {ref}`text <label>`
    assert {"notation", "glossary", "references"} <= refs, "the map links the reference pages"
    for path in CHAPTERS:
        label = re.match(r"\(([\w-]+)\)=\n", source(load(path)["cells"][0]))
        if label:  # chapters open with a label line (ch-relation)= ; the map links each of them
            assert label.group(1) in refs, f"the preface's map does not link {path.name} ({label.group(1)})"


def test_chapters_reads_every_level_of_the_toc(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: a\nparts:\n  - caption: P\n    chapters:\n      - file: b\n"
                   "        sections:\n          - file: c\n      - file: d\n")
    assert book.chapters(toc) == ["a", "b", "c", "d"]


def test_first_cell_runs_pip_only_when_rrid_is_missing():
    cell = book.FIRST_CELL.format(url="https://example.org/x", label="ch-x")
    lines = cell.splitlines()
    clone = next(i for i, line in enumerate(lines) if "git clone" in line)
    assert lines[clone - 1].startswith("if ") and "find_spec(\"rrid\") is None" in lines[clone - 1]
    assert all(line.startswith("    ") for line in lines[clone:clone + 3]), "clone, install and path: only when missing"
    assert "git clone -q --depth 1 https://example.org/x rrid-book" in lines[clone]
    # a reader installs the package and its dependencies only: no book or test extra (Jupyter Book, nbval)
    assert lines[clone + 1].strip() == "%pip install -q -e ./rrid-book"


def test_mode_reads_rrid_mode(monkeypatch):
    monkeypatch.setenv("RRID_MODE", "quick")
    assert book.mode() == "quick" and book.quick_input_size() == (96, 32) and book.backbone_name() == "resnet18"
    monkeypatch.setenv("RRID_MODE", " FULL ")
    assert book.mode() == "full" and book.quick_input_size() == (384, 128) and book.backbone_name() == "resnet50"
    monkeypatch.setenv("RRID_MODE", "fast")
    with pytest.raises(ValueError, match="RRID_MODE='fast'"):
        book.mode()


def test_mode_defaults_to_full_only_with_cuda(monkeypatch):
    import torch

    monkeypatch.delenv("RRID_MODE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert book.mode() == "quick"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert book.mode() == "full"


def test_market_mini_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RRID_MARKET_MINI", str(tmp_path))
    monkeypatch.setattr(paths, "ROOT", tmp_path / "no-repo")  # hide the copies beside the repository
    assert paths.market_mini() is None, "a folder without bounding_box_train is not the data set"
    (tmp_path / "bounding_box_train").mkdir()
    assert paths.market_mini() == tmp_path
    monkeypatch.setattr(paths, "ROOT", tmp_path / "repo")
    (tmp_path / "repo" / "data" / "market1501-mini" / "bounding_box_train").mkdir(parents=True)
    monkeypatch.setenv("RRID_MARKET_MINI", "none")
    assert paths.market_mini() is None, "RRID_MARKET_MINI=none hides every copy"
    monkeypatch.delenv("RRID_MARKET_MINI")
    assert paths.market_mini() == tmp_path / "repo" / "data" / "market1501-mini"


def test_setup_seeds_everything(monkeypatch):
    import random

    import numpy as np
    import torch

    monkeypatch.setenv("RRID_MODE", "quick")
    threads = torch.get_num_threads()
    try:
        assert book.setup(seed=3) == "quick"
        first = (random.random(), np.random.rand(), torch.rand(1).item())
        book.setup(seed=3)
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    finally:
        torch.set_num_threads(threads)


def test_quick_config_path_names_the_file_when_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(paths, "ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match="row07.yaml"):
        book.quick_config_path(7)
    (tmp_path / "configs" / "quick").mkdir(parents=True)
    (tmp_path / "configs" / "quick" / "row07.yaml").write_text("{}")
    assert book.quick_config_path(7) == tmp_path / "configs" / "quick" / "row07.yaml"


def test_every_table2_row_has_a_quick_config():
    for row in range(1, 14):
        assert book.quick_config_path(row).is_file()


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_first_cell_sets_the_openmp_wait_policy_before_torch_loads(given, expected):
    """The first cell's `import rrid.book` sets OMP_WAIT_POLICY=PASSIVE (a value already set wins)
    before torch is first imported: OpenMP reads it only then (benchmarks/contention.py says why).
    An import hook records the variable at the moment torch's import starts."""
    import os
    import subprocess
    import sys
    import textwrap

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = os.pathsep.join([str(paths.ROOT), env.get("PYTHONPATH", "")])
    if given:
        env["OMP_WAIT_POLICY"] = given
    probe = textwrap.dedent("""
        import os, sys
        seen = []
        class Spy:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" and not seen:
                    seen.append(os.environ.get("OMP_WAIT_POLICY"))
        sys.meta_path.insert(0, Spy())
        import rrid.book
        print(seen)""")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == repr([expected]), done.stdout + done.stderr
    makefile = (paths.ROOT / "Makefile").read_text()
    assert "export OMP_WAIT_POLICY ?= PASSIVE" in makefile  # make book / make test kernels get it too


def test_pretrained_backbone_falls_back_to_random_weights_with_a_note(monkeypatch, capsys):
    from rrid.errors import WeightsError

    calls = []

    def build(name, pretrained):
        calls.append((name, pretrained))
        if pretrained and name == "resnet50":
            raise WeightsError("no network: cannot fetch the resnet50 weights")
        return f"{name}, pretrained={pretrained}"

    monkeypatch.setenv("RRID_MODE", "quick")
    assert book.pretrained_backbone(build) == ("resnet18, pretrained=False", "untrained ResNet-18")
    assert calls == [("resnet18", False)] and capsys.readouterr().out == "", "quick mode never asks for weights"
    monkeypatch.setenv("RRID_MODE", "full")
    calls.clear()
    assert book.pretrained_backbone(build) == ("resnet50, pretrained=False", "untrained ResNet-50")
    assert calls == [("resnet50", True), ("resnet50", False)]
    assert capsys.readouterr().out == "no network: cannot fetch the resnet50 weights\n"
    assert book.pretrained_backbone(build, "resnet34") == ("resnet34, pretrained=True", "ImageNet ResNet-34")


def test_pretrained_backbone_default_is_the_bare_resnet_with_last_stride_1(monkeypatch):
    import torch

    monkeypatch.setenv("RRID_MODE", "quick")
    backbone, words = book.pretrained_backbone()
    with torch.no_grad():
        x = backbone.eval()(torch.zeros(1, 3, 96, 32))
    assert words == "untrained ResNet-18" and tuple(x.shape) == (1, 512, 6, 2)    # H/16 x W/16: last stride 1


# ----------------------------------------------------------------------------- listings of the package

def test_a_listing_fits_the_page_with_its_words_in_order_and_short_lines_untouched():
    source = ("def f(first_argument, second_argument):\n"
              "    # " + "a comment that keeps going " * 5 + "\n"
              "    return call(first_argument, second_argument, " + "x, " * 20 + "y)\n"
              "    short = 1\n")
    listing = book.fit_listing(source)
    lines = listing.splitlines()
    assert max(map(len, lines)) <= book.LISTING_WIDTH
    assert _words(listing) == _words(source)
    assert lines[0] == "def f(first_argument, second_argument):" and lines[-1] == "    short = 1"
    comment = [line for line in lines if "comment" in line or "keeps" in line]
    assert len(comment) > 1 and all(line.startswith("    # ") for line in comment[1:]), comment
    code = lines[lines.index(next(line for line in lines if line.lstrip().startswith("return"))):-1]
    assert len(code) > 1 and all(line.startswith("        ") for line in code[1:]), code


def _words(text):
    """The words of a listing, the "#" that a comment's continuation adds left out."""
    return [w for w in text.split() if w != "#"]


def test_a_word_longer_than_the_page_is_left_whole():
    word = "x" * 100
    assert book.fit_listing(f"    {word} = 1\n") == f"    {word}\n        = 1\n"


def test_a_docstring_paragraph_is_filled_again_and_items_in_columns_continue_under_their_text():
    long = "word " * 30
    source = ('def f():\n'
              '    """Summary.\n\n'
              f'    {long.strip()}\n'
              '    short second line.\n\n'
              f'    name      {long.strip()}\n'
              '              more of the item\n'
              f'    * a bullet {long.strip()}\n'
              '    """\n'
              f'    x = 1                 # {long.strip()}\n')
    lines = book.fit_listing(source).splitlines()
    assert max(map(len, lines)) <= book.LISTING_WIDTH and _words("\n".join(lines)) == _words(source)
    paragraph = lines[3:lines.index("", 3)]
    assert len(paragraph) == 2 and paragraph[-1].endswith("word short second line."), paragraph
    item = [line for line in lines if line.startswith("    name")] + [
        line for line in lines if line.startswith(" " * 14) and not line.lstrip().startswith("#")]
    assert len(item) >= 3 and item[-1].endswith("more of the item"), item
    bullet = lines.index(next(line for line in lines if line.startswith("    * a bullet")))
    assert lines[bullet + 1].startswith("      word"), lines[bullet:bullet + 2]
    comment = [line for line in lines if line.lstrip().startswith("#")]
    assert comment and all(line.startswith(" " * 26 + "# ") for line in comment), comment


def test_printed_prose_fills_every_paragraph():
    text = ("first " * 20).strip() + "\nsecond line\n\n" + "* item " + ("text " * 20).strip() + "\n"
    lines = book.fit_listing(text, prose=True).splitlines()
    assert lines[1].endswith("second line") and lines[3].startswith("* item") and lines[4].startswith("  text")
    assert max(map(len, lines)) <= book.LISTING_WIDTH
