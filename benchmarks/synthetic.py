"""Synthetic data set generation speed, in images per second on one core (target: >= 500).

    python benchmarks/synthetic.py [--ids 50]
"""

import argparse
import tempfile
import time
from pathlib import Path

from rrid.data import synthetic


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", type=int, default=50, help="train and test identities (10 images each)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        out = synthetic.generate(Path(tmp) / "bench", num_train_ids=args.ids, num_test_ids=args.ids)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        n = sum(1 for f in out.rglob("*.jpg"))
    # CPU time is what one core spends; wall time also counts waiting for a busy machine and the disk
    print(f"{'clock':>6} {'images':>7} {'seconds':>8} {'images/s':>9} {'target':>7} {'ratio':>6}")
    for clock, seconds in (("cpu", cpu), ("wall", wall)):
        print(f"{clock:>6} {n:>7} {seconds:>8.2f} {n / seconds:>9.0f} {500:>7} {n / seconds / 500:>6.2f}")


if __name__ == "__main__":
    main()
