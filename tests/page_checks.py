"""Checks of one built page of the book, as a reader sees it.

Each check returns a list of problems (empty: the page is fine), so that it runs on any HTML: the
built book (tests/test_book_html.py) and small hand-written pages with one defect each
(tests/test_page_checks.py), which keep the checks themselves honest.

* From the page's HTML (no browser): Markdown tables left as text (:func:`text_tables`), figure
  numbers without their chapter's prefix (:func:`global_figure_numbers`), files loaded from another
  host (:func:`external_resources`).
* From the page open in Chromium with the network off (:func:`open_offline`): TeX that MathJax did
  not typeset (:func:`raw_tex`), code cells that scroll sideways (:func:`scrolling_code_cells`),
  and outputs, other code blocks or the page itself that do (:func:`scrolling_blocks`).
"""

import os
import re
import shutil

from bs4 import BeautifulSoup

INSTALL_CHROMIUM = ("sudo apt-get install chromium (Ubuntu: chromium-browser; macOS: brew install --cask chromium), "
                    "or `make chromium` as root")

# The window the rendered checks use: a common laptop width, where both sidebars show and a code
# cell is 684 px wide (from 620 px at 1200 to 786 px at 1440 and above; book/_static/rrid.css).
VIEWPORT = {"width": 1280, "height": 900}


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_flags(profile):
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", "--virtual-time-budget=4000", f"--user-data-dir={profile}"]


def playwright_flags(profile):
    """The flags above less those Playwright sets itself (headless, profile) or that need real time."""
    own = ("--headless", "--user-data-dir", "--virtual-time-budget")
    return [flag for flag in chromium_flags(profile) if not flag.startswith(own)]


# ---- checks of the HTML -------------------------------------------------------------------------

# Two cells of a pipe table's delimiter row, |---|---| or | :-- | --- |, also after Sphinx turned
# --- into an em dash (|—|—|), and a line that is a row: it starts and ends with | and has two cells.
DELIMITER_CELLS = re.compile(r"\|(?:\s*:?[-\u2013\u2014]+:?\s*\|){2,}")
ROW = re.compile(r"^\s*\|(?:[^|\n]*\|){2,}\s*$")
# Where a | is not table syntax: code, math (|x|, \|p\|), real tables and what the browser does not show.
NOT_PROSE = ["pre", "code", "script", "style", "table", "mjx-container", ".math", ".highlight"]


def _article(html: str):
    soup = BeautifulSoup(html, "html.parser")
    return soup.select_one("article") or soup


def text_tables(html: str) -> list[str]:
    """Paragraphs that hold a Markdown table as text: a delimiter row or a line that is a row."""
    article = _article(html)
    for element in article.select(", ".join(NOT_PROSE)):
        element.decompose()
    problems = []
    for paragraph in article.find_all("p"):
        text = paragraph.get_text()
        if DELIMITER_CELLS.search(text) or any(ROW.match(line) for line in text.splitlines()):
            problems.append(f"a Markdown table left as text: {' '.join(text.split())[:160]!r}")
    return problems


NUMBER = r"(\d+(?:\.\d+)*)"
FIGURE_NUMBER = re.compile(r"\b(?:Fig\.|Figs\.|Figure)\s*" + NUMBER)


def chapter_number(html: str) -> str | None:
    """The number in front of the page's title ("4" for "4. The relation module"), or None."""
    number = _article(html).select_one("h1 .section-number")
    return number.get_text().strip().rstrip(".") if number else None


def global_figure_numbers(html: str, numbered: bool) -> list[str]:
    """On a page of a numbered chapter: the chapter's number is missing, or a figure number lacks a
    chapter prefix (a caption on the page must read "<chapter>.<k>", a {numref} "<c>.<k>"). On a
    page outside the chapters (the preface, the reference pages): any numbered figure, since its
    "Fig. 1" reads like a figure of chapter 1."""
    if not numbered:
        return [f"a figure outside the numbered chapters carries a number: {c.get_text().strip()!r}"
                for c in _article(html).select(".caption-number")]
    chapter = chapter_number(html)
    if chapter is None:
        return ["the chapter's title has no number: is its part `numbered` in _toc.yml?"]
    article = _article(html)
    problems = []
    for caption in article.select(".caption-number"):
        text = caption.get_text().strip()
        found = re.search(NUMBER, text)
        if found is None or not found.group(1).startswith(f"{chapter}."):
            problems.append(f"the caption number {text!r} is not numbered in chapter {chapter} ({chapter}.k)")
    for reference in article.select(".std-numref"):
        text = reference.get_text().strip()
        for number in FIGURE_NUMBER.findall(text):
            if "." not in number:
                problems.append(f"the reference {text!r} has no chapter prefix")
    return problems


def external_resources(html: str) -> list[str]:
    """Scripts, style sheets, images and frames the page loads from another host."""
    soup = BeautifulSoup(html, "html.parser")
    remote = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
    loaded = [(tag, tag.get("src")) for tag in soup.find_all(["script", "img", "iframe"])]
    loaded += [(tag, tag.get("href")) for tag in soup.find_all("link")
               if {"stylesheet", "preload", "modulepreload"} & set(tag.get("rel") or [])]
    return [f"<{tag.name}> loads {url}" for tag, url in loaded
            if url and remote.match(url) and not url.lower().startswith("file:")]


# ---- checks of the page in Chromium -------------------------------------------------------------

def open_offline(browser, path, viewport=None):
    """The page as a reader without a network sees it, typeset: only file: URLs load; the others
    are refused and listed in the second value. Waits for MathJax where the page loads it."""
    page = browser.new_page(viewport=viewport or VIEWPORT)
    refused = []

    def only_files(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", only_files)
    page.goto(path.resolve().as_uri())
    page.evaluate("() => window.MathJax?.startup?.promise")
    return page, refused


# Visible text outside code and typeset math that still reads as TeX, and math MathJax left alone.
RAW_TEX = r"""() => {
    const tex = /\\[()\[\]]|\$\$|\\[A-Za-z]{2,}/;
    const skip = 'pre, code, script, style, textarea, mjx-container, .highlight';
    const found = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const parent = node.parentElement;
        if (!tex.test(node.data) || parent.closest(skip) || !parent.checkVisibility()) continue;
        found.push('raw TeX on the page: ' + JSON.stringify(node.data.trim().slice(0, 120)));
    }
    for (const math of document.querySelectorAll('.math')) {
        if (!math.querySelector('mjx-container'))
            found.push('math not typeset by MathJax: ' + JSON.stringify(math.textContent.trim().slice(0, 120)));
    }
    for (const error of document.querySelectorAll('mjx-merror'))
        found.push('MathJax could not read: ' + JSON.stringify(error.getAttribute('data-mjx-error')));
    return found;
}"""


def raw_tex(page) -> list[str]:
    """TeX left as text (``\\(``, ``\\[``, ``$$``, ``\\mathbf``...) outside code, a math element with no
    ``mjx-container`` in it, and MathJax's parse errors."""
    return page.evaluate(RAW_TEX)


# Blocks of code (cells' source, or else) or output that scroll sideways, with their longest line.
SCROLLING = """selector => {
    const found = [];
    for (const pre of document.querySelectorAll(selector)) {
        if (pre.scrollWidth <= pre.clientWidth + 1 || !pre.checkVisibility()) continue;
        const longest = pre.innerText.split('\\n').reduce((a, b) => (b.length > a.length ? b : a), '');
        const what = pre.closest('div.cell_input') ? 'a code cell' :
                     pre.closest('div.cell_output') ? 'a cell output' : 'a code block';
        found.push(`${what} scrolls sideways (${pre.scrollWidth} px in ${pre.clientWidth} px), its ` +
                   `longest line has ${longest.length} characters: ${JSON.stringify(longest.slice(0, 100))}`);
    }
    return found;
}"""
PAGE_WIDER_THAN_WINDOW = """() => {
    const root = document.documentElement;
    return root.scrollWidth > root.clientWidth + 1 ?
        [`the page scrolls sideways (${root.scrollWidth} px in a ${root.clientWidth}-px window)`] : [];
}"""
CODE_CELLS = "div.cell_input pre"
OTHER_BLOCKS = "div.cell_output pre, div.highlight pre:not(div.cell_input pre)"


def scrolling_code_cells(page) -> list[str]:
    """Code cells whose source is wider than the cell (``scrollWidth > clientWidth``)."""
    return page.evaluate(SCROLLING, CODE_CELLS)


def scrolling_blocks(page) -> list[str]:
    """Cell outputs and code blocks outside cells wider than their column, and a page wider than
    the window."""
    return page.evaluate(SCROLLING, OTHER_BLOCKS) + page.evaluate(PAGE_WIDER_THAN_WINDOW)


# Printed text centred by the figure around it (a figure's caption and images may be centred; a
# cell's printed lines and the widgets' notes read from the left).
CENTRED_TEXT = """() => {
    const found = [];
    for (const el of document.querySelectorAll('div.cell_output pre, .rrid-interact p')) {
        if (getComputedStyle(el).textAlign !== 'center' || !el.checkVisibility()) continue;
        found.push('centred printed text: ' + JSON.stringify(el.innerText.trim().slice(0, 80)));
    }
    return found;
}"""


def centred_text(page) -> list[str]:
    """A cell's printed output or a widget's note that the page centres (a figure around it)."""
    return page.evaluate(CENTRED_TEXT)


LINE_LIMIT = 88  # columns of a notebook's code (the project's standard)


def long_code_lines(notebook: dict) -> list[str]:
    """The lines of the notebook's code cells longer than LINE_LIMIT."""
    lines = []
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            lines += [line for line in source.splitlines() if len(line) > LINE_LIMIT]
    return lines
