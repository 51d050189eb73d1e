"""Hooks into ``rrid.fit``: the ``Callback`` protocol.

``fit`` calls, on every callback::

    on_fit_start(state)            once, before the first step
    on_step(state, logs)           after an optimiser step, every ``train.log_every`` steps:
                                   logs = that step's loss parts {"total", "triplet", "ce", "acc"} and "lr"
    on_epoch(state, logs)          after every epoch: the epoch means, "lr", "img_per_s"
    on_eval(state, metrics)        after every evaluation: {"mAP", "rank1", "rank5", "rank10", ...}
    on_fit_end(state)              once, after the last epoch

``state`` is an ``rrid.train.TrainerState`` (config, model, optimizer, epoch, step, ...). The
book's live training plot is ``rrid.viz.LivePlot``, a callback like any other.
"""

from __future__ import annotations

__all__ = ["Callback"]


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
