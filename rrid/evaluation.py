"""From a trained model to ranking metrics: features, distances, re-ranking, the whole pipeline.

Test time in the official code: the embedding of an image and of its horizontal flip are
averaged block by block, the concatenation of the blocks is L2-normalised, and
query-gallery Euclidean distances are ranked with the Market-1501 protocol, or for CUHK03
with the legacy single-gallery-shot CMC (``ranking_metric``, the config's ``eval.metric``;
:mod:`rrid.metrics`). ``rerank`` is :func:`rrid.reranking.rerank`, imported here.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rrid import runtime
from rrid.data import ImageDataset, build_transforms
from rrid.metrics import METRICS, ranking_metrics
from rrid.reranking import rerank

__all__ = ["Features", "extract_features", "pairwise_distance", "rerank", "evaluate"]


class Features(NamedTuple):
    feats: torch.Tensor  # (N, D) float32 on CPU
    pids: np.ndarray
    camids: np.ndarray
    paths: list


def _amp_dtype(amp, device: torch.device):
    """``amp`` of :func:`extract_features` as an autocast dtype (None: full float32)."""
    if isinstance(amp, torch.dtype):
        return amp
    if amp is None:                              # train.amp "auto": the device's dtype on CUDA, off elsewhere
        return runtime.amp_dtype("auto", device)
    return (runtime.amp_dtype("auto", device) or torch.bfloat16) if amp else None


def _device_of(model, device) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


def _host(values) -> np.ndarray:
    """Labels as a NumPy array: a tensor (on a GPU too: a loader may hold them there) is brought to the CPU."""
    return values.detach().cpu().numpy() if torch.is_tensor(values) else np.asarray(values)


def extract_features(model, loader, flip: bool = True, normalize: bool = True, amp=None,
                     device=None, progress: bool = True) -> Features:
    """Embed every image of ``loader`` (items ``(images, pids, camids)``).

    ``flip``: f = (f(x) + f(flip(x))) / 2. The official code averages block by block; since
    the embedding is the concatenation of the blocks, averaging the concatenation is the
    same thing. ``normalize``: f / ||f||_2 over the whole concatenation. ``amp``: an autocast
    dtype (``rrid.runtime.amp_dtype(config.train.amp, device)``, what ``fit`` and ``eval`` pass);
    None: ``train.amp: auto`` (bf16 on CUDA GPUs with bf16 convolutions, fp16 on older ones, off on
    the CPU); True / False force it on (bf16 on the CPU) or off.
    The model runs in eval mode under ``torch.inference_mode()`` and gets its previous
    train / eval mode back afterwards. The progress bar honours ``TQDM_DISABLE``.
    """
    device = _device_of(model, device)
    was_training = model.training
    model.eval()
    feats, pids, camids = [], [], []
    disable = (not progress) or bool(os.environ.get("TQDM_DISABLE"))
    try:
        with torch.inference_mode(), runtime.autocast(device, _amp_dtype(amp, device)):
            for images, pid, camid in tqdm(loader, desc="features", disable=disable, leave=False):
                images = images.to(device, non_blocking=True)
                f = model(images).float()
                if flip:
                    f = (f + model(torch.flip(images, dims=[3])).float()) / 2
                feats.append(f.cpu())
                pids.append(_host(pid))
                camids.append(_host(camid))
    finally:
        model.train(was_training)
    feats = torch.cat(feats) if feats else torch.empty(0, 0)
    if normalize:
        feats = F.normalize(feats, dim=1)
    records = getattr(getattr(loader, "dataset", None), "records", None)
    paths = [str(r.path) for r in records] if records is not None else []
    return Features(feats, np.concatenate(pids) if pids else np.empty(0, int),
                    np.concatenate(camids) if camids else np.empty(0, int), paths)


def pairwise_distance(q: torch.Tensor, g: torch.Tensor, metric: str = "euclidean", chunk: int = 4096,
                      squared: bool = False) -> torch.Tensor:
    """(Q, G) distances, ``chunk`` queries at a time to bound memory.

    euclidean: ||q - g||_2 = sqrt(max(||q||^2 + ||g||^2 - 2 q.g, 0)) (``squared=True`` skips
    the sqrt; the order is the same); cosine: 1 - q.g / (||q|| ||g||).
    """
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"pairwise_distance: expected (Q, D) and (G, D) with the same D, got {tuple(q.shape)} and {tuple(g.shape)}")
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric: expected 'euclidean' or 'cosine', got {metric!r}")
    if metric == "cosine":
        q, g = F.normalize(q, dim=1), F.normalize(g, dim=1)
    g_sq = (g * g).sum(1)
    out = []
    for s in range(0, len(q), chunk):
        qc = q[s:s + chunk]
        if metric == "cosine":
            out.append(1 - qc @ g.T)
            continue
        d = ((qc * qc).sum(1, keepdim=True) + g_sq - 2 * qc @ g.T).clamp_(min=0)
        out.append(d if squared else d.sqrt_())
    return torch.cat(out) if out else q.new_empty(0, len(g))


_rerank = rerank  # ``evaluate`` has a flag of the same name


def evaluate(model, data, height=None, width=None, flip: bool = True, rerank: bool = False,
             metric: str = "euclidean", batch_size: int = 64, workers: int = 0, device=None,
             amp=None, progress: bool = True, ranking_metric: str = "market"):
    """The whole test pipeline: features, distances (optionally re-ranked), ranking metrics.

    ``data`` is an ``rrid.data.Loaders`` (its ``.query`` and ``.gallery`` are used) or a data set
    with ``.query`` and ``.gallery`` records (then test loaders are built at ``height`` x
    ``width``). ``metric`` is the distance ("euclidean" or "cosine"); ``ranking_metric`` the
    protocol, the config's ``eval.metric``: "market" (Market-1501 mAP and CMC) or
    "cuhk03_single_shot" (the authors' CUHK03 numbers: the same mAP, the legacy CMC; see
    :func:`rrid.metrics.ranking_metrics`). Returns ``(metrics, distmat)`` with ``distmat`` a
    (Q, G) CPU tensor. With ``rerank`` the distances and the re-ranking run on ``device`` (default:
    the model's).
    """
    if ranking_metric not in METRICS:  # fail before the features are extracted
        raise ValueError(f"evaluate(ranking_metric={ranking_metric!r}): expected one of {list(METRICS)}")
    if hasattr(data, "query") and isinstance(data.query, torch.utils.data.DataLoader):
        q_loader, g_loader = data.query, data.gallery
    else:
        if height is None or width is None:
            raise ValueError("evaluate: height and width are needed to build test loaders from a data set")
        tf = build_transforms(height, width, train=False)
        q_loader, g_loader = (torch.utils.data.DataLoader(ImageDataset(recs, tf), batch_size=batch_size,
                                                          shuffle=False, num_workers=workers)
                              for recs in (data.query, data.gallery))
    kw = dict(flip=flip, normalize=True, amp=amp, device=device, progress=progress)
    qf, gf = extract_features(model, q_loader, **kw), extract_features(model, g_loader, **kw)
    if rerank:
        dev = _device_of(model, device)
        distmat = _rerank(qf.feats.to(dev), gf.feats.to(dev)).cpu()
    else:
        distmat = pairwise_distance(qf.feats, gf.feats, metric=metric)
    metrics = ranking_metrics(distmat, qf.pids, gf.pids, qf.camids, gf.camids, metric=ranking_metric)
    return metrics, distmat
