"""RRID's training loss (Eq. 3): L = L_triplet + λ L_ce, λ = 2.

L_triplet is the batch-hard triplet loss of Hermans et al. (2017) (Eq. 6), applied to every
256-d feature q_i, q_0 separately and summed (authors' code) or once to their concatenation.
L_ce sums the batch-mean cross-entropy of every classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REDUCTIONS = ("mean", "sum", "none")
TRIPLET_MODES = ("separate", "concat")


def pairwise_euclidean(x: Tensor, eps: float = 1e-12) -> Tensor:
    """d_ab = ||x_a - x_b||_2 for x: (N, D) -> (N, N).

    Computed from the differences (exact zeros for identical rows, unlike the expansion
    |a|² + |b|² - 2ab, whose rounding error in float32 is ~1e-4 |a|); the batch is small, so
    the (N, N, D) difference tensor is cheap. The squared distance is clamped at ``eps``
    before the square root, so identical rows give d = sqrt(eps) with zero gradient instead
    of the NaN of sqrt'(0).
    """
    d2 = (x[:, None, :] - x[None, :, :]).pow(2).sum(dim=2)
    return d2.clamp_min(eps).sqrt()


def check_pk_batch(labels: Tensor) -> None:
    """Every anchor needs a positive (another image of its identity) and a negative (an image of
    another identity); a ValueError otherwise. This reads the labels on the host (one GPU sync)."""
    same = labels[:, None] == labels[None, :]
    positive = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    if not (positive.any(dim=1).all() and (~same).any(dim=1).all()):
        raise ValueError(
            "batch_hard_triplet_loss: every anchor needs a positive (another image of its identity) and a "
            f"negative (an image of another identity); got labels {labels.tolist()}. "
            "Sample P >= 2 identities x K >= 2 images each (PKSampler)."
        )


def batch_hard_triplet_loss(
    embeddings: Tensor, labels: Tensor, margin: float = 1.2, reduction: str = "mean", check: bool = True
) -> Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017; the paper's Eq. 6).

    For every anchor a in the batch:
        loss_a = relu(margin + max_{p: y_p = y_a, p != a} d(a, p) - min_{n: y_n != y_a} d(a, n))
    with Euclidean d. The hardest positive is taken over the *other* images of the anchor's
    identity. ``reduction``: "mean" (authors' code) | "sum" | "none" (a loss per anchor).
    Every identity in the batch needs at least two images and the batch at least two
    identities, which a PK sampler with P >= 2, K >= 2 provides; ``check`` verifies it
    (:func:`check_pk_batch`, a host sync: the training loop checks once per epoch).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}: expected one of {list(REDUCTIONS)}")
    if embeddings.dim() != 2 or labels.shape != embeddings.shape[:1]:
        shapes = f"{tuple(embeddings.shape)} and {tuple(labels.shape)}"
        raise ValueError(f"batch_hard_triplet_loss: expected embeddings (N, D) and labels (N,), got {shapes}")
    if check:
        check_pk_batch(labels)
    same = labels[:, None] == labels[None, :]
    positive = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    negative = ~same
    d = pairwise_euclidean(embeddings)
    d_ap = d.masked_fill(~positive, float("-inf")).amax(dim=1)
    d_an = d.masked_fill(~negative, float("inf")).amin(dim=1)
    loss = F.relu(margin + d_ap - d_an)
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


class TripletLoss(nn.Module):
    """Batch-hard triplet loss over a list of embeddings.

    mode="separate" (authors' code): sum_k L_triplet(q^(k)) over the 256-d features q^(k);
    mode="concat": L_triplet(T(q^(1), ..., q^(K))) on the concatenated representation.
    """

    def __init__(self, margin: float = 1.2, mode: str = "separate"):
        super().__init__()
        if mode not in TRIPLET_MODES:
            raise ValueError(f"TripletLoss(mode={mode!r}): expected one of {list(TRIPLET_MODES)}")
        self.margin, self.mode = margin, mode

    def forward(self, embeddings: list[Tensor] | Tensor, labels: Tensor, check: bool = True) -> Tensor:
        if isinstance(embeddings, Tensor):
            embeddings = [embeddings]
        if check:                                  # once for all the features, not once per feature
            check_pk_batch(labels)
        if self.mode == "concat":
            return batch_hard_triplet_loss(torch.cat(list(embeddings), dim=1), labels, self.margin, check=False)
        return sum(batch_hard_triplet_loss(e, labels, self.margin, check=False) for e in embeddings)


def _at_least_float32(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class RRIDLoss(nn.Module):
    """L = L_triplet + λ L_ce (Eq. 3), from an ``RRIDOutput``.

    L_triplet: ``TripletLoss(margin, triplet_mode)`` over ``output.embeddings``.
    L_ce: sum over classifiers of the batch-mean cross-entropy (``label_smoothing`` as in
    torch's ``cross_entropy``; 0 in the paper). ``crit(output, labels)`` returns the total and
    ``parts``: detached scalars {"total", "triplet", "ce", "acc"}, acc being the top-1
    training accuracy averaged over the classifiers. ``check=False`` skips the batch check
    (:func:`check_pk_batch`), the loss's only host sync.
    """

    def __init__(
        self, margin: float = 1.2, ce_weight: float = 2.0, label_smoothing: float = 0.0, triplet_mode: str = "separate"
    ):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"RRIDLoss(label_smoothing={label_smoothing!r}): expected a value in [0, 1)")
        self.triplet = TripletLoss(margin, triplet_mode)
        self.ce_weight, self.label_smoothing = ce_weight, label_smoothing

    def forward(self, output, labels: Tensor, check: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        embeddings = [_at_least_float32(e) for e in output.embeddings]    # no half-precision losses under autocast
        all_logits = [_at_least_float32(logits) for logits in output.logits]
        triplet = self.triplet(embeddings, labels, check=check)
        ce = sum(F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing) for logits in all_logits)
        total = triplet + self.ce_weight * ce
        with torch.no_grad():
            acc = torch.stack([(logits.argmax(dim=1) == labels).float().mean() for logits in all_logits]).mean()
        parts = {"total": total.detach(), "triplet": triplet.detach(), "ce": ce.detach(), "acc": acc}
        return total, parts


class SoftmaxLoss(nn.Module):
    """Plain identity classification, ``F.cross_entropy(logits, labels)``, with the parts
    ``rrid.train.train_step`` reports (no triplet term): how the head-only ablation pre-trains its
    backbone, and the bare ResNet-50 baseline of ``benchmarks/train_step.py``."""

    def forward(self, logits: Tensor, labels: Tensor, check: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        loss = F.cross_entropy(_at_least_float32(logits), labels)
        with torch.no_grad():
            acc = (logits.argmax(1) == labels).float().mean()
        return loss, {"total": loss.detach(), "triplet": torch.zeros((), device=loss.device), "ce": loss.detach(),
                      "acc": acc}


__all__ = ["pairwise_euclidean", "check_pk_batch", "batch_hard_triplet_loss", "TripletLoss", "RRIDLoss", "SoftmaxLoss"]
