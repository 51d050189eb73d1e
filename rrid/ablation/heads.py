"""The head-only protocol's heads: a Table 2 row trained on the cached feature maps, evaluated.

Steps 4-5 of :mod:`rrid.ablation`: :func:`train_heads` trains the heads of a row for a seed with
``rrid.train``'s loop (the same step as ``fit``) on batches that depend on the seed only, so two
rows trained with one seed are paired; :func:`evaluate_heads` scores the flip-averaged embedding and
each 256-d block. :func:`trained_model` keeps trained heads on disk for the book's figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rrid import runtime
from rrid.config import OptimConfig
from rrid.data import PKSampler
from rrid.evaluation import Features, pairwise_distance
from rrid.files import build_once
from rrid.metrics import evaluate_ranking
from rrid.model import RRID, TABLE2, RRIDConfig
from rrid.retrieval import Ranking, block_columns
from rrid.train import TrainerState, build_optimizer, build_scheduler, train_one_epoch

from .bands import BandMap
from .protocol import LOG_EVERY, QUICK, FeatureCache, Protocol, default_cache_dir, features

__all__ = ["NAMED_ROWS", "HeadState", "HeadRun", "row_config", "head_model", "batches", "train_heads", "embed_cached",
           "evaluate_heads", "live_ablation", "trained_model", "trained_run", "rank", "heads_file"]


NAMED_ROWS = {"rest_only": (5, {"relation": "rest_only"})}
"""Head variants beside Table 2's rows 1..13, as (row, RRIDConfig fields): "rest_only" is row 5
with q_i = p̄_i + R_p(r̄_i) (``RestOnlyRelation``), the model of the paper's Fig. 6."""


def row_config(row: int | str, backbone: str = "resnet18", **overrides) -> RRIDConfig:
    """The ``RRIDConfig`` of Table 2's ``row`` (1..13) or of a name in :data:`NAMED_ROWS`."""
    if isinstance(row, str):
        if row not in NAMED_ROWS:
            raise ValueError(f"row={row!r}: expected a row of Table 2 (1..{len(TABLE2)}) or one of {list(NAMED_ROWS)}")
        row, fields = NAMED_ROWS[row]
        overrides = {**fields, **overrides}
    return RRIDConfig.table2(row, backbone=backbone, **overrides)


def head_model(row: int | str, seed: int, num_classes: int, backbone: str = "resnet18", **overrides) -> RRID:
    """The ``RRID`` of Table 2's ``row`` (or a name in :data:`NAMED_ROWS`) initialised from
    ``seed`` (as ``rrid.train.build_model``), with its backbone replaced by ``nn.Identity()``:
    it maps feature maps x (N, C, H, W) to the row's embedding (eval) or ``RRIDOutput`` (train)."""
    torch.manual_seed(seed)
    model = RRID(row_config(row, backbone, **overrides), num_classes)
    model.backbone = nn.Identity()
    return model


@dataclass
class HeadState(TrainerState):
    """What callbacks see during head training: ``rrid.train.TrainerState`` and the (row, seed)."""

    row: int | str = 0
    seed: int = 0


class HeadRun(NamedTuple):
    """One trained (row, seed): metrics in %, per-query AP (fraction, NaN = skipped), per-block
    (mAP, rank-1) in %, the per-epoch history and the training wall time."""

    row: int | str
    seed: int
    mAP: float
    rank1: float
    mINP: float
    feature_dim: int
    all_AP: np.ndarray
    blocks: dict
    history: list
    train_seconds: float


def _metrics(emb: torch.Tensor, feats: FeatureCache) -> dict:
    emb = F.normalize(emb, dim=1)
    nq = len(feats.q_pids)
    return evaluate_ranking(pairwise_distance(emb[:nq], emb[nq:]), feats.q_pids, feats.g_pids,
                            feats.q_camids, feats.g_camids)


def _flip_average(model: RRID, x) -> torch.Tensor:
    """(model(x[0]) + model(x[1])) / 2 for the plain and mirrored views x (2, N, ...), 512 at a time."""
    return sum(torch.cat([model(x[v, s:s + 512].float()) for s in range(0, x.shape[1], 512)]) for v in range(2)) / 2


def embed_cached(model: RRID, feats: FeatureCache) -> torch.Tensor:
    """(Q + G, D): the flip-averaged embedding (model(x) + model(x mirrored)) / 2 of every query,
    then every gallery image, from the cached maps x (or their ``BandMap``); not normalised, on the
    cache's device. A full model (e.g. :func:`trained_model`) runs without its backbone here: the
    cache holds the backbone's output."""
    was, backbone = model.training, model.backbone
    model.eval()
    model.backbone = nn.Identity()
    try:
        with torch.inference_mode():
            if isinstance(feats.query_x, BandMap):   # Market-1501's test split: embedded in place, no joined copy
                return torch.cat([_flip_average(model, feats.query_x), _flip_average(model, feats.gallery_x)])
            return _flip_average(model, torch.cat([feats.query_x, feats.gallery_x], dim=1))   # (2, Q + G, C, H, W)
    finally:
        model.backbone = backbone
        model.train(was)


def evaluate_heads(model: RRID, feats: FeatureCache, blocks: bool = True) -> dict:
    """mAP, rank1, mINP (%), all_AP and, with ``blocks``, {block name: (mAP, rank1)} of ``model``
    on the cached test split: flip-averaged embedding (:func:`embed_cached`), L2-normalised,
    Euclidean distances."""
    c = model.config.reduced_dim
    emb = embed_cached(model, feats)
    m = _metrics(emb, feats)
    out = {"mAP": 100 * m["mAP"], "rank1": 100 * float(m["cmc"][0]), "mINP": 100 * m["mINP"],
           "all_AP": np.asarray(m["all_AP"]), "feature_dim": emb.shape[1]}
    if blocks:
        out["blocks"] = {}
        for i, name in enumerate(model.block_names):
            b = _metrics(emb[:, i * c:(i + 1) * c], feats)
            out["blocks"][name] = (100 * b["mAP"], 100 * float(b["cmc"][0]))
    return out


def batches(labels: torch.Tensor, views: int, protocol: Protocol, seed: int, epoch: int):
    """The training batches of ``epoch`` for ``seed``: (image indices, view indices) pairs.

    P x K images from ``PKSampler(seed)`` ("once" epochs), and for each a cached view drawn
    from ``numpy.random.default_rng([seed, epoch])``. A function of (seed, epoch) only, so
    every row trained with the same seed sees the same batches.
    """
    sampler = PKSampler(labels.tolist(), p=protocol.p, k=protocol.k, epoch_length="once", seed=seed)
    sampler.set_epoch(epoch)
    rng = np.random.default_rng([seed, epoch])
    for batch in sampler:
        yield torch.tensor(batch), torch.from_numpy(rng.integers(views, size=len(batch)))


def train_heads(row: int | str, seed: int, protocol: Protocol = QUICK, feats: FeatureCache | None = None,
                callbacks: Sequence = (), eval_every: int = 0, cache_dir=None) -> HeadRun:
    """Train the heads of Table 2's ``row`` (or a name in :data:`NAMED_ROWS`, e.g. "rest_only")
    for ``seed`` on the cached features; evaluate.

    Per step: a batch of cached maps (:func:`batches`), L = L_triplet + λ L_ce (``RRIDLoss``,
    Eq. 3), one SGD step on the heads (lr ``head_lr``, x0.1 at ``milestones``), on
    ``protocol.head_device()`` (QUICK: the CPU; FULL: a GPU when there is one). ``callbacks``
    get ``on_fit_start``, ``on_step(state, logs)`` (logs as in ``rrid.fit``), ``on_epoch``,
    ``on_eval(state, metrics)`` (fractions; every ``eval_every`` epochs and after the last
    when ``eval_every`` > 0) and ``on_fit_end``. ``train_seconds`` excludes evaluation. Each 256-d
    block is scored alone too where ``protocol.scores_blocks(row)`` (``blocks``, else empty).
    """
    return _fit_heads(row, seed, protocol, feats, callbacks, eval_every, cache_dir)[1]


def _fit_heads(row, seed, protocol, feats=None, callbacks=(), eval_every=0, cache_dir=None) -> tuple[RRID, HeadRun]:
    """:func:`train_heads`, returning the trained head model (eval mode) with its run. The loop is
    ``rrid.train``'s: :func:`rrid.train.train_one_epoch` over cached maps, the recipe's optimiser."""
    pr = protocol
    feats = feats if feats is not None else features(pr, cache_dir)
    labels, views, device = feats.train_labels, feats.train_x.shape[0], pr.head_device()
    on_device = labels.to(device)
    with runtime.threads(pr.threads):
        model = head_model(row, seed, feats.num_classes, pr.backbone, **pr.model_overrides).to(device)
        model.train()
        recipe = OptimConfig(head_lr=pr.head_lr, momentum=pr.momentum, weight_decay=pr.weight_decay,
                             milestones=pr.milestones)
        optimizer = build_optimizer(model.parameters(), recipe)
        scheduler = build_scheduler(optimizer, recipe)
        state = HeadState(None, model, optimizer, scheduler=scheduler, device=device, row=row, seed=seed)
        for cb in callbacks:
            cb.on_fit_start(state)
        history, t0, eval_seconds = [], time.perf_counter(), 0.0
        for epoch in range(pr.epochs):
            # the epoch's indices go to the device at once, not one small copy (and wait) per step
            epoch_batches = [(idx.to(device), view.to(device)) for idx, view in batches(labels, views, pr, seed, epoch)]
            state.epoch, state.batch, state.steps_per_epoch = epoch, 0, len(epoch_batches)
            state.sums.zero_()
            cached = ((feats.train_x[view, idx].float(), on_device[idx]) for idx, view in epoch_batches)
            entry = {"epoch": epoch, **train_one_epoch(state, cached, callbacks, log_every=LOG_EVERY),
                     "step": state.step}
            scheduler.step()
            for cb in callbacks:
                cb.on_epoch(state, entry)
            if eval_every and ((epoch + 1) % eval_every == 0 or epoch + 1 == pr.epochs):
                e0 = time.perf_counter()
                m = evaluate_heads(model, feats, blocks=False)
                eval_seconds += time.perf_counter() - e0
                entry.update(mAP=m["mAP"], rank1=m["rank1"])
                for cb in callbacks:
                    cb.on_eval(state, {"mAP": m["mAP"] / 100, "rank1": m["rank1"] / 100})
            history.append(entry)
        seconds = time.perf_counter() - t0 - eval_seconds
        for cb in callbacks:
            cb.on_fit_end(state)
        m = evaluate_heads(model, feats, blocks=pr.scores_blocks(row))
    return model.eval(), HeadRun(row, seed, m["mAP"], m["rank1"], m["mINP"], m["feature_dim"], m["all_AP"],
                                 m.get("blocks", {}), history, seconds)


def live_ablation(row_a: int = 4, row_b: int = 5, seed: int = 0, protocol: Protocol = QUICK,
                  plot=None, eval_every: int = 5, cache_dir=None) -> dict[int, HeadRun]:
    """Train two rows of Table 2 with the same seed, their curves overlaid in one ``LivePlot``.

    Returns {row: HeadRun}; ``plot``: a callback with ``new_run(label)``, such as
    ``rrid.viz.LivePlot()``, which then keeps the figure (``plot.fig``); None trains without
    one. The feature cache is built on the first call, then read back.
    """
    feats = features(protocol, cache_dir)
    runs = {}
    for row in (row_a, row_b):
        if plot is not None:
            plot.new_run(f"row {row}")
        runs[row] = train_heads(row, seed, protocol, feats, callbacks=[plot] if plot is not None else [],
                                eval_every=eval_every)
    return runs


# ----------------------------------------------------------------------------- trained models, rankings

def heads_file(row: int | str, seed: int, protocol: Protocol = QUICK, cache_dir=None) -> Path:
    """Where the trained heads of (row, seed) under ``protocol`` are kept (with the run's metrics)."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = row if isinstance(row, str) else f"row{row:02d}"
    return cache / f"heads-{protocol.key()}-{name}-seed{seed}.pt"


def _trained(row: int | str, seed: int, protocol: Protocol, cache_dir=None) -> dict:
    """The file of (row, seed) under ``protocol``: trained once with :func:`train_heads`, then read."""
    row_config(row, protocol.backbone, **protocol.model_overrides)     # a bad row fails before any work
    path = heads_file(row, seed, protocol, cache_dir)

    def make(tmp: Path) -> None:
        model, run = _fit_heads(row, seed, protocol, features(protocol, cache_dir))
        torch.save({"heads": model.heads.state_dict(), "num_classes": model.num_classes, "protocol": protocol.key(),
                    "run": {**run._asdict(), "all_AP": torch.from_numpy(run.all_AP)}}, tmp)

    build_once(path, make)
    return torch.load(path, map_location="cpu", weights_only=True)


def trained_run(row: int | str, seed: int = 0, protocol: Protocol = QUICK, cache_dir=None) -> HeadRun:
    """The :class:`HeadRun` (metrics, per-query AP, blocks, history) of :func:`trained_model`'s heads."""
    run = _trained(row, seed, protocol, cache_dir)["run"]
    return HeadRun(**{**run, "all_AP": run["all_AP"].numpy()})


def trained_model(row: int | str, seed: int = 0, protocol: Protocol = QUICK, cache_dir=None) -> RRID:
    """The full model of ``row`` (Table 2's 1..13 or "rest_only") for the book's figures.

    The frozen backbone of ``protocol`` (``protocol.frozen_backbone``, last stride 1) with the heads
    of ``row`` trained on the feature cache by ``train_heads(row, seed, protocol)``, in eval
    mode on the CPU: ``model(images)`` is the embedding of real images (N, 3, H, W) at the
    protocol's ``height`` x ``width`` (:func:`images`), ``model.forward_features(images)`` the
    intermediate tensors. The heads are trained on the first call and kept under the cache
    (``heads-<protocol key>-<row>-seed<seed>.pt``, with the run's metrics: :func:`trained_run`);
    later calls load them. The global random state of the caller is left as it was.
    """
    with torch.random.fork_rng(devices=[]):           # training and head_model seed the global generator
        d = _trained(row, seed, protocol, cache_dir)
        model = head_model(row, seed, d["num_classes"], protocol.backbone, **protocol.model_overrides)
        model.heads.load_state_dict(d["heads"])
        model.backbone = protocol.frozen_backbone(cache_dir)
    return model.eval()


def rank(model_or_row, seed: int = 0, protocol: Protocol = QUICK, blocks=None, cache_dir=None):
    """The test split of ``protocol`` ranked by a model, from the cached maps (no re-embedding).

    ``model_or_row``: a model (a :func:`trained_model`, or a :func:`head_model`) or a row for
    ``trained_model(row, seed, protocol)``. Returns an ``rrid.retrieval.Ranking`` as
    ``rrid.retrieval.rank`` builds one: the flip-averaged embedding (:func:`embed_cached`),
    L2-normalised (after slicing, with ``blocks`` such as ``["P6/q0"]``), Euclidean distances;
    the query and gallery ``Features`` carry the images' paths, identities and cameras.
    """
    model = model_or_row if isinstance(model_or_row, nn.Module) else trained_model(model_or_row, seed, protocol,
                                                                                   cache_dir)
    feats = features(protocol, cache_dir)
    model.to(feats.query_x.device)                  # a GPU's band cache stays where it is
    with runtime.threads(protocol.threads):
        emb = embed_cached(model, feats)
    if blocks is not None:
        emb = emb[:, block_columns(model, blocks)]
    emb = F.normalize(emb, dim=1).cpu()
    query, gallery = protocol.test_records(cache_dir)
    if not (np.array_equal([r.pid for r in query], feats.q_pids)
            and np.array_equal([r.pid for r in gallery], feats.g_pids)):
        raise RuntimeError(f"the feature cache {protocol.features_path(cache_dir)} does not list the protocol's test "
                           "split in order: delete it and build it again")
    nq = len(feats.q_pids)
    return Ranking.from_features(Features(emb[:nq], feats.q_pids, feats.q_camids, [str(r.path) for r in query]),
                                 Features(emb[nq:], feats.g_pids, feats.g_camids, [str(r.path) for r in gallery]))

