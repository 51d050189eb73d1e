"""Where and how the numbers are computed: device, mixed precision, threads, seeds, processes.

Everything here is the same for training, evaluation and the ablation:

* :func:`pick_device` turns ``train.device`` ("auto", "cpu", "cuda", "cuda:N", "mps") into a
  ``torch.device``; :func:`amp_dtype` turns ``train.amp`` into the autocast dtype of that device
  (bf16 only where cuDNN has bf16 convolutions, compute capability 8.0 and up; fp16 below);
  :func:`autocast` applies it.
* :func:`torch_settings` sets threads, deterministic algorithms and cudnn's benchmark mode for a
  run and restores the previous values after; :func:`threads` only the thread count;
  :func:`full_float32` turns TF32 off for a comparison that float32's rounding bounds.
* :func:`seed_everything`, :func:`batch_seed`, :func:`rng_state` / :func:`set_rng_state`: the
  random generators a run draws from, and their state in a checkpoint.
* :func:`distributed`: the process group of a ``torchrun`` launch (rank, world size, device).
* :func:`on_colab`: whether this process runs on a Google Colab VM (whose disk a disconnect wipes).
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import random
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from rrid.errors import ConfigError, UserError

__all__ = ["pick_device", "amp_dtype", "autocast", "torch_settings", "threads", "seed_everything", "batch_seed",
           "rng_state", "set_rng_state", "Distributed", "distributed", "COLLECTIVE_TIMEOUT", "on_colab",
           "full_float32"]

AMP_MODES = ("auto", "bf16", "fp16", "off")
# Collectives (a barrier while rank 0 evaluates, with re-ranking; a broadcast while rank 0 fetches
# the ImageNet weights) may wait far longer than torch's default of 10 minutes.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)
T = TypeVar("T")


# ----------------------------------------------------------------------------- device and precision

def on_colab() -> bool:
    """True on a Google Colab VM: in its notebook kernel (``google.colab`` imported) and in the
    commands a cell starts (``!python -m rrid ...``), which inherit Colab's ``COLAB_*`` variables."""
    return "google.colab" in sys.modules or any(key.startswith("COLAB_") for key in os.environ)


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``train.device`` as a ``torch.device``: "auto" is CUDA when present, else the CPU; plain
    "cuda" is the process's own GPU under ``torchrun`` (``local_rank``). A device this machine
    does not have is a ``ConfigError`` (one line) rather than a failure deep inside torch."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name}: this machine has no CUDA GPU (or torch was built without "
                              "CUDA); use --device cpu or train.device=auto")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device={name}: there are {torch.cuda.device_count()} CUDA device(s) here "
                              f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device=mps: MPS is not available on this machine; use cpu or auto")
    return device


def bf16_convolutions(device: torch.device) -> bool:
    """Whether cuDNN runs bf16 convolutions natively on ``device``: compute capability 8.0 (Ampere)
    and up. ``torch.cuda.is_bf16_supported()`` also reports True below it (emulated bf16), where
    ResNet-50 would fall back to slow native convolutions (Colab's T4, V100, P100)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def amp_dtype(mode: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of ``train.amp`` on ``device`` (None: full float32).

    "auto": bf16 on CUDA GPUs of compute capability >= 8.0, fp16 (with a gradient scaler) on older
    ones, off on the CPU and MPS. "bf16" / "fp16" force the dtype; "off" disables autocast.
    """
    if mode not in AMP_MODES:
        raise ConfigError(f"train.amp: expected one of {list(AMP_MODES)}, got {mode!r}")
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if bf16_convolutions(device) else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` on ``device`` with ``dtype``; disabled when ``dtype`` is None."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


# ----------------------------------------------------------------------------- threads and determinism

@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (0: leave the current number)."""
    saved = torch.get_num_threads()
    try:
        if n:
            torch.set_num_threads(n)
        yield
    finally:
        torch.set_num_threads(saved)


@contextlib.contextmanager
def torch_settings(train, device: torch.device) -> Iterator[None]:
    """Threads (``train.num_threads``), deterministic algorithms (``train.deterministic``: "auto" is
    on for the CPU) and cudnn's benchmark mode for a run; the previous values come back after."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic)
    deterministic = train.deterministic == "on" or (train.deterministic == "auto" and device.type == "cpu")
    try:
        with threads(train.num_threads):
            torch.use_deterministic_algorithms(deterministic, warn_only=True)
            torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic
            torch.backends.cudnn.deterministic = deterministic
            yield
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[1], saved[2]


# ----------------------------------------------------------------------------- random generators

@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """float32 convolutions and matrix products in full float32 precision: TF32 off for cuDNN and
    cuBLAS (on by default for cuDNN convolutions on GPUs of compute capability 8.0 and up, where it
    keeps 10 bits of the mantissa: differences of 1e-3 relative instead of float32's 1e-7). The
    previous settings come back after; on the CPU nothing changes."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (augmentation draws from them)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batch_seed(seed: int, epoch: int, batch: int, rank: int = 0) -> int:
    """The seed of batch ``batch`` of ``epoch`` on ``rank`` (batch -1: the loader's start)."""
    return int(np.random.SeedSequence([seed, epoch, batch + 1, rank]).generate_state(1)[0])


def rng_state(loader_generator: Optional[torch.Generator], device: torch.device) -> dict:
    """Every generator a run draws from, as tensors and numbers (``weights_only`` loads them):
    Python's, NumPy's, torch's CPU one, the CUDA one of ``device`` only (a run saved on two GPUs
    resumes on one) and the loader's."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": torch.tensor(py[1], dtype=torch.int64), "python_version": py[0],
        "python_gauss": py[2] if py[2] is not None else float("nan"),
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]), "numpy_gauss": float(np_state[4]),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def set_rng_state(state: dict, loader_generator: Optional[torch.Generator], device: torch.device) -> None:
    """Restore what :func:`rng_state` saved. The CUDA state goes to ``device``; checkpoints of
    older versions saved a list with one state per visible GPU: the first is used."""
    gauss = state["python_gauss"]
    random.setstate((state["python_version"], tuple(state["python"].tolist()), None if math.isnan(gauss) else gauss))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda[0] if isinstance(cuda, (list, tuple)) else cuda, device)
    if "loader" in state and loader_generator is not None:
        loader_generator.set_state(state["loader"])


# ----------------------------------------------------------------------------- processes

@dataclass(frozen=True)
class Distributed:
    """This process's place in a run: ``rank`` of ``world`` processes, computing on ``device``."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files, evaluates and downloads."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast(self, value):
        """``value`` of rank 0, on every rank (any picklable object)."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def main_first(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0, then on the other ranks: what rank 0 writes once (a generated data
        set, downloaded weights) the others then read. An error a user can fix raised on rank 0 is
        raised on every rank (no rank waits forever at a barrier for a rank that stopped)."""
        result, problem = None, None
        if self.main:
            try:
                result = fn()
            except UserError as e:
                problem = e
        problem = self.broadcast(problem)
        if problem is not None:
            raise problem
        return result if self.main else fn()


@contextlib.contextmanager
def distributed(device_name: str = "auto") -> Iterator[Distributed]:
    """The process group of a ``torchrun`` launch (``WORLD_SIZE`` > 1: NCCL on CUDA, gloo on the
    CPU, with :data:`COLLECTIVE_TIMEOUT`), torn down at the end if this call created it; a single
    process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    created = world > 1 and not dist.is_initialized()
    if created:
        cuda = torch.cuda.is_available() and not device_name.startswith("cpu")
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
    try:
        rank, world = (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)
        yield Distributed(rank, world, pick_device(device_name, local_rank))
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()
