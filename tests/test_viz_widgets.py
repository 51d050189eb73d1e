"""``rrid.viz.interact``: live widgets in a kernel, working HTML on the static pages.

The static HTML is read back with ``html.parser``: panels, images, radio buttons and the CSS
rule that shows each panel. Chromium clicks the same controls in the built book
(tests/test_book_html.py).
"""

import re
from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rrid import viz  # noqa: E402


class Parsed(HTMLParser):
    """Radio inputs, option labels, panels (with their images and text) and the style sheet."""

    def __init__(self, text):
        super().__init__()
        self.radios, self.labels, self.panels, self.notes, self.style = [], {}, [], [], ""
        self.inputs = 0
        self._label = self._panel = None
        self._tags = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "input":
            self.inputs += 1
            if a.get("type") == "radio":
                self.radios.append(a)
            return
        if tag == "img":
            if self._panel is not None:
                self._panel["images"].append(a["src"])
            else:
                self.notes.append(("img", a["src"]))
            return
        self._tags.append(tag)
        if tag == "label":
            self._label = a["for"]
            self.labels[self._label] = ""
        if "rrid-panel" in classes:
            self._panel = {"classes": classes, "values": a.get("data-values"), "images": [], "text": ""}
            self.panels.append(self._panel)
        if "rrid-interact-note" in classes:
            self.notes.append(("note", ""))

    def handle_endtag(self, tag):
        if self._tags and self._tags[-1] == tag:
            self._tags.pop()
        if tag == "label":
            self._label = None

    def handle_data(self, data):
        if self._tags and self._tags[-1] == "style":
            self.style += data
        elif self._label is not None:
            self.labels[self._label] += data
        elif self._panel is not None:
            self._panel["text"] += data
        elif self.notes and self.notes[-1][0] == "note":
            self.notes[-1] = ("note", self.notes[-1][1] + data)


def shown_panel(parsed, checked_ids):
    """The panel class the style sheet displays when exactly ``checked_ids`` are checked."""
    shown = []
    for selector in re.findall(r"([^{}]+)\{display:block\}", parsed.style):
        ids = re.findall(r"#([\w-]+):checked", selector)
        if set(ids) <= set(checked_ids):
            shown.append(re.search(r"\.(rrid-panel-[\d-]+)\s*$", selector.strip()).group(1))
    return shown


@pytest.fixture
def static(monkeypatch):
    monkeypatch.setenv("RRID_LIVEPLOT", "static")
    yield
    plt.close("all")


@pytest.fixture
def live(monkeypatch):
    monkeypatch.setenv("RRID_LIVEPLOT", "live")
    yield
    plt.close("all")


def draw(position=3, colour="red"):
    """Draws the natural way: print, pyplot, plt.show()."""
    print(f"position {position} in {colour}")
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.bar([position], [position], color=colour)
    ax.set_xlim(0, 10)
    plt.show()


def test_static_few_values_embed_one_panel_per_value_default_checked(static):
    before = plt.get_fignums()
    shown = viz.interact(draw, position=(1, 4))
    assert plt.get_fignums() == before, "every figure drawn for the page is closed again"
    page = Parsed(shown._repr_html_())
    assert len(page.panels) == 4 and len(page.radios) == 4 and page.inputs == 4
    images = [src for p in page.panels for src in p["images"]]
    assert len(images) == 4 and len(set(images)) == 4, "one different figure per value"
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert [p["text"].strip() for p in page.panels] == [f"position {i} in red" for i in range(1, 5)]
    assert [page.labels[r["id"]] for r in page.radios] == ["1", "2", "3", "4"]
    checked = [r["id"] for r in page.radios if "checked" in r]
    assert len(checked) == 1 and page.labels[checked[0]] == "3", "fn's default (3) starts checked"
    assert len({r["name"] for r in page.radios}) == 1, "one radio group per control"
    # the style sheet shows exactly the panel of the checked value, for every value
    for i, radio in enumerate(page.radios):
        (panel,) = shown_panel(page, [radio["id"]])
        match = next(p for p in page.panels if panel in p["classes"])
        assert match["values"] == f"position = {i + 1}" and match["text"].strip() == f"position {i + 1} in red"


def test_static_two_controls_embed_every_combination(static):
    def paint(position, colour="tab:blue"):  # no default for position: its first value
        draw(position, colour)

    shown = viz.interact(paint, position=[2, 5, 8], colour={"red": "tab:red", "blue": "tab:blue"},
                          labels={"position": "where"})
    page = Parsed(shown.html)
    assert len(page.panels) == 6 and len(page.radios) == 5
    assert len({src for p in page.panels for src in p["images"]}) == 6
    groups = {}
    for r in page.radios:
        groups.setdefault(r["name"], []).append(r["id"])
    assert [len(g) for g in groups.values()] == [3, 2]
    for where in groups[list(groups)[0]]:
        for colour in groups[list(groups)[1]]:
            (panel,) = shown_panel(page, [where, colour])
            match = next(p for p in page.panels if panel in p["classes"])
            assert match["values"] == f"where = {page.labels[where]}, colour = {page.labels[colour]}"
            assert f"position {page.labels[where]} in tab:{page.labels[colour]}" in match["text"]
    defaults = [page.labels[r["id"]] for r in page.radios if "checked" in r]
    assert defaults == ["2", "blue"]


def test_static_large_range_shows_the_default_and_a_note_and_no_control(static):
    def loss(lam=2.0):
        plt.plot([0, 1], [0, lam])
        plt.show()

    shown = viz.interact(loss, lam=(0.0, 10.0, 0.1), labels={"lam": "λ"})
    page = Parsed(shown.html)
    assert page.inputs == 0 and not page.radios and not page.panels and "<label" not in shown.html
    (note, text), (kind, _src) = page.notes
    assert note == "note" and kind == "img"
    assert "Interactive in Jupyter or Colab" in text
    assert "λ from 0 to 10 in steps of 0.1" in text and "default (λ = 2)" in text


def test_static_manual_runs_only_the_default(static):
    calls = []

    def train(epochs=2):
        calls.append(epochs)
        print("trained", epochs)

    page = Parsed(viz.interact(train, manual=True, epochs=[1, 2, 3]).html)
    assert calls == [2] and page.inputs == 0
    assert "epochs: 1, 2 or 3" in page.notes[0][1]


def test_static_captures_returned_figures_and_objects(static):
    def made_without_pyplot(n=1):
        fig = Figure(figsize=(2, 1))
        fig.add_subplot().plot(range(n + 2))
        return fig

    def returns_text(n=1):
        return f"value {n}"

    page = Parsed(viz.interact(made_without_pyplot, n=[1, 2]).html)
    assert [len(p["images"]) for p in page.panels] == [1, 1]
    assert page.panels[0]["images"] != page.panels[1]["images"]
    page = Parsed(viz.interact(returns_text, n=[1, 2]).html)
    assert ["value 1" in page.panels[0]["text"], "value 2" in page.panels[1]["text"]] == [True, True]


def test_live_returns_an_interactive_wired_to_fn(live):
    import ipywidgets

    calls = []

    def fn(position=3, colour="red", flag=False, lam=2.0):
        calls.append((position, colour, flag, lam))

    w = viz.interact(fn, position=(1, 10), colour=["red", "blue"], flag=True, lam=(0.0, 10.0, 0.1))
    assert isinstance(w, ipywidgets.interactive)
    slider, buttons, box, fslider = w.kwargs_widgets
    assert isinstance(slider, ipywidgets.IntSlider) and (slider.min, slider.max, slider.value) == (1, 10, 3)
    assert isinstance(buttons, ipywidgets.ToggleButtons) and buttons.value == "red"
    assert isinstance(box, ipywidgets.Checkbox) and box.value is False
    assert isinstance(fslider, ipywidgets.FloatSlider) and fslider.value == 2.0 and fslider.step == 0.1
    assert calls == [(3, "red", False, 2.0)], "a live widget draws its default at once"
    slider.value = 7
    buttons.value = "blue"
    assert calls[-2:] == [(7, "red", False, 2.0), (7, "blue", False, 2.0)]
    w.update()
    assert calls[-1] == (7, "blue", False, 2.0)


def test_live_manual_waits_for_the_run_button(live):
    import ipywidgets

    calls = []

    def train(epochs=1):
        calls.append(epochs)

    given = ipywidgets.IntSlider(value=2, min=1, max=5, description="epochs")
    w = viz.interact(train, manual=True, epochs=given)
    assert w.kwargs_widgets == [given] and w.manual_button.description == "Run"
    assert calls == []
    given.value = 4
    assert calls == []
    w.update()
    assert calls == [4]


def test_ipywidgets_controls_are_read_on_static_pages(static):
    import ipywidgets

    page = Parsed(viz.interact(draw, position=ipywidgets.ToggleButtons(options=[("one", 1), ("six", 6)], value=6,
                                                                       description="pos")).html)
    assert [page.labels[r["id"]] for r in page.radios] == ["one", "six"]
    assert [page.labels[r["id"]] for r in page.radios if "checked" in r] == ["six"]
    assert [p["values"] for p in page.panels] == ["pos = one", "pos = six"]


def test_bad_controls_name_the_argument(static):
    with pytest.raises(TypeError, match="draw\\(\\) has no argument 'size'"):
        viz.interact(draw, size=(1, 3))
    with pytest.raises(ValueError, match="default position=3 is not one of \\[1, 2\\]"):
        viz.interact(draw, position=[1, 2])
    with pytest.raises(ValueError, match="position=\\(5, 1\\)"):
        viz.interact(draw, position=(5, 1))
    with pytest.raises(TypeError, match="expected a list or dict"):
        viz.interact(draw, position="3")


def test_one_switch_decides_widgets_and_the_live_plot(monkeypatch):
    import rrid

    monkeypatch.setenv("RRID_LIVEPLOT", "static")
    assert viz.is_static() and rrid.LivePlot().live is False
    monkeypatch.setenv("RRID_LIVEPLOT", "live")
    assert not viz.is_static() and rrid.LivePlot().live is True
    monkeypatch.setenv("RRID_LIVEPLOT", "maybe")
    with pytest.raises(ValueError, match="RRID_LIVEPLOT='maybe'"):
        viz.is_static()
    monkeypatch.delenv("RRID_LIVEPLOT")
    assert viz.is_static(), "under pytest without the variable: static"
