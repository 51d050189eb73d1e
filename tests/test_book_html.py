"""The built book as a reader sees it: every chapter opened in headless Chromium.

Runs after ``make book`` (CI always builds first). For each chapter in ``_toc.yml`` it saves a
screenshot to ``_build/screenshots/<chapter>.png`` and checks the rendered DOM: the chapter's
figures are there (``img`` inside cell outputs) and no cell shows an error (a traceback, an
error on stderr, or myst-nb's "execution failed" warning).

The book reads as a book: tables are tables (not Markdown as text), figures are numbered by
chapter ("Fig. 4.2"), equations are typeset by the MathJax copy in the build with the network off,
no page loads anything from another host, and no code cell or output scrolls sideways in a
1280-px window (tests/page_checks.py holds these checks; tests/test_page_checks.py tests them).

No control on a page does nothing when used: no page embeds an ipywidgets view (widgets go
through ``rrid.viz.interact``), no cell output holds a form control of its own, and every option
of every ``interact`` control is clicked (Playwright driving the same Chromium) and must change
the figure shown.
"""

import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from page_checks import (centred_text, chromium_flags, external_resources, global_figure_numbers,
                         open_offline, raw_tex, scrolling_blocks, scrolling_code_cells, text_tables)
from rrid.book import chapters
from rrid.paths import market_mini

pytestmark = pytest.mark.book_html

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"

# The least number of figures each chapter must show in quick mode (the preface: 0).
MIN_FIGURES = {
    "book/intro": 2,
    "book/01_reid_task": 4,
    "book/02_backbone": 2,
    "book/03_stripe_pooling": 3,
    "book/04_relation_module": 6,
    "book/05_gcp": 3,
    "book/06_losses_sampling": 5,
    "book/07_training": 2,
    "book/08_evaluation": 6,
    "book/09_ablations": 3,
    "book/10_beyond": 1,
    "book/11_paper_vs_code": 2,
}
# Figures drawn only when market1501-mini is there (a fresh clone without ../shared lacks it).
MINI_ONLY_FIGURES = {"book/08_evaluation": 1}


def expected_figures(chapter: str) -> int:
    missing = MINI_ONLY_FIGURES.get(chapter, 0) if market_mini() is None else 0
    return MIN_FIGURES.get(chapter, 0) - missing


@pytest.fixture(scope="session")
def html_dir():
    if not (HTML / "index.html").is_file():
        pytest.fail(f"{HTML} is missing or incomplete: run `make book` first")
    return HTML


def run_chromium(chromium, *args):
    with tempfile.TemporaryDirectory(prefix="rrid-chromium-") as profile:
        done = subprocess.run([chromium, *chromium_flags(profile), *args], capture_output=True,
                              text=True, timeout=180)
    return done


class OutputScan(HTMLParser):
    """Counts images inside cell outputs and collects the text of outputs and admonitions."""

    def __init__(self):
        super().__init__()
        self.stack = []  # (tag, classes) of open elements
        self.images = 0
        self.output_text = []
        self.stderr_text = []
        self.warnings = []
        self.error_blocks = 0  # myst-nb renders a cell error as an output with class "traceback"

    def inside(self, cls):
        return any(cls in classes for _, classes in self.stack)

    def handle_starttag(self, tag, attrs):
        classes = set((dict(attrs).get("class") or "").split())
        if tag == "img":
            if self.inside("cell_output"):
                self.images += 1
            return
        if tag in {"br", "hr", "meta", "link", "input", "source", "wbr", "col", "area", "base", "embed", "param", "track"}:
            return
        if "traceback" in classes and self.inside("cell_output"):
            self.error_blocks += 1
        self.stack.append((tag, classes))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        if any(tag in ("style", "script") for tag, _ in self.stack):
            return  # highlighting CSS names token classes such as "Generic.Traceback"
        if self.inside("cell_output"):
            self.output_text.append(data)
            if self.inside("stderr"):
                self.stderr_text.append(data)
        if self.inside("admonition") or self.inside("system-message"):
            self.warnings.append(data)


@pytest.mark.parametrize("chapter", chapters())
def test_chapter_page_renders_with_figures_and_no_errors(chapter, chromium, html_dir):
    page = html_dir / f"{chapter}.html"
    assert page.is_file(), f"{page} was not built (is {chapter} in _toc.yml and did `make book` succeed?)"

    shot = SHOTS / f"{chapter}.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    run_chromium(chromium, f"--screenshot={shot}", "--window-size=1280,4000", page.as_uri())
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"no screenshot of {chapter}"

    done = run_chromium(chromium, "--dump-dom", page.as_uri())
    assert "<html" in done.stdout, f"chromium printed no DOM for {page}: {done.stderr[-2000:]}"
    scan = OutputScan()
    scan.feed(done.stdout)

    assert scan.error_blocks == 0, f"{chapter}: {scan.error_blocks} cell(s) show an error"
    outputs = "".join(scan.output_text)
    if "Traceback" in outputs:
        at = outputs.index("Traceback")
        pytest.fail(f"{chapter}: a cell output shows a traceback: {outputs[at:at + 300]!r}")
    stderr = "".join(scan.stderr_text)
    assert "Error" not in stderr, f"{chapter}: an error on stderr: {stderr[:500]}"
    warnings = " ".join(scan.warnings).lower()
    assert "execution failed" not in warnings and "executing notebook failed" not in warnings, f"{chapter}: execution failed"
    assert scan.images >= expected_figures(chapter), (
        f"{chapter}: {scan.images} figures in cell outputs, expected at least {expected_figures(chapter)}")


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

# The panels of one rrid.viz.interact output that the page shows now: values and image sources.
SHOWN = """widget => [...widget.querySelectorAll('.rrid-panel')]
    .filter(panel => getComputedStyle(panel).display !== 'none')
    .map(panel => ({values: panel.dataset.values,
                    images: [...panel.querySelectorAll('img')]
                        .filter(img => img.getBoundingClientRect().height > 0).map(img => img.src)}))"""

# Form controls inside cell outputs that neither rrid.viz.interact nor the theme made (the theme's
# copy buttons, sphinx-copybutton, work without a kernel).
STRAY_CONTROLS = """() => [...document.querySelectorAll(
        '.cell_output input, .cell_output select, .cell_output button:not(.copybtn), .cell_output textarea')]
    .filter(element => !element.closest('.rrid-interact')).map(element => element.outerHTML.slice(0, 160))"""


@pytest.mark.parametrize("chapter", chapters())
def test_every_control_on_the_page_changes_what_it_shows(chapter, browser, html_dir):
    page_file = html_dir / f"{chapter}.html"
    assert page_file.is_file(), f"{page_file} was not built"
    assert WIDGET_VIEW not in page_file.read_text(encoding="utf-8"), (
        f"{chapter}: the page embeds an ipywidgets view, a control that does nothing without a kernel; "
        "make the widget with rrid.viz.interact")

    page = browser.new_page()
    # the page as a reader without a network sees it: only files from the build
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
    page.goto(page_file.as_uri())
    stray = page.evaluate(STRAY_CONTROLS)
    assert not stray, f"{chapter}: controls in cell outputs that rrid.viz.interact did not make: {stray}"

    for widget in page.locator(".rrid-interact").all():
        groups = widget.locator(".rrid-control").all()
        if not groups:  # too many values to embed: the default output and a note, and no control
            assert widget.locator("input, select, button, label").count() == 0
            assert "Interactive in Jupyter or Colab" in widget.locator(".rrid-interact-note").inner_text()
            assert widget.locator("img").count() + widget.locator("pre").count() >= 1, f"{chapter}: no output"
            continue
        name = widget.get_attribute("id")
        for group in groups:
            options = group.locator("label.rrid-option").all()
            assert len(options) >= 2, f"{chapter} {name}: a control with one value cannot change anything"
            for k, option in enumerate(options):
                if page.evaluate("id => document.getElementById(id).checked", option.get_attribute("for")):
                    options[(k + 1) % len(options)].click()  # start from another value
                before = widget.evaluate(SHOWN)
                option.click()
                after = widget.evaluate(SHOWN)
                assert len(after) == 1 and after[0]["images"], (
                    f"{chapter} {name}: after clicking {option.inner_text()!r}, {len(after)} panels show "
                    "(expected one, with a visible figure)")
                assert after[0]["images"] != before[0]["images"], (
                    f"{chapter} {name}: clicking {option.inner_text()!r} did not change the figure "
                    f"({before[0]['values']} -> {after[0]['values']})")
    page.close()


# Pages outside the numbered chapters: the preface (its figures carry no number, so that none reads
# "Fig. 1" beside chapter 1's "Fig. 1.1") and the reference pages. Every other page of _toc.yml is a
# chapter whose figures carry its number.
UNNUMBERED = {"book/intro", "book/notation", "book/glossary", "book/references"}


@pytest.mark.parametrize("chapter", chapters())
def test_page_has_real_tables_chapter_figure_numbers_and_no_remote_files(chapter, html_dir):
    html = (html_dir / f"{chapter}.html").read_text(encoding="utf-8")
    problems = text_tables(html)
    problems += global_figure_numbers(html, numbered=chapter not in UNNUMBERED)
    problems += external_resources(html)
    assert not problems, f"{chapter}:\n" + "\n".join(problems)


@pytest.mark.parametrize("chapter", chapters())
def test_page_typesets_its_math_offline_and_no_output_scrolls_or_is_centred(chapter, browser, html_dir):
    page, refused = open_offline(browser, html_dir / f"{chapter}.html")
    problems = [f"a request to another host: {url}" for url in refused]
    problems += raw_tex(page) + scrolling_blocks(page) + centred_text(page)
    page.close()
    assert not problems, f"{chapter}:\n" + "\n".join(problems)


@pytest.mark.parametrize("chapter", chapters())
def test_no_code_cell_scrolls_sideways(chapter, browser, html_dir):
    page, _ = open_offline(browser, html_dir / f"{chapter}.html")
    problems = scrolling_code_cells(page)
    page.close()
    assert not problems, f"{chapter}:\n" + "\n".join(problems)
