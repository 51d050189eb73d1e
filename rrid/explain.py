"""The numbers behind the book's figures: the network's shapes, the backbone's map, the relation
module and GCP, the training transform (chapters 2-6, 8, 11).

Every function takes a model, a configuration, images or the tensors of a forward pass
(``model.forward_features``) and returns numbers; :mod:`rrid.viz` only draws them. Stripes are
numbered as in the paper, i = 1..n from the top.

* :func:`architecture_shapes`: the shape of every tensor of one forward pass, by name (the
  numbers printed in ``rrid.viz.architecture``, the paper's Figs. 1 and 2).
* :func:`backbone_marks`: the backbone map's channel sum over one image and, per stripe, its
  peak and the cell GMP reads most often (``rrid.viz.activation_maps``).
* :func:`augmentation_samples`: the training transform applied once to each image, seeded
  (``rrid.viz.augmentation_batch``, chapter 11).

* :func:`relation_maps`: per-part activation maps of R_p (the paper's Fig. 6), for Eq. (1)'s
  R_p(T(p̄_i, r̄_i)) and for the rest-only model's R_p(r̄_i).
* :func:`rest_composition`: which stripes form r_i, and p_i, r_i, p̄_i, r̄_i of one stripe.
* :func:`relation_switch`: q_i with the relation module (Eq. 1) and without it (q_i = p̄_i).
* :func:`gcp_channel`: one channel's p_i, p_max, p_avg and p_cont (Eq. 2) at any n.
* :func:`stripe_rows`: the rows of the feature map that stripe i covers.
* :func:`pooling_share`: where on the feature map GMP or GAP takes each part feature from
  (the book's counterpart of the paper's Fig. 3(a)-(b), chapter 3).
* :func:`gmp_holders`: how many channels' maxima each cell holds under GMP (the circles of
  ``rrid.viz.activation_maps``, through :func:`backbone_marks`).
* :func:`global_share`: where a global feature (GAP, GMP, GAP+GMP, or GCP's p_max and p_cont)
  takes its value from (the counterpart of the paper's Fig. 3(c)-(d), chapter 5).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, NamedTuple

import torch
from torch import Tensor

from rrid.data.transforms import observe_train_transform
from rrid.model import (CONTRASTS, RRID, GlobalContrastivePooling, GlobalPooling, RelationModule, RestOnlyRelation,
                        RRIDConfig, stripe_bounds, stripe_pool)

__all__ = ["architecture_shapes", "BackboneMarks", "backbone_marks", "augmentation_samples", "RelationMaps",
           "relation_maps", "rest_composition", "relation_switch", "gcp_channel", "stripe_rows", "pooling_share",
           "gmp_holders", "GLOBAL_FEATURES", "global_share"]

GLOBAL_FEATURES = ("gap", "gmp", "gap+gmp", "p_max", "p_cont")


def stripe_rows(height: int, n: int, slicing: str = "adaptive") -> list[tuple[int, int]]:
    """(first, stop) row of each of the n stripes on a map of ``height`` rows, as ``stripe_pool``
    slices them: floor(i H/n) .. ceil((i+1) H/n) - 1 for i = 0..n-1 (exact slices of H/n rows
    when n divides H; neighbouring stripes share a row otherwise). ``slicing="official"``: the
    authors' int(H/n) rows per stripe from the top (``rrid.model.stripe_bounds``)."""
    if not (isinstance(n, int) and 1 <= n <= height):
        raise ValueError(f"n={n!r} stripes on a feature map of {height} rows: expected 1 <= n <= {height}")
    return stripe_bounds(height, n, slicing)


def pooling_share(x: Tensor, n: int, mode: str = "gmp", index: int = 0) -> Tensor:
    """Where the part features p_1..p_n come from: (n, H, W), the share of ||p_i||_1 that each
    cell (h, w) of stripe i contributes (0 outside the stripe's rows).

    ``x``: the backbone's feature map, (N, C, H, W) or (C, H, W), non-negative (ResNet's last
    block ends in a ReLU). With S_i the cells of stripe i (:func:`stripe_rows`) and x_k(h, w)
    channel k of cell (h, w):

        GAP: p_ik = 1/|S_i| sum_{(h,w) in S_i} x_k(h, w), so cell (h, w) contributes
             sum_k x_k(h, w) / |S_i| to ||p_i||_1 = sum_k p_ik;
        GMP: p_ik = max_{(h,w) in S_i} x_k(h, w), taken from the cell that holds the maximum
             (split evenly between tied cells), so a cell contributes the p_ik of the channels
             whose maximum it holds.

    Divided by ||p_i||_1, each stripe's shares sum to 1 (all 0 for a stripe whose p_i is zero).
    GAP spreads a part feature over every cell of its stripe, background included, in
    proportion to the cell's activation; GMP puts it on the few cells that hold channel maxima.
    Computed in float64 from ``stripe_pool``'s own output.
    """
    if mode not in ("gmp", "gap"):
        raise ValueError(f"pooling_share: mode={mode!r}: expected 'gmp' or 'gap'")
    x = _one(x, index, 3).to(torch.float64)
    if (x < 0).any():
        raise ValueError("pooling_share: expected a non-negative feature map x (the output of a ReLU)")
    C, H, W = x.shape
    p = stripe_pool(x[None], n, mode)[0]                      # (n, C)
    share = torch.zeros(n, H, W, dtype=torch.float64)
    for i, (first, stop) in enumerate(stripe_rows(H, n)):
        cells = x[:, first:stop]                               # (C, rows, W)
        if mode == "gap":
            part = cells / cells[0].numel()
        else:
            hit = (cells == p[i][:, None, None]).to(torch.float64)
            part = hit / hit.sum(dim=(1, 2), keepdim=True) * p[i][:, None, None]
        total = p[i].sum()
        if total > 0:
            share[i, first:stop] = part.sum(0) / total
    return share


def gmp_holders(x: Tensor, n: int, index: int = 0) -> Tensor:
    """How many channels of p_i each cell holds the maximum of: (n, H, W), float64.

    ``x``: the backbone's feature map, (N, C, H, W) or (C, H, W). GMP takes each channel of
    p_i from its own cell, p_ik = max_{(h,w) in S_i} x_k(h, w); this counts, for every cell of
    stripe i (:func:`stripe_rows`), the channels k whose maximum it holds:

        holders_i(h, w) = sum_k [x_k(h, w) = p_ik] / |{(h', w') in S_i : x_k(h', w') = p_ik}|

    over the channels with p_ik > 0 (a channel that is zero on the whole stripe has no maximum
    to hold; a tie is split evenly between the tied cells), 0 outside stripe i. Each stripe's
    counts sum to its number of non-zero channels. Unlike :func:`pooling_share` every channel
    counts once, whatever its value: the cell with the largest count is the one GMP reads most
    often, which need not be the cell where the channel sum sum_k x_k(h, w) peaks.
    """
    x = _one(x, index, 3).to(torch.float64)
    C, H, W = x.shape
    p = stripe_pool(x[None], n, "gmp")[0]                      # (n, C)
    holders = torch.zeros(n, H, W, dtype=torch.float64)
    for i, (first, stop) in enumerate(stripe_rows(H, n)):
        hit = (x[:, first:stop] == p[i][:, None, None]) & (p[i] > 0)[:, None, None]
        hit = hit.to(torch.float64)
        holders[i, first:stop] = (hit / hit.sum(dim=(1, 2), keepdim=True).clamp(min=1)).sum(0)
    return holders


def _parts(parts, n: int) -> tuple[int, ...]:
    parts = tuple(range(1, n + 1)) if parts is None else tuple(int(i) for i in parts)
    if not parts or any(not 1 <= i <= n for i in parts):
        raise ValueError(f"parts={parts!r}: expected stripe numbers i in 1..{n} (the paper's i, 1 = top)")
    return parts


# ----------------------------------------------------------------------------- Fig. 6


class RelationMaps(NamedTuple):
    """Per-part activation maps of R_p for N images (see :func:`relation_maps`).

    maps     (N, P, h, w)  A_i = max(0, M_i), on the h x w backbone map
    raw      (N, P, h, w)  M_i = sum_k x_k * d s_i / d x_k (signed, before the clamp)
    energy   (N, P)        s_i = ||R_p(.)_i||^2, the squared norm of the residual of stripe i
    parts    the stripe numbers i (1-based) of the P maps
    rows     (first, stop) rows of every stripe of the scale (all n, not only ``parts``)
    rest_only  True for the R_p(r̄_i) model, False for Eq. (1)'s R_p(T(p̄_i, r̄_i))
    """

    maps: Tensor
    raw: Tensor
    energy: Tensor
    parts: tuple[int, ...]
    rows: list[tuple[int, int]]
    rest_only: bool

    def rest_share(self) -> Tensor:
        """(N, P): the fraction of A_i outside the rows of stripe i; NaN where A_i is all zero
        (e.g. every ReLU of R_p closed: s_i = 0). 1 for the rest-only model whenever the
        stripes do not share rows (n divides h)."""
        own = torch.zeros_like(self.maps)
        for k, i in enumerate(self.parts):
            first, stop = self.rows[i - 1]
            own[:, k, first:stop] = self.maps[:, k, first:stop]
        total = self.maps.sum(dim=(2, 3))
        return torch.where(total > 0, 1 - own.sum(dim=(2, 3)) / total, torch.nan)


def relation_maps(model, images: Tensor, scale: str = "P6", parts=None) -> RelationMaps:
    """Where on the feature map the residual R_p of each stripe i takes its input from.

    The paper's Fig. 6 compares "activation maps" of R_p(r̄_i) (rest-only model) and
    R_p(T(p̄_i, r̄_i)) (Eq. 1) without defining them. This function uses gradient x activation
    of the residual's energy with respect to the backbone feature map x (C x h x w):

        s_i = ||R_p(T(p̄_i, r̄_i))||^2   (or ||R_p(r̄_i)||^2 for the rest-only model)
        M_i(u, v) = sum_k x_k(u, v) * d s_i / d x_k(u, v)
        A_i = max(0, M_i)

    Why this definition. R_p sees x only through the stripe pooling p_j = GMP(stripe j of x)
    (GMP in every relation row of Table 2), so d s_i / d x is non-zero only at the cell where
    a channel has its maximum within a stripe, and there it equals d s_i / d p_jk (split evenly
    between tied cells, which changes nothing below). Hence, summed over the rows of stripe j,

        sum_{(u, v) in stripe j} M_i(u, v) = sum_k p_jk * d s_i / d p_jk,

    the first-order (Taylor) share of s_i that the features pooled from stripe j carry: the
    map says how much each region's pooled features feed the residual, and it is computed
    exactly from the model, with nothing tuned. (Grad-CAM would average the gradient over the
    map per channel first; with GMP every gradient sits on single cells, so that average mostly
    measures which channels are used, not where.) Two facts follow and are tested:

    * rest-only model: s_i depends on stripe i's cells only through r_i = 1/(n-1) sum_{j != i} p_j,
      which does not contain p_i, so M_i is exactly 0 on the rows of stripe i (when stripes do
      not share rows, i.e. when n divides h), and every other stripe j is weighted by the same
      channel vector: sum over stripe j of M_i = 1/(n-1) sum_k p_jk d s_i / d r_ik.
    * Eq. (1): stripe i also enters through p̄_i, so M_i may be non-zero on stripe i itself.

    What it cannot show: it is a first-order, local measure (it says which pooled features the
    residual is sensitive to at this input, not what happens when a region is removed, and the
    clamp hides regions that lower s_i); it shows one cell per channel and stripe, the GMP
    argmax, so it is sparse by construction; it lives on the h x w map (6 x 2 in quick mode, 24
    x 8 at 384 x 128) and is only upsampled for display; and a large residual is not the same
    as a useful one for retrieval.

    ``model``: an ``RRID`` whose head ``scale`` has a relation module (``relation`` True or
    "rest_only"); ``images``: (N, 3, H, W) or (3, H, W) normalised input. The model runs in eval
    mode (BN uses its running statistics, so images do not interact) and gets its mode back.
    """
    if scale not in model.heads:
        raise ValueError(f"relation_maps: scale={scale!r}: expected one of {list(model.heads)}")
    head = model.heads[scale]
    module = head.local
    if not isinstance(module, RelationModule):
        raise ValueError(f"relation_maps: head {scale} has no relation module (RRIDConfig.relation="
                         f"{model.config.relation!r}); expected relation=True or 'rest_only'")
    parts = _parts(parts, head.n)
    images = images[None] if images.ndim == 3 else images
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = model.backbone(images)
        x = x.detach().requires_grad_(True)
        p = stripe_pool(x, head.n, head.local_pool)
        r = module.rest(p)
        raw, energy = [], []
        for i in parts:
            p_bar, r_bar = module.p_layers[i - 1](p[:, i - 1]), module.r_layers[i - 1](r[:, i - 1])
            s = module.relation(i - 1, p_bar, r_bar).square().sum(dim=1)  # (N,): images are independent
            (grad,) = torch.autograd.grad(s.sum(), x, retain_graph=True)
            raw.append((x * grad).sum(dim=1).detach())
            energy.append(s.detach())
    finally:
        model.train(was_training)
    raw = torch.stack(raw, dim=1)
    return RelationMaps(raw.clamp(min=0), raw, torch.stack(energy, dim=1), parts,
                        stripe_rows(x.shape[2], head.n), isinstance(module, RestOnlyRelation))


# ----------------------------------------------------------------------------- chapter 4


def _one(t: Tensor, index: int, ndim: int) -> Tensor:
    """Image ``index`` of a batched tensor (or the tensor itself when it has no batch axis)."""
    t = t.detach()
    return t[index] if t.ndim == ndim + 1 else t


def rest_composition(features: Mapping[str, Tensor] | Tensor, i: int, index: int = 0) -> dict[str, Tensor]:
    """Stripe i and its rest, r_i = 1/(n-1) sum_{j != i} p_j, for one image.

    ``features``: one scale of ``model.forward_features(images)`` (e.g. ``f["P6"]``, with "p"
    and, for a relation model, "p_bar", "r_bar"), or the part features p: (N, n, C) or (n, C).
    Returns ``weights`` (n,): row i of the averaging matrix (0 at stripe i, 1/(n-1) at the
    others), ``p_i``, ``r_i`` (C,) and, when given, ``p_bar_i``, ``r_bar_i`` (c,).
    """
    f = {"p": features} if isinstance(features, Tensor) else dict(features)
    p = _one(f["p"], index, 2)
    n = p.shape[0]
    if n < 2:
        raise ValueError(f"rest_composition: expected at least 2 stripes, got p of shape {tuple(p.shape)}")
    (i,) = _parts([i], n)
    weights = torch.full((n,), 1.0 / (n - 1), dtype=p.dtype)
    weights[i - 1] = 0.0
    out = {"weights": weights, "p_i": p[i - 1], "r_i": RelationModule.rest(p[None])[0, i - 1]}
    for key in ("p_bar", "r_bar"):
        if key in f:
            out[f"{key}_i"] = _one(f[key], index, 2)[i - 1]
    return out


def relation_switch(features: Mapping[str, Tensor], index: int = 0) -> dict[str, Tensor]:
    """q_i with the relation module on (Eq. 1) and off (q_i = p̄_i), same input, same weights.

    ``features``: one scale of ``model.forward_features(images)`` of a model with a relation
    module. Returns (n, c) tensors ``on`` = q, ``off`` = p̄, ``residual`` = q - p̄ (= R_p(...)_i),
    and (n,) norms ``norm_on`` = ||q_i||, ``norm_off`` = ||p̄_i||, ``norm_residual``.
    "Off" removes R_p from the trained model; it is not a model trained without the module.
    """
    if "r_bar" not in features:
        raise ValueError("relation_switch: these features have no r̄ (a model without the relation module); "
                         "expected one scale of forward_features of a model with relation=True or 'rest_only'")
    q, p_bar = _one(features["q"], index, 2), _one(features["p_bar"], index, 2)
    residual = q - p_bar
    return {"on": q, "off": p_bar, "residual": residual, "norm_on": q.norm(dim=1),
            "norm_off": p_bar.norm(dim=1), "norm_residual": residual.norm(dim=1)}


# ----------------------------------------------------------------------------- chapter 5


def gcp_channel(x: Tensor, channel: int, n: int = 6, contrast: str = "official", index: int = 0) -> dict:
    """One channel k of GCP's inputs (Eq. 2) from a feature map x, with n stripes.

    p_i = GMP of stripe i (channel k), p_max = max_i p_i, p_avg = 1/n sum_i p_i and
    p_cont = (sum_i p_i - p_max)/(n-1) (``contrast="official"``, the authors' code) or
    p_avg - p_max (``"paper"``). ``x``: (N, C, H, W) or (C, H, W). Returns floats ``p_max``,
    ``p_avg``, ``p_cont``, a (n,) tensor ``p``, ``max_stripe`` (the i of p_max, 1-based, the
    first on ties), ``cells`` [(row, col)] of each stripe's maximum on x and ``rows``.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"gcp_channel: contrast={contrast!r}: expected one of {list(CONTRASTS)}")
    x = _one(x, index, 3)
    C, H, W = x.shape
    if not 0 <= channel < C:
        raise ValueError(f"gcp_channel: channel={channel!r}: expected 0..{C - 1}")
    rows = stripe_rows(H, n)
    p = stripe_pool(x[None, channel:channel + 1], n, "gmp")[0, :, 0]  # (n,)
    p_max, p_avg = p.max(), p.mean()
    p_cont = (p.sum() - p_max) / (n - 1) if contrast == "official" else p_avg - p_max
    cells = []
    for first, stop in rows:
        r, col = divmod(int(x[channel, first:stop].argmax()), W)
        cells.append((first + r, col))
    return {"p": p, "p_max": float(p_max), "p_avg": float(p_avg), "p_cont": float(p_cont),
            "max_stripe": int(p.argmax()) + 1, "cells": cells, "rows": rows, "contrast": contrast, "n": n}


def global_share(x: Tensor, feature: str = "p_cont", n: int = 6, contrast: str = "official", index: int = 0) -> Tensor:
    """Where a global feature v (C numbers) comes from: (H, W), the share of ||v||_1 that each
    cell (h, w) of the feature map gives. The counterpart of the paper's Fig. 3 for the pooled
    vectors of Table 2's rows 5-8, before their 1 x 1 reductions.

    ``feature``: "gap", "gmp" or "gap+gmp" (v = ``GlobalPooling(feature).pool(x)``, the input of
    q_0 in rows 6, 5, 7), or one of GCP's two inputs (Eq. 2, row 8) from the n GMP stripes,
    ``GlobalContrastivePooling(contrast).contrastive``: "p_max" (= GMP of the whole map) or
    "p_cont" ((sum_i p_i - p_max)/(n-1) with ``contrast="official"``, p_avg - p_max with "paper").

    The contribution of cell (h, w) is gradient x input, computed by autograd on the package's
    own pooling in float64:

        c(h, w) = sum_k x_k(h, w) dv_k / dx_k(h, w)        (v_k depends on channel k of x only)

    Each of these v is a fixed linear combination of means and maxima of x, hence positively
    homogeneous (v(a x) = a v(x) for a > 0), and Euler's theorem makes the contributions add up
    exactly: sum_{h,w} c(h, w) = sum_k v_k (a max split evenly between tied cells, as autograd
    and :func:`pooling_share` do). The map is c / ||v||_1, ||v||_1 = sum_k |v_k| (all zero when
    v is): it sums to 1 for a non-negative v and is :func:`pooling_share` ``(x, 1, mode)[0]`` for
    "gap" and "gmp". The paper's p_cont is never positive and its map is signed (it sums to -1):
    per channel, +p_ik / n at the maximum cell of each stripe i and -(1 - 1/n) p_max,k at the
    cell of p_max. The code's p_cont takes 1/(n-1) of p_ik from the maximum cell of every stripe
    except the one that holds p_max, which gives nothing.

    ``x``: (N, C, H, W) or (C, H, W), non-negative (ResNet's last block ends in a ReLU).
    """
    if feature not in GLOBAL_FEATURES:
        raise ValueError(f"global_share: feature={feature!r}: expected one of {list(GLOBAL_FEATURES)}")
    if contrast not in CONTRASTS:
        raise ValueError(f"global_share: contrast={contrast!r}: expected one of {list(CONTRASTS)}")
    x = _one(x, index, 3).to(torch.float64)
    if (x < 0).any():
        raise ValueError("global_share: expected a non-negative feature map x (the output of a ReLU)")
    C, H, _ = x.shape
    if feature in ("p_max", "p_cont") and not (isinstance(n, int) and 2 <= n <= H):
        raise ValueError(f"global_share: n={n!r} stripes for GCP on a map of {H} rows: expected 2 <= n <= {H}")
    xg = x[None].clone().requires_grad_(True)
    with torch.device("meta"):  # the modules only for their pooling code: no weights, the RNG untouched
        module = GlobalPooling(feature, C, 1) if feature in ("gap", "gmp", "gap+gmp") else \
            GlobalContrastivePooling(C, 1, contrast)
    if isinstance(module, GlobalPooling):
        v = module.pool(xg)[0]
    else:
        p_max, p_cont = module.contrastive(stripe_pool(xg, n, "gmp"))
        v = (p_max if feature == "p_max" else p_cont)[0]
    (grad,) = torch.autograd.grad(v.sum(), xg)
    contribution = (x * grad[0]).sum(dim=0)
    total = v.detach().abs().sum()
    return contribution / total if total > 0 else torch.zeros_like(contribution)


# ----------------------------------------------------------------------------- chapter 2: the network's shapes


def architecture_shapes(config=None, input_size=None, model=None) -> dict:
    """The shapes (batch dimension dropped) of one forward pass of the model, by name.

    Runs a zero image of ``input_size`` (default: the paper's 384 x 128) through
    ``RRID.forward_features`` and ``RRID.forward`` (eval mode, no gradients), with forward
    hooks on the layers the returned dict does not show. Keys: ``"image"`` (3, H, W), ``"x"``
    (C, h, w), ``"embedding"`` (feature_dim,) and per scale ``"P6/..."``: ``stripes`` (the
    rows of each stripe, measured with ``stripe_pool`` itself), every entry of
    ``ScaleHead.features`` (``p`` (n, C), ``p_bar``, ``r_bar``, ``q`` (n, c), ``p_max``,
    ``p_cont`` (C,), ``p_bar_max``, ``p_bar_cont``, ``q0`` (c,)), and from the hooks ``r``
    (r_1, C), ``R_p_in`` / ``R_p_out`` (stripe 1's R_p), ``R_g_in`` / ``R_g_out``,
    ``gcp_in`` (the p_i GCP pools) and ``pooled`` (x pooled by GMP / GAP / GAP+GMP).
    ``model`` (an ``RRID``) is used as it is when given; otherwise one is built from
    ``config`` (an ``RRIDConfig`` or a Table 2 row number) on PyTorch's "meta" device, which
    runs every layer's shape logic without computing anything (a second for ResNet-50).
    """
    if model is None:
        config = RRIDConfig.table2(config) if isinstance(config, int) else (config or RRIDConfig())
        with torch.device("meta"):  # shapes without arithmetic: the same code, no weights, no time
            model = RRID(dataclasses.replace(config, pretrained=False), num_classes=1)
    height, width = input_size or (384, 128)
    shapes: dict = {}
    hooks = _shape_hooks(model, shapes)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        image = torch.zeros(1, 3, height, width, device=device)
        with torch.no_grad():
            feats = model.forward_features(image)
            embedding = model(image)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    shapes["image"] = (3, height, width)
    shapes["x"] = tuple(feats["x"].shape[1:])
    shapes["embedding"] = tuple(embedding.shape[1:])
    rows = torch.arange(shapes["x"][1], dtype=torch.float32).view(1, 1, -1, 1)
    for scale, f in feats.items():
        if scale == "x":
            continue
        n = model.heads[scale].n
        top, bottom = -stripe_pool(-rows, n, "gmp")[0, :, 0], stripe_pool(rows, n, "gmp")[0, :, 0]
        shapes[f"{scale}/stripes"] = tuple(int(b - t + 1) for t, b in zip(top, bottom))
        shapes.update({f"{scale}/{k}": tuple(v.shape[1:]) for k, v in f.items()})
    return shapes


def _shape_hooks(model, shapes: dict) -> list:
    """Forward hooks that write the input or output shape of the layers inside each head into
    ``shapes`` (``"P6/r"``, ``"P6/R_p_in"``, ...); returns their handles."""
    hooks = []

    def hook(name, take):
        def record(module, inputs, output):
            shapes[name] = tuple((inputs[0] if take == "in" else output).shape[1:])
        return record

    for scale, head in model.heads.items():
        local, glob = head.local, head.glob
        for attr, index, name, take in (("r_layers", 0, "r", "in"), ("R_p", 0, "R_p_in", "in"),
                                        ("R_p", 0, "R_p_out", "out")):
            layers = getattr(local, attr, None)
            if layers is not None:
                hooks.append(layers[index].register_forward_hook(hook(f"{scale}/{name}", take)))
        if glob is not None and hasattr(glob, "R_g"):
            hooks.append(glob.register_forward_hook(hook(f"{scale}/gcp_in", "in")))
            hooks.append(glob.R_g.register_forward_hook(hook(f"{scale}/R_g_in", "in")))
            hooks.append(glob.R_g.register_forward_hook(hook(f"{scale}/R_g_out", "out")))
        elif glob is not None and hasattr(glob, "layer"):
            hooks.append(glob.layer.register_forward_hook(hook(f"{scale}/pooled", "in")))
    return hooks


# ----------------------------------------------------------------------------- chapters 3 and 8: the backbone map


class BackboneMarks(NamedTuple):
    """The backbone's map of one image, and where each stripe's peak and GMP cell are."""

    x: Tensor                          # (C, h, w) float64: the backbone's feature map
    activation: Tensor                 # (h, w): its channel sum, sum_k x_k(h, w)
    rows: list[tuple[int, int]]        # (first, stop) row of each stripe (stripe_rows)
    peaks: list[tuple[int, int]]       # (row, column) of the channel sum's largest cell in each stripe
    gmp_cells: list[tuple[int, int]]   # (row, column) of the cell holding the most channel maxima (gmp_holders)
    shares: list[float]                # that cell's share of the stripe's channels


def backbone_marks(model, image: Tensor, n: int = 6) -> BackboneMarks:
    """Where ``model.backbone`` responds on one image, and where GMP reads each of ``n`` stripes.

    ``image``: (3, H, W) or (N, 3, H, W) (the first is used), normalised, on any device (it is
    moved to the model's). The backbone runs in eval mode without gradients, and the model gets
    its mode back. Per stripe i (rows
    :func:`stripe_rows`): the peak of the channel sum sum_k x_k(h, w), the brightest cell of the
    picture, which is *not* the cell GMP picks (GMP picks one cell per channel); and the cell
    with the largest count of :func:`gmp_holders`, the cell GMP reads most often, with its share
    of the stripe's counts. Ties go to the first cell in row-major order.
    """
    was_training = model.training
    model.eval()
    weight = next(model.parameters(), None)
    if weight is not None:
        image = image.to(weight.device)                                 # the model's device (a GPU in full mode)
    try:
        with torch.inference_mode():
            fmap = model.backbone(image.unsqueeze(0) if image.ndim == 3 else image[:1])
    finally:
        model.train(was_training)
    x = fmap[0].detach().cpu().double()                                # (C, h, w)
    activation = x.sum(0)
    holders = gmp_holders(x, n)                                        # (n, h, w)
    rows = stripe_rows(x.shape[1], n)
    peaks, cells, shares = [], [], []
    for i, (top, bottom) in enumerate(rows):
        peaks.append(_argmax_cell(activation[top:bottom], top))
        stripe = holders[i, top:bottom]
        cells.append(_argmax_cell(stripe, top))
        shares.append(float(stripe.max() / stripe.sum().clamp(min=1e-12)))
    return BackboneMarks(x, activation, rows, peaks, cells, shares)


def _argmax_cell(values: Tensor, top: int) -> tuple[int, int]:
    """(row, column) of the first largest entry of a (rows, w) block whose first row is ``top``."""
    row, col = divmod(int(values.flatten().argmax()), values.shape[1])
    return top + row, col


# ----------------------------------------------------------------------------- chapters 6 and 11: augmentation


def augmentation_samples(images, erasing="official", height: int = 384, width: int = 128, seed: int = 0,
                         flip: bool = True) -> list:
    """The training transform applied once to each PIL image, seeded: a list of
    ``rrid.data.transforms.Augmented`` (the tensor, whether it was flipped, the erased box).

    Torch's global RNG is forked, seeded with ``seed`` and restored afterwards, so the result
    depends on ``seed`` only and the caller's random state is untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return [observe_train_transform(img, height, width, erasing, flip) for img in images]
