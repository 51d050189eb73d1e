"""The batch-hard triplet loss and RRID's total loss against brute-force computations.

Numerical comparisons run in float64, where rounding (~1e-16) is far below the default
tolerance of assert_close (1e-7): only a wrong formula can exceed it.
"""

import math

import pytest
import torch

from rrid.losses import RRIDLoss, TripletLoss, batch_hard_triplet_loss, pairwise_euclidean
from rrid.model import RRIDOutput

PK_LABELS = torch.tensor([3, 3, 3, 7, 7, 7, 1, 1, 1, 5, 5, 5])  # P = 4 identities x K = 3


def brute_force_triplet(x, labels, margin):
    """Eq. 6 anchor by anchor with Python loops and math.dist."""
    rows = x.tolist()
    losses = []
    for a in range(len(rows)):
        pos = [math.dist(rows[a], rows[b]) for b in range(len(rows)) if b != a and labels[b] == labels[a]]
        neg = [math.dist(rows[a], rows[b]) for b in range(len(rows)) if labels[b] != labels[a]]
        losses.append(max(0.0, margin + max(pos) - min(neg)))
    return losses


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("margin", [0.3, 1.2])
def test_triplet_equals_brute_force(seed, margin):
    x = torch.randn(12, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    expected = torch.tensor(brute_force_triplet(x, PK_LABELS.tolist(), margin), dtype=torch.float64)
    assert expected.gt(0).any()  # the hinge is active for some anchors, so the test compares distances
    torch.testing.assert_close(batch_hard_triplet_loss(x, PK_LABELS, margin, "none"), expected)
    torch.testing.assert_close(batch_hard_triplet_loss(x, PK_LABELS, margin, "mean"), expected.mean())
    torch.testing.assert_close(batch_hard_triplet_loss(x, PK_LABELS, margin, "sum"), expected.sum())
    torch.testing.assert_close(batch_hard_triplet_loss(x, PK_LABELS, margin), expected.mean())  # default: mean


def test_triplet_is_zero_when_classes_are_separated_beyond_the_margin():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    x = centres.repeat_interleave(3, dim=0) + 0.1 * torch.rand(12, 2, generator=g)  # diameter < 0.15, gaps > 9.8
    labels = torch.arange(4).repeat_interleave(3)
    assert batch_hard_triplet_loss(x, labels, margin=1.2, reduction="sum").item() == 0.0
    # bring two classes within the margin and the loss appears, for exactly their anchors
    x[3:6] -= torch.tensor([9.5, 0.0])
    per_anchor = batch_hard_triplet_loss(x, labels, margin=1.2, reduction="none")
    assert per_anchor[:6].gt(0).all() and per_anchor[6:].eq(0).all()


def test_triplet_gradient_is_finite_with_duplicate_embeddings():
    x = 0.1 * torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    x = x.repeat_interleave(2, dim=0).requires_grad_()  # d_ap = 0, d_an < margin
    loss = batch_hard_triplet_loss(x, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    d = pairwise_euclidean(x.detach())
    assert d[0, 1] == d[2, 3] == d.diagonal().max() < 2e-6  # sqrt(eps): duplicates are exactly 0 apart


def test_triplet_needs_positives_and_negatives():
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="PKSampler"):
        batch_hard_triplet_loss(x, torch.tensor([0, 0, 1, 2]))  # identities 1 and 2 have no positive
    with pytest.raises(ValueError, match="negative"):
        batch_hard_triplet_loss(x, torch.tensor([0, 0, 0, 0]))
    with pytest.raises(ValueError, match="reduction"):
        batch_hard_triplet_loss(x, torch.tensor([0, 0, 1, 1]), reduction="max")
    with pytest.raises(ValueError, match="mode"):
        TripletLoss(mode="joint")


def test_triplet_separate_sums_and_concat_concatenates():
    g = torch.Generator().manual_seed(0)
    embs = [torch.randn(12, 4, generator=g, dtype=torch.float64) for _ in range(3)]  # float64: rounding ~1e-16
    separate = TripletLoss(margin=1.2)(embs, PK_LABELS)
    concat = TripletLoss(margin=1.2, mode="concat")(embs, PK_LABELS)
    torch.testing.assert_close(separate, sum(batch_hard_triplet_loss(e, PK_LABELS, 1.2) for e in embs))
    torch.testing.assert_close(concat, batch_hard_triplet_loss(torch.cat(embs, 1), PK_LABELS, 1.2))
    assert not torch.isclose(separate, concat)


def cross_entropy_by_hand(logits, labels, smoothing=0.0):
    log_p = logits - logits.exp().sum(1, keepdim=True).log()
    K = logits.shape[1]
    target = torch.full_like(log_p, smoothing / K)
    target[torch.arange(len(labels)), labels] += 1 - smoothing
    return -(target * log_p).sum(1).mean()


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_rrid_loss_is_triplet_plus_two_ce(smoothing):
    # float64 throughout: the default tolerance (1e-7) then measures the formula, not rounding
    g = torch.Generator().manual_seed(0)
    f64 = dict(generator=g, dtype=torch.float64, requires_grad=True)
    embs = [torch.randn(12, 6, **f64) for _ in range(3)]
    logits = [torch.randn(12, 5, **f64) for _ in range(4)]
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 4, 4, 4])
    loss, parts = RRIDLoss(label_smoothing=smoothing)(RRIDOutput(embs, logits), labels)

    triplet = sum(torch.tensor(brute_force_triplet(e.detach(), labels.tolist(), 1.2), dtype=torch.float64).mean()
                  for e in embs)
    ce = sum(cross_entropy_by_hand(lg.detach(), labels, smoothing) for lg in logits)
    acc = sum((lg.argmax(1) == labels).float().mean() for lg in logits) / len(logits)
    torch.testing.assert_close(loss.detach(), triplet + 2 * ce)
    torch.testing.assert_close(parts["triplet"], triplet)
    torch.testing.assert_close(parts["ce"], ce)
    torch.testing.assert_close(parts["acc"], acc)
    torch.testing.assert_close(parts["total"], loss.detach())
    assert set(parts) == {"total", "triplet", "ce", "acc"} and not any(v.requires_grad for v in parts.values())
    loss.backward()
    assert all(t.grad is not None for t in embs + logits)
