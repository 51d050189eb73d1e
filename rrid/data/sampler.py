"""P x K batches for the batch-hard triplet loss: P identities, K images of each (the paper's
N_K x N_M: 16 x 4).

Two epoch lengths:

* ``"official"`` (default), as the authors' code: every training image is an *anchor* once
  per epoch, in a random order; each anchor brings K - 1 more images of its identity
  (sampled with replacement when the identity has fewer than K images). An epoch is
  |train| / P batches of P K images, about K = 4 times a "see every image once" epoch.
  The authors' code runs the paper's schedule (80 epochs, lr decay at 40 and 60) on these
  long epochs: about 65,000 iterations on all of Market-1501's training set (751
  identities, 12,936 images); with "once" epochs the same schedule would train four
  times shorter (the book's chapters on losses and on the paper vs. the authors' code
  count it).
* ``"once"``, as torchreid's identity sampler: each identity's images are shuffled and cut
  into chunks of K (the last one filled up with repeats), and batches take one chunk
  from each of P random identities; about |train| / (P K) batches, each image about once.

Batches depend on (seed, epoch) only, never on the global RNG. Every rank generates the
same global list and takes batches r, r + world_size, ... (the remainder that does not
divide evenly is dropped, so all ranks run the same number of steps). ``set_epoch(epoch,
start_batch)`` and ``state_dict`` / ``load_state_dict`` give an exact resume mid-epoch.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

EPOCH_LENGTHS = ("official", "once")


def _labels(pids) -> np.ndarray:
    """Accept labels, records with ``.pid``, or a data set with ``.train``."""
    if hasattr(pids, "train"):
        pids = pids.train
    return np.array([getattr(p, "pid", p) for p in pids], dtype=np.int64)


class PKSampler(Sampler[list[int]]):
    """Batch sampler yielding lists of P * K dataset indices: P distinct identities x K images.

    ``pids[i]`` is the identity of training image i. Use as ``DataLoader(batch_sampler=...)``.
    """

    def __init__(self, pids: Sequence[int], p: int = 16, k: int = 4, epoch_length: str = "official",
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        self.pids = _labels(pids)
        if epoch_length not in EPOCH_LENGTHS:
            raise ValueError(f"epoch_length must be one of {EPOCH_LENGTHS}, got {epoch_length!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.ids = np.unique(self.pids)
        if p < 1 or k < 1 or p > len(self.ids):
            raise ValueError(f"need 1 <= p <= number of identities ({len(self.ids)}) and k >= 1, got p={p}, k={k}")
        self.p, self.k, self.epoch_length = p, k, epoch_length
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.index_of = {pid: np.flatnonzero(self.pids == pid) for pid in self.ids}
        self.epoch, self.start_batch = 0, 0
        self._position = 0  # batches of this rank's epoch handed out so far

    # ---- the global list of batches for one epoch ------------------------------------
    def num_global_batches(self) -> int:
        n = len(self.pids) // self.p if self.epoch_length == "official" else len(self.pids) // (self.p * self.k)
        return max(n, 1)

    def global_batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` (before the split over ranks); a function of (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        make = self._official if self.epoch_length == "official" else self._once
        return make(rng, self.num_global_batches())

    def _companions(self, rng, anchor: int) -> list[int]:
        """The anchor and K - 1 more images of its identity (with replacement if too few)."""
        same = self.index_of[self.pids[anchor]]
        others = same[same != anchor]
        if len(others) >= self.k - 1:
            extra = rng.choice(others, self.k - 1, replace=False)
        else:
            extra = rng.choice(same, self.k - 1, replace=True)
        return [int(anchor)] + [int(i) for i in extra]

    def _official(self, rng, n_batches: int) -> list[list[int]]:
        order = list(rng.permutation(len(self.pids))[::-1])  # pop() from the end = permutation order
        deferred: list[int] = []  # anchors whose identity was already in the batch being built
        batches = []
        for _ in range(n_batches):
            anchors, seen, keep = [], set(), []
            candidates = iter(deferred)
            while len(anchors) < self.p:
                a = next(candidates, None)
                if a is None:
                    if not order:
                        break
                    a = order.pop()
                if self.pids[a] in seen:
                    keep.append(a)
                else:
                    seen.add(self.pids[a])
                    anchors.append(int(a))
            keep += list(candidates)  # deferred anchors not looked at yet stay deferred
            deferred = keep
            while len(anchors) < self.p:  # the permutation ran dry: fill with unseen identities
                pid = rng.choice([i for i in self.ids if i not in seen])
                seen.add(pid)
                anchors.append(int(rng.choice(self.index_of[pid])))
            batches.append([i for a in anchors for i in self._companions(rng, a)])
        return batches

    def _once(self, rng, n_batches: int) -> list[list[int]]:
        chunks: dict[int, list[list[int]]] = {pid: [] for pid in self.ids}

        def refill():
            for pid, idx in self.index_of.items():
                idx = rng.permutation(idx)
                if len(idx) % self.k:
                    idx = np.concatenate([idx, rng.choice(idx, self.k - len(idx) % self.k, replace=True)])
                chunks[pid] += [[int(i) for i in c] for c in idx.reshape(-1, self.k)]

        batches = []
        while len(batches) < n_batches:
            ready = [pid for pid in self.ids if chunks[pid]]
            if len(ready) < self.p:  # too few identities left: start another pass
                refill()
                continue
            chosen = rng.choice(ready, self.p, replace=False)
            batches.append([i for pid in chosen for i in chunks[pid].pop()])
        return batches

    # ---- this rank's share --------------------------------------------------------------
    def __len__(self) -> int:
        """Batches this rank yields in a full epoch."""
        return self.num_global_batches() // self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        mine = self.global_batches(self.epoch)[self.rank : len(self) * self.world_size : self.world_size]
        self._position = self.start_batch
        for batch in mine[self.start_batch :]:
            self._position += 1
            yield batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch; ``start_batch`` skips this rank's first batches (resume)."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be in [0, {len(self)}], got {start_batch}")
        self.epoch, self.start_batch, self._position = epoch, start_batch, start_batch

    def state_dict(self, batches_done: int | None = None) -> dict:
        """What a resume needs. ``batches_done``: steps of this epoch the trainer finished.

        Without it, the number of batches this sampler handed out is used; a DataLoader with
        workers fetches batches ahead, so a trainer should pass its own step count.
        """
        return dict(seed=self.seed, epoch=self.epoch, start_batch=self._position if batches_done is None else batches_done,
                    p=self.p, k=self.k, epoch_length=self.epoch_length, world_size=self.world_size,
                    num_samples=len(self.pids))

    def load_state_dict(self, state: dict) -> None:
        for key in ("p", "k", "epoch_length", "world_size", "num_samples"):
            mine = len(self.pids) if key == "num_samples" else getattr(self, key)
            if state.get(key) != mine:
                raise ValueError(f"PKSampler state has {key}={state.get(key)!r} but this sampler has {key}={mine!r}; "
                                 "resume needs the same p, k, epoch_length, world_size and training set")
        self.seed = state["seed"]
        self.set_epoch(state["epoch"], state["start_batch"])
