"""Training throughput (images per second) of RRID against a bare ResNet-50, side by side.

    python benchmarks/train_step.py [--steps 3] [--threads 2] [--batch 8]

Times optimiser steps of ``rrid.train.train_step`` (forward, loss, backward, SGD update: the
step ``rrid.fit`` takes) on random images, after two warm-up steps, alternating the models step
by step and using the median step, for:

  quick      the quick config's model (resnet18, Ours-F heads, 96 x 32, P x K = 8 x 4)
  full       Ours-F at 384 x 128 on ResNet-50 with L = L_triplet + 2 L_CE (45 classifiers)
  bare       torchvision's ResNet-50 with the same last-stride-1 surgery, GAP, one Linear and
             plain cross-entropy, same input and batch: the cost of the backbone alone

and prints full / bare, the share of the step that the heads and losses cost (goal: within
10 %). On CUDA it also times the full model with autocast (bf16, or fp16 with a gradient
scaler) against fp32, at the paper's batch of 64.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from rrid import runtime
from rrid.config import OptimConfig
from rrid.losses import RRIDLoss, SoftmaxLoss
from rrid.model import RRID, RRIDConfig, resnet_backbone
from rrid.train import TrainerState, build_optimizer, train_step


class BareResNet(nn.Module):
    """ResNet-50 (last stride 1) + GAP + Linear: a plain classification baseline."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.backbone = resnet_backbone("resnet50", pretrained=False, last_stride=1)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        return self.fc(self.backbone(x).mean(dim=(2, 3)))


class Stepper:
    """One step of ``rrid.train.train_step`` (forward under autocast, loss, backward, SGD update) of
    ``model`` on a fixed random P x 4 batch: the very step ``rrid.fit`` and the ablation take."""

    def __init__(self, model, criterion, batch: int, height: int, width: int, device, amp_dtype=None,
                 num_ids: int | None = None):
        num_ids = num_ids or batch // 4
        self.images = torch.randn(batch, 3, height, width, device=device)
        self.labels = torch.arange(num_ids, device=device).repeat_interleave(batch // num_ids)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
            self.images = self.images.contiguous(memory_format=torch.channels_last)
        optimizer = build_optimizer(model.parameters(), OptimConfig(head_lr=1e-3))
        self.state = TrainerState(None, model.train(), optimizer, criterion=criterion, device=device,
                                  amp_dtype=amp_dtype,
                                  scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16))
        self.device, self.batch = device, batch
        self.seconds: list[float] = []

    def __call__(self, record: bool = True) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_step(self.state, self.images, self.labels)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        if record:
            self.seconds.append(time.perf_counter() - start)

    def images_per_second(self) -> float:
        """From the median step time (robust to other processes sharing the machine)."""
        return self.batch / statistics.median(self.seconds)


def side_by_side(steppers: list[Stepper], steps: int, warmup: int = 2) -> list[float]:
    """Warm up, then alternate the models step by step so that load from other processes
    hits them alike; images per second of each."""
    for s in steppers:
        for _ in range(warmup):
            s(record=False)
    for _ in range(steps):
        for s in steppers:
            s()
    return [s.images_per_second() for s in steppers]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model (after two warm-up steps)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch", type=int, default=None, help="batch of the full/bare comparison (CPU: 8, CUDA: 64)")
    parser.add_argument("--classes", type=int, default=751)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (64 if device.type == "cuda" else 8)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"device: {name}; torch {torch.__version__}; {args.steps} timed steps each")

    quick = RRID(RRIDConfig(backbone="resnet18"), 150).to(device)
    [q] = side_by_side([Stepper(quick, RRIDLoss(margin=1.2, ce_weight=2.0), 32, 96, 32, device, num_ids=8)],
                       args.steps)
    print(f"quick  resnet18 Ours-F   96 x 32, batch 32 : {q:8.1f} img/s")

    full = RRID(RRIDConfig.preset("ours-f"), args.classes).to(device)
    bare = BareResNet(args.classes).to(device)
    pair = [Stepper(full, RRIDLoss(margin=1.2, ce_weight=2.0), batch, 384, 128, device),
            Stepper(bare, SoftmaxLoss(), batch, 384, 128, device)]
    f, b = side_by_side(pair, args.steps)
    print(f"full   resnet50 Ours-F  384 x 128, batch {batch:2d} : {f:8.1f} img/s")
    print(f"bare   resnet50 GAP+CE  384 x 128, batch {batch:2d} : {b:8.1f} img/s")
    print(f"full / bare throughput: {f / b:.3f}  (heads and losses cost {100 * (b / f - 1):+.1f} % time per step; "
          "goal <= +10 %)")
    # the steps were taken in pairs (full, bare) a moment apart: the spread of the paired ratios
    # shows how much of the difference this machine's load can explain
    ratios = [t_full / t_bare for t_full, t_bare in zip(pair[0].seconds, pair[1].seconds)]
    low, mid, high = statistics.quantiles(ratios, n=4)
    print(f"paired step-time ratio full / bare: median {mid:.3f}, quartiles {low:.3f} to {high:.3f} "
          f"({len(ratios)} pairs)")

    if device.type == "cuda":
        dtype = runtime.amp_dtype("auto", device)          # bf16 from compute capability 8.0, else fp16
        [a] = side_by_side([Stepper(full, RRIDLoss(margin=1.2, ce_weight=2.0), batch, 384, 128, device,
                                    amp_dtype=dtype)], args.steps)
        print(f"full   resnet50 Ours-F  384 x 128, batch {batch:2d}, AMP {str(dtype)[6:]}: {a:8.1f} img/s")
        print(f"AMP / fp32 throughput: {a / f:.2f}")


if __name__ == "__main__":
    main()
