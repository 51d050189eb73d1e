"""Train-loader throughput with and without the in-memory image cache (images per second).

Uses ../shared/data/market1501-mini when present, else a synthetic set. Two epochs each:
the first fills the cache, the second shows what the cache buys.

    python benchmarks/loader.py [--workers 0] [--height 96 --width 32]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from rrid.data import Market1501, build_loaders, synthetic

ROOT = Path(__file__).resolve().parents[1]


def dataset(tmp: str):
    mini = ROOT.parent / "shared" / "data" / "market1501-mini"
    if (mini / "bounding_box_train").is_dir():
        return "market1501-mini", Market1501(mini)
    path = synthetic.generate(Path(tmp) / "synthetic", num_train_ids=50, num_test_ids=50)
    return "synthetic", Market1501(path)


def epoch_rate(loader) -> float:
    n, start = 0, time.perf_counter()
    for images, _, _ in loader:
        n += len(images)
    return n / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        name, ds = dataset(tmp)
        print(f"data: {name}, {len(ds.train)} train images, {args.height}x{args.width}, workers={args.workers}", file=sys.stderr)
        rates = {}
        for cache in (False, True):
            loaders = build_loaders(ds, args.height, args.width, p=8, k=4, workers=args.workers, cache=cache)
            rates[cache] = [epoch_rate(loaders.train) for _ in range(2)]
    print(f"{'cache':>6} {'epoch 1 img/s':>14} {'epoch 2 img/s':>14}")
    for cache, (first, second) in rates.items():
        print(f"{str(cache):>6} {first:>14.0f} {second:>14.0f}")
    print(f"cache speed-up (epoch 2): {rates[True][1] / rates[False][1]:.2f}x")


if __name__ == "__main__":
    main()
