"""Hooks into ``rrid.fit``: ``Callback`` and the book's live training plot ``LivePlot``.

``fit`` calls, on every callback::

    on_fit_start(state)            once, before the first step
    on_step(state, logs)           after every optimiser step: logs = {"total", "triplet", "ce", "acc", "lr"}
    on_epoch(state, logs)          after every epoch: the epoch means, "lr", "img_per_s"
    on_eval(state, metrics)        after every evaluation: {"mAP", "rank1", "rank5", "rank10", ...}
    on_fit_end(state)              once, after the last epoch

``state`` is an ``rrid.train.TrainerState`` (config, model, optimizer, epoch, step, ...).
"""

from __future__ import annotations

__all__ = ["Callback", "LivePlot"]


class Callback:
    """Base class: override the hooks you need; the others do nothing."""

    def on_fit_start(self, state) -> None:
        pass

    def on_step(self, state, logs: dict) -> None:
        pass

    def on_epoch(self, state, logs: dict) -> None:
        pass

    def on_eval(self, state, metrics: dict) -> None:
        pass

    def on_fit_end(self, state) -> None:
        pass


class LivePlot(Callback):
    """Loss parts, learning rates and mAP as training goes.

    In Jupyter and Colab the figure is redrawn in place every ``every`` steps (one display
    handle, updated with the new figure). On static pages (:func:`rrid.book.is_static`: the
    built book, nbval, pytest, ``RRID_LIVEPLOT=static``, a plain terminal) it draws once, at the
    end, and leaves the figure open, so ``plt.show()`` shows it. Either way ``self.fig`` keeps
    the last figure (``display(plot.fig)``).

    Several runs in one figure: call ``new_run(label)`` before each; their curves are
    overlaid, one colour per run (``rrid.ablation.live_ablation`` does this for two rows of
    Table 2). ``steps``, ``parts``, ``acc``, ``lr`` and ``evals`` are the current run's series,
    ``runs`` holds them all.
    """

    def __init__(self, every: int = 10, live: bool | None = None, figsize: tuple[float, float] = (11, 3.2)):
        self.every, self.figsize = every, figsize
        if live is None:
            from rrid.book import is_static

            live = not is_static()
        self.live = live
        self.runs: list[dict] = []
        self.new_run(None)
        self.fig = None
        self._handle = None

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
        if self.live and state.step % self.every == 0:
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
        import matplotlib.pyplot as plt

        try:
            from rrid.viz import use_style
            use_style()
        except (ImportError, AttributeError):
            pass
        if self.fig is not None:
            plt.close(self.fig)
        fig, (ax_loss, ax_lr, ax_map) = plt.subplots(1, 3, figsize=self.figsize)
        several = len(self.runs) > 1
        small = "small" if several else None
        for r, run in enumerate(self.runs):
            name = f"{run['label']}: " if run["label"] is not None else ""
            colour = dict(color=f"C{r}") if several else {}
            for key, values in run["parts"].items():
                style = dict(ls={"total": "-", "triplet": "--", "ce": ":"}[key], **colour) if several else {}
                ax_loss.plot(run["steps"], values, label=name + (key if key != "ce" else "CE"), lw=1, **style)
            for g, (group, values) in enumerate(run["lr"].items()):
                ax_lr.plot(run["steps"], values, label=name + group, **(dict(ls="-" if g == 0 else "--", **colour) if several else {}))
            if run["evals"]:
                steps, maps, rank1 = zip(*run["evals"])
                ax_map.plot(steps, [100 * m for m in maps], "o-", label=name + "mAP", **colour)
                ax_map.plot(steps, [100 * v for v in rank1], "s--", label=name + "rank-1", **colour)
        ax_loss.set(xlabel="step", ylabel="loss", title="L = L_triplet + λ L_CE")
        ax_loss.legend(frameon=False, fontsize=small)
        ax_lr.set(xlabel="step", ylabel="learning rate", yscale="log", title="learning rates")
        if any(run["lr"] for run in self.runs):
            ax_lr.legend(frameon=False, fontsize=small)
        if any(run["evals"] for run in self.runs):
            ax_map.legend(frameon=False, fontsize=small)
        ax_map.set(xlabel="step", ylabel="%", title="evaluation")
        fig.tight_layout()
        self.fig = fig
        return fig

    def _show(self) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        fig = self.draw()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)       # shown through the handle; keep self.fig for later plt.show()
