"""From a trained model to ranking metrics: features, distances, re-ranking, the whole pipeline.

Test time in the official code: the embedding of an image and of its horizontal flip are
averaged block by block, the concatenation of the blocks is L2-normalised, and
query-gallery Euclidean distances are ranked with the Market-1501 protocol, or for CUHK03
with the legacy single-gallery-shot CMC (``ranking_metric``, the config's ``eval.metric``;
:mod:`rrid.metrics`).
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
    device = torch.device(device) if device is not None else next(model.parameters()).device
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


def rerank(q: torch.Tensor, g: torch.Tensor, k1: int = 20, k2: int = 6, lambda_: float = 0.3) -> torch.Tensor:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017), all in torch; returns the (Q, G) d*.

    On the probe-and-gallery set P ∪ G with Euclidean distances d (squared, scaled per row
    by its maximum, as in the paper's code release):

    * N(p, k): p and its k nearest neighbours (a stable sort breaks ties by index);
      R(p, k) = {g in N(p, k): p in N(g, k)}, the k-reciprocal neighbours.
    * R*(p, k) = R(p, k) ∪ R(q, round(k/2)) for every q in R(p, k) with
      |R(p, k) ∩ R(q, k/2)| > 2/3 |R(q, k/2)|.
    * V_{p,g} = exp(-d(p, g)) for g in R*(p, k1), else 0, normalised to sum 1 over g.
    * local query expansion: V_p <- mean of V_g over the k2 first entries of p's ranking
      (p and its k2 - 1 nearest neighbours).
    * d_J(p, g) = 1 - sum_j min(V_pj, V_gj) / sum_j max(V_pj, V_gj).
    * d*(p, g) = (1 - λ) d_J(p, g) + λ d(p, g).

    Memory is O((Q + G)^2): meant for data sets of Market-1501 size and below.
    """
    num_q = len(q)
    x = torch.cat([q, g]).float()
    n = len(x)
    d = pairwise_distance(x, x, squared=True)
    d = d / d.max(dim=1, keepdim=True).values.clamp(min=1e-12)
    ranks = torch.argsort(d, dim=1, stable=True)

    def reciprocal(k: int) -> torch.Tensor:  # (n, n) bool: R(p, k) as a mask
        knn = torch.zeros(n, n, dtype=torch.bool, device=x.device)
        knn.scatter_(1, ranks[:, :k + 1], True)
        return knn & knn.T

    r1 = reciprocal(k1)
    r_half = reciprocal(int(round(k1 / 2)))
    # R*(p) = R(p) ∪ the R(q, k/2) (q in R(p)) that overlap R(p) in at least 2/3 of their size
    overlap = (r_half.float() @ r1.float().T).T  # [p, q] = |R(p, k) ∩ R(q, k/2)|
    good = r1 & (overlap > 2 / 3 * r_half.sum(1).float()[None, :])
    r_star = r1 | ((good.float() @ r_half.float()) > 0)

    v = torch.where(r_star, torch.exp(-d), torch.zeros_like(d))
    v = v / v.sum(1, keepdim=True)
    if k2 > 1:
        v = v[ranks[:, :k2]].mean(1)
    d_j = torch.empty(num_q, n - num_q, dtype=v.dtype, device=v.device)
    vg = v[num_q:]
    for s in range(num_q):  # sum_j min / sum_j max, one query at a time to bound memory
        vq = v[s]
        mins = torch.minimum(vq, vg).sum(1)
        d_j[s] = 1 - mins / (2 - mins)  # sum max = sum vq + sum vg - sum min = 2 - sum min
    return (1 - lambda_) * d_j + lambda_ * d[:num_q, num_q:]


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
    (Q, G) CPU tensor.
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
        distmat = _rerank(qf.feats, gf.feats)
    else:
        distmat = pairwise_distance(qf.feats, gf.feats, metric=metric)
    metrics = ranking_metrics(distmat, qf.pids, gf.pids, qf.camids, gf.camids, metric=ranking_metric)
    return metrics, distmat
