"""The built-page checks (tests/page_checks.py) on small hand-written pages: each finds its defect,
and passes the page that the book's configuration builds instead.

The HTML checks need no browser; the rendered ones open the pages in Chromium with the network
off, as tests/test_book_html.py does with the built book.
"""

from pathlib import Path

import pytest

from page_checks import (centred_text, external_resources, global_figure_numbers, open_offline, raw_tex,
                         scrolling_blocks, scrolling_code_cells, text_tables)

ROOT = Path(__file__).resolve().parents[1]
MATHJAX = ROOT / ".mathjax" / "mathjax" / "tex-mml-chtml.js"  # `make mathjax`
BOOK_CSS = ROOT / "book" / "_static" / "rrid.css"


def page(body: str, head: str = "") -> str:
    head = f"<meta charset='utf-8'>{head}"
    return f"<!DOCTYPE html><html><head>{head}</head><body><article>{body}</article></body></html>"


# ---- Markdown tables --------------------------------------------------------------------------

# myst-nb's CommonMark rendering of rrid.paper.show_table (smartquotes turned --- into an em dash)
COMMONMARK_TABLE = ("<div class='cell_output'><div class='output text_markdown'><p>| row | variant | mAP |\n"
                    "|\u2014|\u2014|\u2014|\n| 1 | GAP | 70.1 |</p></div></div>")
MYST_TABLE = ("<div class='cell_output'><div class='output text_markdown'><table><thead><tr><th>row</th>"
              "<th>variant</th></tr></thead><tbody><tr><td>1</td><td>GAP</td></tr></tbody></table></div></div>")


@pytest.mark.parametrize("body", [
    COMMONMARK_TABLE,
    "<p>| row | variant |\n| --- | :-- |</p>",              # a delimiter row alone
    "<p>| a | b | c |</p>",                                 # a row and no delimiter row
    "<p>| row | variant | |\u2014|\u2014| | 1 | GAP |</p>",  # all on one line
])
def test_text_tables_finds_a_markdown_table_left_as_text(body):
    assert len(text_tables(page(body))) == 1


def test_text_tables_passes_real_tables_and_pipes_in_code_and_math():
    body = (MYST_TABLE + "<p>sqrt(clamp(|a|² + |b|² − 2a·b, 1e-16)), |a| — |b|</p>"  # as in the appendix's table
            "<p>the norm <span class='math notranslate nohighlight'>\\(\\|p_i\\| = |a| + |b|\\)</span> "
            "and <code>a | b | c | d</code></p><pre>| a | b | c |\n|---|---|---|</pre>")
    assert text_tables(page(body)) == []


# ---- figure numbers ---------------------------------------------------------------------------

def chapter_page(number, captions, references):
    title = f"<span class='section-number'>{number}. </span>" if number else ""
    figures = "".join(f"<figure><figcaption><p><span class='caption-number'>{c} </span>"
                      "<span class='caption-text'>A figure.</span></p></figcaption></figure>" for c in captions)
    refs = "".join(f"<p>see <a class='reference internal'><span class='std std-numref'>{r}</span></a></p>"
                   for r in references)
    return page(f"<h1>{title}The relation module</h1>{figures}{refs}")


def test_global_figure_numbers_passes_chapter_numbers():
    html = chapter_page(4, ["Fig. 4.1", "Fig. 4.2"], ["Fig. 4.2", "Fig. 2.3", "Figure 3.1"])
    assert global_figure_numbers(html, numbered=True) == []


@pytest.mark.parametrize("captions, references", [
    (["Fig. 4.1", "Fig. 17"], []),         # numbered through the whole book
    (["Fig. 3.1"], []),                    # another chapter's number
    (["Fig. 4.1"], ["Fig. 12"]),           # a {numref} without the chapter
    ([], ["Figure 5"]),                    # {numref}`Figure {number} <...>`
])
def test_global_figure_numbers_finds_a_number_without_its_chapter(captions, references):
    assert len(global_figure_numbers(chapter_page(4, captions, references), numbered=True)) == 1


def test_global_figure_numbers_wants_a_number_on_a_chapter_and_none_elsewhere():
    html = chapter_page(None, ["Fig. 1"], ["Fig. 1"])
    assert "no number" in global_figure_numbers(html, numbered=True)[0]
    assert "outside the numbered chapters" in global_figure_numbers(html, numbered=False)[0]
    assert global_figure_numbers(page("<h1>Preface</h1><figure><img src='a.png'></figure>"), numbered=False) == []


# ---- files from other hosts -------------------------------------------------------------------

CDN_MATHJAX = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"


def test_external_resources_finds_scripts_and_styles_from_other_hosts():
    head = (f"<script defer src='{CDN_MATHJAX}'></script>"
            "<script src='//cdnjs.cloudflare.com/ajax/libs/require.js/2.3.4/require.min.js'></script>"
            "<link rel='stylesheet' href='http://example.org/a.css'>")
    assert len(external_resources(page("", head))) == 3


def test_external_resources_passes_local_files_and_links():
    head = ("<script defer src='../_static/mathjax/tex-mml-chtml.js?v=1'></script>"
            "<link rel='stylesheet' href='../_static/rrid.css'><link rel='canonical' href='https://example.org/'>")
    assert external_resources(page("<a href='https://colab.research.google.com/'>Colab</a>", head)) == []


# ---- math, in Chromium ------------------------------------------------------------------------

EQUATION = ("<p>The part feature <span class='math notranslate nohighlight'>\\(\\mathbf{p}_i\\)</span> and</p>"
            "<div class='math notranslate nohighlight'>\\[\\mathbf{q}_i = \\bar{\\mathbf{p}}_i\\]</div>"
            "<pre><code>\\mathbf{x}  # TeX in code is code</code></pre>")


def write(tmp_path, name, html):
    path = tmp_path / name
    path.write_text(html, encoding="utf-8")
    return path


def test_raw_tex_finds_math_that_no_mathjax_typeset(browser, tmp_path):
    cdn = page(EQUATION, f"<script src='{CDN_MATHJAX}'></script>")
    opened, refused = open_offline(browser, write(tmp_path, "cdn.html", cdn))
    problems = raw_tex(opened)
    opened.close()
    assert refused == [CDN_MATHJAX], "the CDN request is refused, and listed"
    assert sum("raw TeX" in p for p in problems) == 2 and sum("not typeset" in p for p in problems) == 2, problems


def test_raw_tex_passes_typeset_math_and_tex_in_code(browser, tmp_path):
    typeset = ("<p><span class='math'><mjx-container>p</mjx-container></span></p>"
               "<pre>\\(x\\)</pre><code>$$y$$</code><p style='display: none'>\\(hidden\\)</p>")
    opened, _ = open_offline(browser, write(tmp_path, "typeset.html", page(typeset)))
    assert raw_tex(opened) == []
    opened.close()


def test_mathjax_from_the_build_typesets_offline(browser, tmp_path):
    if not MATHJAX.is_file():
        pytest.skip("MathJax is not installed: run `make mathjax`")
    script = f"<script defer src='{MATHJAX.as_uri()}?v=1'></script>"  # as Sphinx writes it, with ?v=
    opened, refused = open_offline(browser, write(tmp_path, "local.html", page(EQUATION, script)))
    problems = raw_tex(opened)
    containers = opened.locator("mjx-container").count()
    opened.close()
    assert refused == [] and problems == [] and containers == 2, (refused, problems, containers)


# ---- sideways scrolling, in Chromium ----------------------------------------------------------

# The theme's rules that matter here: pre scrolls, with 1rem of padding; the narrowest desktop
# column, 620 px (a 1200-px window with both sidebars).
THEME = "<style>pre { overflow-x: auto; padding: 1rem; margin: 0; } article { width: 620px; }</style>"


def cells(code_line, output_line):
    return (f"<div class='cell'><div class='cell_input'><div class='highlight'><pre>{code_line}</pre></div></div>"
            f"<div class='cell_output'><div class='output stream highlight'><pre>{output_line}</pre></div></div></div>")


def code_line(n):
    return "x = f(" + "a" * (n - 7) + ")"


def test_book_css_fits_88_columns_and_wraps_outputs_in_the_narrowest_column(browser, tmp_path):
    css = f"<link rel='stylesheet' href='{BOOK_CSS.as_uri()}'>"
    fits = page(cells(code_line(88), "=" * 150), THEME + css)
    opened, _ = open_offline(browser, write(tmp_path, "fits.html", fits))
    assert scrolling_code_cells(opened) == [] and scrolling_blocks(opened) == []
    opened.close()


def test_scrolling_checks_find_a_long_code_line_an_unwrapped_output_and_a_wide_page(browser, tmp_path):
    css = f"<link rel='stylesheet' href='{BOOK_CSS.as_uri()}'>"
    long = page(cells(code_line(100), "ok"), THEME + css)
    opened, _ = open_offline(browser, write(tmp_path, "long.html", long))
    assert len(scrolling_code_cells(opened)) == 1 and scrolling_blocks(opened) == []
    opened.close()

    wide = cells(code_line(40), "=" * 150) + "<div style='width: 3000px'>a wide element</div>"
    opened, _ = open_offline(browser, write(tmp_path, "theme-only.html", page(wide, THEME)))  # without rrid.css
    problems = scrolling_blocks(opened)
    opened.close()
    assert len(problems) == 2, problems
    assert "a cell output scrolls" in problems[0] and "the page scrolls" in problems[1]


# ---- printed text in a centred figure -----------------------------------------------------------

def in_figure(body: str) -> str:
    """``body`` as a cell's output inside a figure that centres its content, as the book's do."""
    return f"<figure style='text-align: center'><div class='cell_output'>{body}</div></figure>"


def test_centred_text_finds_centred_printed_lines_and_passes_the_widgets(browser, tmp_path, monkeypatch):
    from rrid import viz

    monkeypatch.setenv("RRID_LIVEPLOT", "static")           # the static book's widgets
    manual = viz.interact(lambda n=1: print("row", n), manual=True, n=[1, 2]).html
    panels = viz.interact(lambda n=1: print("row", n), n=[1, 2]).html
    centred = in_figure("<div class='output stream'><pre>row 5, seed 5: mAP 81.10 %</pre></div>")
    opened, _ = open_offline(browser, write(tmp_path, "centred.html", page(centred + in_figure(manual + panels))))
    problems = centred_text(opened)
    opened.close()
    assert len(problems) == 1 and "row 5, seed 5" in problems[0], problems     # only the bare output
