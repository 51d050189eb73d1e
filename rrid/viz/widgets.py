"""Widgets that also work on the static pages: :func:`interact` and the one switch :func:`is_static`.

In a Jupyter or Colab kernel :func:`interact` is an ``ipywidgets.interactive``; on a page
without a kernel (the built book, nbval) it returns a :class:`StaticInteract`: every
combination of the controls drawn ahead of time, switched by radio buttons in plain HTML and
CSS. :func:`is_static` also decides whether ``rrid.viz.LivePlot`` redraws as training goes.
"""

from __future__ import annotations

import base64
import html
import inspect
import io
import itertools
import math
import os
import re
import sys

import ipywidgets
import matplotlib.pyplot as plt
from IPython.display import display
from IPython.utils.capture import capture_output
from matplotlib.figure import Figure

__all__ = ["is_static", "interact", "StaticInteract"]


def is_static() -> bool:
    """True where no kernel answers a control: the built book, nbval, pytest, a terminal.

    The one switch for :func:`interact` and :class:`rrid.LivePlot`. ``RRID_LIVEPLOT=static``
    (the Makefile exports it for the book build and nbval) or ``RRID_LIVEPLOT=live`` decides;
    without it, only a Jupyter or Colab kernel is live, and never one started by nbval or pytest.
    """
    value = os.environ.get("RRID_LIVEPLOT", "").strip().lower()
    if value:
        if value not in ("static", "live"):
            raise ValueError(f"RRID_LIVEPLOT={value!r}: expected 'static' or 'live'")
        return value == "static"
    if "NBVAL" in os.environ or "PYTEST_CURRENT_TEST" in os.environ:
        return True
    if "google.colab" in sys.modules:
        return False
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return type(shell).__name__ != "ZMQInteractiveShell"


def interact(fn, *, manual: bool = False, max_panels: int = 12, labels: dict | None = None, **controls):
    """Call ``fn`` under controls: live widgets in Jupyter and Colab, working HTML on static pages.

    Each keyword names an argument of ``fn`` and gives its control::

        [a, b, c]  or  {"label": value, ...}   one of these values
        (min, max)  or  (min, max, step)        a range (floats when any is a float; step 1, or 1/100 of it)
        True / False                            on or off
        an ipywidgets control                   used as it is; its value is the default

    A control starts at ``fn``'s default for that argument, else at the first value or the
    minimum. ``labels`` names the controls on screen (``labels={"lam": "λ"}``). ``fn`` draws the
    natural way (pyplot, then ``plt.show()``, or it returns a figure or anything displayable),
    and may print.

    * Live (a Jupyter or Colab kernel): an ``ipywidgets.interactive`` that calls ``fn`` on every
      change, or only when its Run button is pressed (``manual=True``, for training).
    * Static (:func:`is_static`: the built book, nbval): with at most ``max_panels`` combinations,
      ``fn`` runs now for each of them and the page holds every output, switched by radio
      buttons in plain HTML and CSS (no kernel, no JavaScript). Otherwise, and with
      ``manual=True``, ``fn`` runs once at the defaults and its output comes with a note saying
      what the controls do in Jupyter or Colab; the page then shows no control at all.
    """
    params = inspect.signature(fn).parameters
    for name in controls:
        if name not in params:
            raise TypeError(f"interact: {getattr(fn, '__name__', fn)}() has no argument {name!r}")
    specs = [_Control.build(name, spec, params[name].default, (labels or {}).get(name, name))
             for name, spec in controls.items()]
    if is_static():
        combinations = math.prod(len(c.values) if c.values else max_panels + 1 for c in specs)
        return StaticInteract(fn, specs, panels=not manual and combinations <= max_panels)
    def call(**kwargs):
        _show_result(fn(**kwargs))

    options = {"manual": manual, "manual_name": "Run"}
    return ipywidgets.interactive(call, options, **{c.name: c.to_widget() for c in specs})


class _Control:
    """One control of :func:`interact`: argument, label, default and, when few, all its values."""

    def __init__(self, name, label, default, kind, values=None, names=None, span=None, widget=None):
        self.name, self.label, self.default, self.kind = name, label, default, kind
        self.values, self.names = values, names      # values: None when too many to list
        self.span, self.widget = span, widget        # span: (min, max, step) of a range

    @classmethod
    def build(cls, name, spec, default, label):
        given = default is not inspect.Parameter.empty
        if isinstance(spec, ipywidgets.Widget):
            return cls._from_widget(name, spec)
        if isinstance(spec, bool):
            return cls(name, label, default if given else spec, "bool", (False, True), ("off", "on"))
        if isinstance(spec, (list, dict)):
            pairs = list(spec.items()) if isinstance(spec, dict) else [(_fmt(v), v) for v in spec]
            if not pairs:
                raise ValueError(f"interact: {name} has no values to choose from")
            names, values = zip(*pairs)
            default = default if given else values[0]
            if default not in values:
                raise ValueError(f"interact: the default {name}={default!r} is not one of {list(values)}")
            return cls(name, label, default, "choice", values, names)
        if isinstance(spec, tuple) and len(spec) in (2, 3) and all(isinstance(v, (int, float)) for v in spec):
            floats = any(isinstance(v, float) for v in spec)
            low, high, step = spec if len(spec) == 3 else (*spec, (spec[1] - spec[0]) / 100 if floats else 1)
            if not (low < high and step > 0):
                raise ValueError(f"interact: {name}={spec!r} is not (min, max[, step]) with min < max and step > 0")
            default = default if given else low
            if not low <= default <= high:
                raise ValueError(f"interact: the default {name}={default!r} is outside {spec!r}")
            return cls._range(name, label, default, (low, high, step))
        raise TypeError(f"interact: {name}={spec!r}: expected a list or dict of values, "
                        "a (min, max[, step]) tuple, a bool or an ipywidgets control")

    @classmethod
    def _range(cls, name, label, default, span, widget=None):
        low, high, step = span
        count = int((high - low) / step + 1e-9) + 1
        values = names = None
        if count <= 1000:
            values = tuple(round(low + i * step, 12) if isinstance(step, float) or isinstance(low, float)
                           else low + i * step for i in range(count))
            names = tuple(map(_fmt, values))
            default = min(values, key=lambda v: abs(v - default))   # the grid point the slider shows
        return cls(name, label, default, "range", values, names, span, widget)

    @classmethod
    def _from_widget(cls, name, w):
        label = w.description or name
        if hasattr(w, "_options_values") and not isinstance(w.value, tuple):  # Dropdown, ToggleButtons, ...
            return cls(name, label, w.value, "choice", tuple(w._options_values), tuple(w._options_labels), widget=w)
        if isinstance(w.value, bool):                                          # Checkbox, ToggleButton
            return cls(name, label, w.value, "bool", (False, True), ("off", "on"), widget=w)
        if all(hasattr(w, a) for a in ("min", "max", "step")) and isinstance(w.value, (int, float)):
            return cls._range(name, label, w.value, (w.min, w.max, w.step), widget=w)
        return cls(name, label, w.value, "other", widget=w)                  # Text, SelectMultiple, ...

    def words(self) -> str:
        """The control in words, for the note on a static page."""
        if self.kind == "range":
            low, high, step = map(_fmt, self.span)
            return f"{self.label} from {low} to {high} in steps of {step}"
        if self.kind == "choice":
            names = list(self.names)
            return f"{self.label}: " + (", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0])
        if self.kind == "bool":
            return f"{self.label} on or off"
        return f"{self.label} ({type(self.widget).__name__})"

    def to_widget(self):
        if self.widget is not None:
            return self.widget
        if self.kind == "bool":
            return ipywidgets.Checkbox(value=self.default, description=self.label)
        if self.kind == "range":
            low, high, step = self.span
            floats = any(isinstance(v, float) for v in (low, high, step))
            slider = ipywidgets.FloatSlider if floats else ipywidgets.IntSlider
            return slider(value=self.default, min=low, max=high, step=step, description=self.label)
        options = list(zip(self.names, self.values))
        short = len(options) <= 5 and sum(map(len, self.names)) <= 40
        return (ipywidgets.ToggleButtons if short else ipywidgets.Dropdown)(
            options=options, value=self.default, description=self.label)


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _show_result(result) -> None:
    """Live mode: show what ``fn`` returned. Pyplot figures appear through the inline backend
    (``plt.show()``, or ipywidgets shows the open ones after the call); only a figure made
    without pyplot, or another object, is displayed here."""
    if result is not None and not (isinstance(result, Figure) and result.canvas.manager is not None):
        display(result)


class StaticInteract:
    """What :func:`interact` returns on a static page: ``fn``'s outputs as one HTML block.

    ``panels=True``: one panel per combination of the controls' values, radio buttons and
    CSS rules that show the panel of the checked combination (the default is checked).
    ``panels=False``: the output at the defaults, below a note on what the controls do live.
    ``html`` holds the block; Jupyter and Jupyter Book display it through ``_repr_html_``.
    """

    _count = itertools.count(1)

    def __init__(self, fn, controls, panels: bool):
        self.controls, self.panels = controls, panels
        name = re.sub(r"[^A-Za-z0-9_-]", "", getattr(fn, "__name__", "fn")) or "fn"
        self.id = f"rrid-{name}-{next(self._count)}"
        if panels:
            self.combinations = list(itertools.product(*(range(len(c.values)) for c in controls)))
            outputs = [_capture(fn, {c.name: c.values[i] for c, i in zip(controls, combo)})
                       for combo in self.combinations]
        else:
            self.combinations = []
            outputs = [_capture(fn, {c.name: c.default for c in controls})]
        self.html = self._page(outputs)

    def _page(self, outputs) -> str:
        uid, controls = self.id, self.controls
        if not self.panels:
            where = "; ".join(c.words() for c in controls)
            default = ", ".join(f"{c.label} = {_fmt(c.default)}" for c in controls)
            return (f'<div class="rrid-interact rrid-static" id="{uid}" style="{_ROOT_STYLE}">'
                    f'<p class="rrid-interact-note" style="{_NOTE_STYLE}"><strong>Interactive in Jupyter or '
                    f'Colab:</strong> {html.escape(where)}. The static page shows the default '
                    f'({html.escape(default)}).</p>{outputs[0]}</div>')
        rules = [f"#{uid} .rrid-panel{{display:none}}"]
        radios, groups = [], []
        for k, c in enumerate(controls):
            chosen = c.values.index(c.default)
            options = []
            for v, name in enumerate(c.names):
                rid = f"{uid}-{k}-{v}"
                radios.append(f'<input type="radio" class="rrid-radio" name="{uid}-{k}" id="{rid}"'
                              f'{" checked" if v == chosen else ""}>')
                options.append(f'<label class="rrid-option" for="{rid}">{html.escape(name)}</label>')
                rules.append(f'#{rid}:checked ~ .rrid-controls label[for="{rid}"]{{{_CHECKED_STYLE}}}')
                rules.append(f'#{rid}:focus-visible ~ .rrid-controls label[for="{rid}"]{{outline:2px solid}}')
            groups.append(f'<div class="rrid-control" role="radiogroup" aria-label="{html.escape(c.label)}">'
                          f'<span class="rrid-control-name">{html.escape(c.label)}</span> {"".join(options)}</div>')
        panels = []
        for combo, output in zip(self.combinations, outputs):
            key = "-".join(map(str, combo))
            checked = " ~ ".join(f"#{uid}-{k}-{v}:checked" for k, v in enumerate(combo))
            rules.append(f"{checked} ~ .rrid-panels > .rrid-panel-{key}{{display:block}}")
            values = ", ".join(f"{c.label} = {c.names[v]}" for c, v in zip(controls, combo))
            panels.append(f'<div class="rrid-panel rrid-panel-{key}" data-values="{html.escape(values)}">'
                          f"{output}</div>")
        style = "\n".join(rules + [f"#{uid} {sel}{{{css}}}" for sel, css in _STATIC_CSS])
        return (f'<div class="rrid-interact" id="{uid}" style="{_ROOT_STYLE}"><style>{style}</style>{"".join(radios)}'
                f'<div class="rrid-controls">{"".join(groups)}</div>'
                f'<div class="rrid-panels">{"".join(panels)}</div></div>')

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        shown = f"{len(self.combinations)} panels" if self.panels else "the defaults"
        return f"<rrid.viz.interact: {', '.join(c.label for c in self.controls)}; static page shows {shown}>"


_STATIC_CSS = [
    (".rrid-radio", "position:absolute;opacity:0;width:1px;height:1px;pointer-events:none"),
    (".rrid-controls", "display:flex;flex-wrap:wrap;gap:.4em 1.5em;margin:.3em 0 .6em;font-size:.9em"),
    (".rrid-control-name", "font-weight:600;margin-right:.3em"),
    (".rrid-option", "display:inline-block;padding:.1em .6em;margin:.1em .1em;border:1px solid #8c8c8c;"
                     "border-radius:.3em;cursor:pointer;user-select:none"),
    (".rrid-panel img", "max-width:100%"),
]
_CHECKED_STYLE = "background:var(--pst-color-primary,#1f77b4);border-color:var(--pst-color-primary,#1f77b4);color:#fff"
_ROOT_STYLE = "text-align:left"     # in a centred figure too: the note and printed lines read from the left
_NOTE_STYLE = ("border-left:4px solid var(--pst-color-info,#2a7ab0);background:var(--pst-color-info-bg,#eef5fb);"
               "padding:.4em .8em;font-size:.9em")


def _capture(fn, kwargs) -> str:
    """Run ``fn(**kwargs)``; return, as HTML, what it printed, displayed, drew and returned."""
    call = f"{getattr(fn, '__name__', 'fn')}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    before = set(plt.get_fignums())
    with capture_output() as out:   # stdout, stderr, display() and the inline backend's plt.show()
        result = fn(**kwargs)
        figures = [plt.figure(n) for n in plt.get_fignums() if n not in before]   # drawn, not shown
        if isinstance(result, Figure):
            if result.canvas.manager is None:                                     # made without pyplot
                figures.append(result)
        elif result is not None:
            display(result)
    parts = [f'<pre class="rrid-{name}">{html.escape(text)}</pre>'
             for name, text in (("stdout", out.stdout), ("stderr", out.stderr)) if text]
    parts += [_mime_html(o.data, call) for o in out.outputs]
    for figure in figures:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight")
        plt.close(figure)
        parts.append(_mime_html({"image/png": buffer.getvalue()}, call))
    return "".join(parts)


def _mime_html(data: dict, alt: str) -> str:
    """One displayed output (a mime bundle) as HTML: an image, HTML, SVG or plain text."""
    for mime in ("image/png", "image/jpeg"):
        if mime in data:
            payload = data[mime]
            if isinstance(payload, bytes):
                payload = base64.b64encode(payload).decode()
            return f'<img src="data:{mime};base64,{payload}" alt="{html.escape(alt)}">'
    for mime in ("text/html", "image/svg+xml"):
        if mime in data:
            return data[mime]
    return f"<pre>{html.escape(str(data.get('text/plain', '')))}</pre>"
