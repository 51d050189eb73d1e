"""Small helpers that every chapter of the book shares.

A chapter starts with the same first cell (``FIRST_CELL``): when ``rrid`` is missing (Colab),
it clones the repository and installs it in editable mode, so that ``configs/`` and ``data/``
are there as in a local checkout; then it calls :func:`setup` and :func:`banner`. Everything else here answers
one question a chapter would otherwise answer again and again:

* which mode runs (:func:`mode`, :func:`quick_input_size`),
* where the synthetic images are (:func:`synthetic`; market1501-mini: ``rrid.paths.market_mini``),
* which trained model to look at without retraining it in every chapter (:func:`quick_model`).

Two modes, one switch (``RRID_MODE``):

* ``quick``: synthetic data or the 854-image market1501-mini, ResNet-18, 96 x 32 inputs, a few
  epochs; minutes on a laptop CPU. Numbers it produces are *not* the paper's results.
* ``full``: the paper's setting (ResNet-50, 384 x 128, 80 epochs on Market-1501); needs a GPU.
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
from pathlib import Path

from rrid import paths, runtime
from rrid.checkpoint import load_model

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
    import yaml

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
    import torch

    return "full" if torch.cuda.is_available() else "quick"


def is_quick() -> bool:
    return mode() == "quick"


def banner() -> None:
    """Print which mode produced the outputs below, and what that means."""
    import torch

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
    ``OMP_WAIT_POLICY=PASSIVE`` before this function first imports torch.
    """
    import torch

    from rrid import viz

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
    import inspect

    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")


def quick_input_size() -> tuple[int, int]:
    """Input (height, width): (96, 32) in quick mode, the paper's (384, 128) in full mode."""
    return (96, 32) if mode() == "quick" else (384, 128)


def backbone_name() -> str:
    """``resnet18`` in quick mode, the paper's ``resnet50`` in full mode."""
    return "resnet18" if mode() == "quick" else "resnet50"


def synthetic(seed: int = 0) -> Path:
    """The synthetic Market-1501-layout data set, generated once (seeded) and reused.

    Written to ``<repo>/data/synthetic`` in a checkout, ``~/.cache/rrid/synthetic`` otherwise.
    """
    from rrid.data import synthetic as synth

    name = "synthetic" if seed == 0 else f"synthetic-seed{seed}"
    out = paths.writable_dir(paths.ROOT / "data" / name, Path.home() / ".cache" / "rrid" / name)
    return Path(synth.ensure(out, seed=seed))


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
    :func:`rrid.paths.cache_dir` (:func:`quick_model_path`; ``python -m rrid.ablation prepare``, which
    ``make book`` runs first, trains the rows of ``rrid.ablation.BOOK_QUICK_MODELS`` there
    ahead of the chapters, since one takes minutes on a 2-core CPU); later callers (other chapters, other processes) load it. A lock file
    keeps two processes from training the same model at once, and the checkpoint appears by
    atomic rename, so a reader never sees half of it. Returns ``(model, config)``, the model
    in eval mode on the CPU.
    """
    import shutil
    import time

    import rrid
    from rrid.config import load_config
    from rrid.files import atomic_path

    overrides = [f"train.epochs={epochs}"] if epochs is not None else []
    config = load_config(quick_config_path(row), overrides)
    done = quick_model_path(row, epochs)
    done.parent.mkdir(parents=True, exist_ok=True)
    tag, cache = done.stem, done.parent
    lock = cache / f"{tag}.lock"
    while not done.is_file():
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:  # another process is training this model: wait for it
            if time.time() - lock.stat().st_mtime > 3600:
                lock.unlink(missing_ok=True)  # left behind by a killed build
            time.sleep(2)
            continue
        try:
            if not done.is_file():
                # the run folder is the cache's own: a build killed half-way is replaced
                result = rrid.fit(config, out_dir=cache / f"{tag}-run", progress=False, overwrite=True)
                with atomic_path(done) as tmp:
                    shutil.copyfile(result.last_checkpoint, tmp)
        finally:
            lock.unlink(missing_ok=True)
    return load_model(done), config



# --- Widgets that also work on the static pages ---------------------------------------------

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
    import ipywidgets

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
        import ipywidgets

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
        import ipywidgets as widgets

        if self.widget is not None:
            return self.widget
        if self.kind == "bool":
            return widgets.Checkbox(value=self.default, description=self.label)
        if self.kind == "range":
            low, high, step = self.span
            floats = any(isinstance(v, float) for v in (low, high, step))
            slider = widgets.FloatSlider if floats else widgets.IntSlider
            return slider(value=self.default, min=low, max=high, step=step, description=self.label)
        options = list(zip(self.names, self.values))
        short = len(options) <= 5 and sum(map(len, self.names)) <= 40
        return (widgets.ToggleButtons if short else widgets.Dropdown)(
            options=options, value=self.default, description=self.label)


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _show_result(result) -> None:
    """Live mode: show what ``fn`` returned. Pyplot figures appear through the inline backend
    (``plt.show()``, or ipywidgets shows the open ones after the call); only a figure made
    without pyplot, or another object, is displayed here."""
    from IPython.display import display
    from matplotlib.figure import Figure

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
            return (f'<div class="rrid-interact rrid-static" id="{uid}">'
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
        return (f'<div class="rrid-interact" id="{uid}"><style>{style}</style>{"".join(radios)}'
                f'<div class="rrid-controls">{"".join(groups)}</div>'
                f'<div class="rrid-panels">{"".join(panels)}</div></div>')

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        shown = f"{len(self.combinations)} panels" if self.panels else "the defaults"
        return f"<rrid.book.interact: {', '.join(c.label for c in self.controls)}; static page shows {shown}>"


_STATIC_CSS = [
    (".rrid-radio", "position:absolute;opacity:0;width:1px;height:1px;pointer-events:none"),
    (".rrid-controls", "display:flex;flex-wrap:wrap;gap:.4em 1.5em;margin:.3em 0 .6em;font-size:.9em"),
    (".rrid-control-name", "font-weight:600;margin-right:.3em"),
    (".rrid-option", "display:inline-block;padding:.1em .6em;margin:.1em .1em;border:1px solid #8c8c8c;"
                     "border-radius:.3em;cursor:pointer;user-select:none"),
    (".rrid-panel img", "max-width:100%"),
]
_CHECKED_STYLE = "background:var(--pst-color-primary,#1f77b4);border-color:var(--pst-color-primary,#1f77b4);color:#fff"
_NOTE_STYLE = ("border-left:4px solid var(--pst-color-info,#2a7ab0);background:var(--pst-color-info-bg,#eef5fb);"
               "padding:.4em .8em;font-size:.9em")


def _capture(fn, kwargs) -> str:
    """Run ``fn(**kwargs)``; return, as HTML, what it printed, displayed, drew and returned."""
    import matplotlib.pyplot as plt
    from IPython.display import display
    from IPython.utils.capture import capture_output
    from matplotlib.figure import Figure

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
