"""The book's live training plot: :class:`LivePlot`, a ``rrid.Callback``."""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display
from matplotlib.lines import Line2D
from matplotlib.transforms import ScaledTranslation

from rrid.callbacks import Callback
from rrid.viz.style import use_style
from rrid.viz.widgets import is_static

__all__ = ["LivePlot", "thin"]

_LOSS_STYLE = {"total": "-", "triplet": "--", "ce": ":"}


def thin(steps, values, max_points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """A series of at most ``max_points`` points to draw: unchanged when it is that short,
    otherwise cut into ``max_points`` runs of consecutive points (lengths differ by at most one)
    and each run drawn as its mean step and mean value. Averaging, unlike keeping every k-th
    point, shows the trend of a noisy loss without aliasing its noise."""
    steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    n = len(values)
    if n <= max_points:
        return steps, values
    starts = np.arange(max_points) * n // max_points        # integer arithmetic: every run non-empty
    counts = np.diff(np.append(starts, n))
    return np.add.reduceat(steps, starts) / counts, np.add.reduceat(values, starts) / counts


def _lr_label(run: str | None, group: str) -> str:
    """The legend entry of a parameter group's learning rate: the group's name ("head") after the
    run's; an unnamed group (``rrid.train`` calls it by its index, "0") by the run's name alone."""
    named = not group.isdigit()
    if run is None:
        return group if named else "_nolegend_"
    return f"{run}: {group}" if named else run


def _legend_below(ax, handles, ncol: int = 3, fontsize=None) -> None:
    """A legend of ``handles`` in rows of up to ``ncol`` entries half an inch below ``ax``, clear of
    the tick labels and the x label, without a frame: no entry is drawn over a curve."""
    if handles:
        below = ax.transAxes + ScaledTranslation(0, -0.5, ax.figure.dpi_scale_trans)
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below,
                  ncol=ncol, frameon=False, fontsize=fontsize)


class LivePlot(Callback):
    """Loss parts, learning rates and mAP as training goes.

    In Jupyter and Colab the figure is redrawn in place (one display handle, updated with the
    new figure) as steps arrive, at most once every ``interval`` seconds of wall time, and after
    every evaluation and at the end of the run, so drawing never slows training noticeably. On
    static pages (:func:`rrid.viz.is_static`: the built book, nbval, pytest,
    ``RRID_LIVEPLOT=static``, a plain terminal) it draws once, at the end, and leaves the figure
    open, so ``plt.show()`` shows it. Either way ``self.fig`` keeps the last figure
    (``display(plot.fig)``). ``clock`` (seconds) is there for tests.

    ``rrid.fit`` reports a step every ``train.log_every`` steps, with that step's loss parts and
    learning rates; every reported value is kept, and each curve is drawn with at most
    ``max_points`` points (:func:`thin`: means of consecutive runs of steps).

    Several runs in one figure: call ``new_run(label)`` before each; their curves are
    overlaid, one colour per run (``rrid.ablation.live_ablation`` does this for two rows of
    Table 2). ``steps``, ``parts``, ``acc``, ``lr`` and ``evals`` are the current run's series,
    ``runs`` holds them all.
    """

    def __init__(self, interval: float = 1.5, live: bool | None = None, figsize: tuple[float, float] = (11, 3.2),
                 max_points: int = 1000, clock=time.monotonic):
        self.interval, self.figsize, self.max_points = interval, figsize, max_points
        self.live = not is_static() if live is None else live
        self.runs: list[dict] = []
        self.new_run(None)
        self.fig = None
        self._handle = None
        self._clock, self._shown_at = clock, None

    def new_run(self, label: str | None) -> None:
        """Start a new series of curves named ``label`` (a single run needs no call)."""
        if len(self.runs) == 1 and self.runs[0]["label"] is None and not self.runs[0]["steps"]:
            self.runs.clear()                      # the unnamed run of __init__, still empty
        run = {"label": label, "steps": [], "parts": {"total": [], "triplet": [], "ce": []},
               "acc": [], "lr": {}, "evals": []}
        self.runs.append(run)
        self.steps: list[int] = run["steps"]
        self.parts: dict[str, list[float]] = run["parts"]
        self.acc: list[float] = run["acc"]
        self.lr: dict[str, list[float]] = run["lr"]
        self.evals: list[tuple[int, float, float]] = run["evals"]    # (step, mAP, rank-1)

    def on_step(self, state, logs: dict) -> None:
        self.steps.append(state.step)
        for key in self.parts:
            self.parts[key].append(logs[key])
        self.acc.append(logs["acc"])
        for name, value in logs["lr"].items():
            self.lr.setdefault(name, []).append(value)
        if self.live and (self._shown_at is None or self._clock() - self._shown_at >= self.interval):
            self._show()

    def on_eval(self, state, metrics: dict) -> None:
        self.evals.append((state.step, metrics["mAP"], metrics["rank1"]))
        if self.live:
            self._show()

    def on_fit_end(self, state) -> None:
        if self.live:
            self._show()
        else:
            self.draw()

    def draw(self):
        """Build ``self.fig`` from what has been recorded so far and return it."""
        use_style()
        if self.fig is not None:
            plt.close(self.fig)
        several = len(self.runs) > 1
        # the legends go under the axes (a taller figure), clear of the curves
        width, height = self.figsize
        fig, (ax_loss, ax_lr, ax_map) = plt.subplots(1, 3, figsize=(width, height + (1.0 if several else 0.6)))
        for r, run in enumerate(self.runs):
            self._draw_run(run, f"C{r}" if several else None, ax_loss, ax_lr, ax_map)
        ax_loss.set(xlabel="step", ylabel="loss", title="L = L_triplet + λ L_CE")
        ax_lr.set(xlabel="step", ylabel="learning rate", yscale="log", title="learning rate")
        ax_map.set(xlabel="step", ylabel="%", title="evaluation")
        if several:
            # one colour per run (first column), one line style per loss part (second column)
            handles = [Line2D([], [], color=f"C{r}", label=run["label"]) for r, run in enumerate(self.runs)]
            handles += [Line2D([], [], ls="none", label=" ")] * (len(_LOSS_STYLE) - len(handles))
            handles += [Line2D([], [], color="k", ls=_LOSS_STYLE[key], lw=1, label=key if key != "ce" else "CE")
                        for key in _LOSS_STYLE]
            _legend_below(ax_loss, handles, ncol=2, fontsize="small")
            for ax in (ax_lr, ax_map):
                _legend_below(ax, ax.get_legend_handles_labels()[0], ncol=2, fontsize="small")
        else:
            for ax in (ax_loss, ax_lr, ax_map):
                _legend_below(ax, ax.get_legend_handles_labels()[0])
        fig.tight_layout()
        self.fig = fig
        return fig

    def _draw_run(self, run: dict, colour: str | None, ax_loss, ax_lr, ax_map) -> None:
        """One run's curves; ``colour`` (one per run, line styles per curve) when several are overlaid."""
        name = f"{run['label']}: " if run["label"] is not None else ""
        several = colour is not None
        colour = dict(color=colour) if several else {}
        for key, values in run["parts"].items():
            style = dict(ls=_LOSS_STYLE[key], **colour) if several else {}
            ax_loss.plot(*thin(run["steps"], values, self.max_points), label=name + (key if key != "ce" else "CE"),
                         lw=1, **style)
        for g, (group, values) in enumerate(run["lr"].items()):
            style = dict(ls="-" if g == 0 else "--", **colour) if several else {}
            ax_lr.plot(*thin(run["steps"], values, self.max_points), label=_lr_label(run["label"], group), **style)
        if run["evals"]:
            steps, maps, rank1 = zip(*run["evals"])
            ax_map.plot(steps, [100 * m for m in maps], "o-", label=name + "mAP", **colour)
            ax_map.plot(steps, [100 * v for v in rank1], "s--", label=name + "rank-1", **colour)

    def _show(self) -> None:
        fig = self.draw()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)       # shown through the handle; keep self.fig for later plt.show()
        self._shown_at = self._clock()
