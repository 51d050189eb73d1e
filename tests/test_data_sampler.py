"""PKSampler: composition, determinism, ranks, resume, epoch lengths."""

from collections import Counter

import numpy as np
import pytest
import torch

from rrid.data import PKSampler

# 20 identities with 1..7 images each (a few have fewer than K = 4)
PIDS = [pid for pid in range(20) for _ in range(1 + pid % 7)]


def test_batch_composition():
    s = PKSampler(PIDS, p=5, k=4)
    batches = list(s)
    assert len(batches) == len(s) == len(PIDS) // 5
    for b in batches:
        assert len(b) == 20
        ids = [PIDS[i] for i in b]
        assert Counter(ids) == {pid: 4 for pid in set(ids)} and len(set(ids)) == 5
        for j in range(0, 20, 4):  # each group of K is one identity
            assert len({PIDS[i] for i in b[j:j + 4]}) == 1
    # identities with >= 4 images never repeat an image within a group; the rest repeat
    for b in batches:
        for j in range(0, 20, 4):
            group = b[j:j + 4]
            if PIDS.count(PIDS[group[0]]) >= 4:
                assert len(set(group)) == 4


def test_official_epoch_takes_every_image_as_anchor():
    s = PKSampler(PIDS, p=5, k=4)
    anchors = [b[j] for b in s for j in range(0, 20, 4)]
    assert len(anchors) == len(set(anchors)) == len(PIDS) // 5 * 5  # each at most once, all but the remainder
    assert len(PKSampler(PIDS, p=5, k=4, epoch_length="once")) == len(PIDS) // 20


def test_once_epoch_sees_each_image_about_once():
    pids = [pid for pid in range(40) for _ in range(8)]
    s = PKSampler(pids, p=4, k=4, epoch_length="once")
    seen = Counter(i for b in s for i in b)
    assert len(s) == 20 and sum(seen.values()) == 320 and max(seen.values()) == 1


def test_deterministic_and_independent_of_global_rng():
    a = PKSampler(PIDS, p=4, k=4, seed=3)
    torch.manual_seed(0); np.random.seed(0)
    first = list(a)
    torch.manual_seed(123); np.random.seed(123)
    assert list(PKSampler(PIDS, p=4, k=4, seed=3)) == first
    a.set_epoch(1)
    assert list(a) != first
    assert list(PKSampler(PIDS, p=4, k=4, seed=4)) != first


@pytest.mark.parametrize("epoch_length", ["official", "once"])
def test_ranks_are_disjoint_and_equal(epoch_length):
    full = PKSampler(PIDS, p=3, k=2, epoch_length=epoch_length, seed=1).global_batches(0)
    ranks = [list(PKSampler(PIDS, p=3, k=2, epoch_length=epoch_length, seed=1, rank=r, world_size=3)) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1 and len(ranks[0]) == len(full) // 3
    for r in range(3):
        assert ranks[r] == full[r: 3 * len(ranks[0]): 3]
    positions = [full.index(b) for r in ranks for b in r]
    assert len(set(positions)) == 3 * len(ranks[0])


@pytest.mark.parametrize("epoch_length", ["official", "once"])
def test_exact_resume_mid_epoch(epoch_length):
    s = PKSampler(PIDS, p=2, k=2, epoch_length=epoch_length, seed=7, rank=1, world_size=2)
    s.set_epoch(2)
    it = iter(s)
    head = [next(it) for _ in range(3)]
    state = s.state_dict()
    rest = list(it)
    t = PKSampler(PIDS, p=2, k=2, epoch_length=epoch_length, seed=0, rank=1, world_size=2)
    t.load_state_dict(state)
    assert state["start_batch"] == 3 and list(t) == rest
    s.set_epoch(2)
    assert list(s) == head + rest


def test_load_state_checks_compatibility():
    state = PKSampler(PIDS, p=4, k=4).state_dict()
    with pytest.raises(ValueError, match="k=4.*k=2"):
        PKSampler(PIDS, p=4, k=2).load_state_dict(state)
    with pytest.raises(ValueError, match="world_size"):
        PKSampler(PIDS, p=4, k=4, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="p <= number of identities"):
        PKSampler(PIDS, p=21, k=4)
