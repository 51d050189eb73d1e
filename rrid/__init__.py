"""RRID: Relation Network for Person Re-identification (Park & Ham, AAAI 2020).

The public names below are imported on first use, so that ``import rrid`` stays fast
and a reader can open any one module without loading the others.
"""

import os
from importlib import import_module

__version__ = "0.1.0"

# Idle OpenMP threads sleep instead of spinning. With libgomp's default they spin at the end of
# every parallel region, and when another process keeps a core busy a 2-thread quick-mode step
# runs several times slower (benchmarks/contention.py). OpenMP reads the variable once, when torch
# loads it, so it is set here, before any rrid module imports torch (child processes inherit it);
# a value already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_PUBLIC = {
    # model
    "RRIDConfig": "rrid.model",
    "RRID": "rrid.model",
    "RRIDOutput": "rrid.model",
    "param_groups": "rrid.model",
    # losses
    "RRIDLoss": "rrid.losses",
    "TripletLoss": "rrid.losses",
    "batch_hard_triplet_loss": "rrid.losses",
    # evaluation
    "extract_features": "rrid.evaluation",
    "pairwise_distance": "rrid.evaluation",
    "rerank": "rrid.reranking",  # the function; its module is rrid.reranking
    "evaluate": "rrid.evaluation",
    "export_onnx": "rrid.export",
    # training
    "fit": "rrid.train",
    "Callback": "rrid.callbacks",
    "LivePlot": "rrid.viz",
}
_SUBMODULES = {"data", "metrics", "viz", "model", "losses", "evaluation", "export", "config", "train", "callbacks", "book",
               "explain", "cost", "retrieval", "paper", "stats", "ablation", "reranking"}

__all__ = sorted(_PUBLIC) + sorted(_SUBMODULES)


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
    elif name in _SUBMODULES:
        value = import_module(f"rrid.{name}")
    else:
        raise AttributeError(f"module 'rrid' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __all__
