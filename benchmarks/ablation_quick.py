"""Quick-mode ablation of Table 2 (and Tables 3 and 4) with paired confidence intervals.

Protocol: ``rrid.ablation.QUICK``, the head-only protocol of ``rrid.ablation`` (read its
docstring). One ResNet-18 is trained once, from scratch, on 150 synthetic identities that
nothing else uses, with a generic objective (softmax identity classification on the global
average of its feature map, as ImageNet pre-training), then frozen; the feature maps x
(512 x 6 x 2 at 96 x 32) of 150 other identities (1,500 images, 4 views each: plain,
mirrored, 2 with random flip and erasing) and of a 300-identity test split (600 queries,
2,430 gallery images, plain and mirrored) are cached. Then, for every row of Table 2 and
every seed, the package's own heads of that row (``RRID`` with ``backbone = Identity``,
``RRIDLoss``) are trained on the cache: P x K = 8 x 4 batches, 10 "once" epochs (460 steps),
SGD lr 1e-2 (x0.1 after epoch 7), momentum 0.9, weight decay 5e-4; evaluated with the flip
average, on the whole embedding (``ablation_quick.csv``) and on each 256-d block alone
(``blocks_quick.csv``, Tables 3 and 4). Every seed gives all rows the same batches, views
and initial weights where their layers coincide, so row differences are paired.

Why. The end-to-end protocol this replaces (ResNet-18 from scratch per row, one epoch, 3
seeds) had a seed sd of 2-6 mAP points and paired differences of +-3 to +-10, so it could not
resolve effects of 0.6-3 points; on 2 shared CPU cores each end-to-end run costs 20-120 s
for one epoch, so more seeds and epochs were out of reach. A frozen backbone removes the
largest source of noise (the backbone's own training) and makes a run cheap (row 1: 5 s,
row 13: about 2-3 min with other jobs on the machine). Pilots on this machine (2 seeds,
12 epochs, mAP every 2 epochs): the heads plateau by epoch 8 (row 5: 78.1, 78.4, 78.6, 78.5 at
epochs 6-12; row 13: 78.4, 78.7, 78.8, 78.8), and the paired difference row 5 - row 4 was
+1.1 and +1.2 for seeds 0 and 1, i.e. a paired sd of a few tenths of a point: 5 seeds (t = 2.78)
give 95 % half-widths well under the 1.5-point goal, so the budget goes to converged heads
(10 epochs) rather than to more seeds. More seeds can be added later (``--seeds 0 1 ... 9``).

What it isolates: how well each head design uses one fixed feature map. What it cannot
show: how each head's gradients shape the backbone (the paper trains end to end), and
anything about real images, ImageNet features, ResNet-50 or 384 x 128 inputs. Which rows
the paper's Tables 3 and 4 come from is an inference (``rrid.ablation.TABLE3_ROWS``,
``TABLE4_ROWS``): rows 4 / 5 for Table 3, rows 6 / 5 / 7 / 8 for Table 4.

Outputs in ``--out`` (default ``benchmarks/results``), each rewritten atomically after every run:
``ablation_quick.csv`` (row, seed, mAP, rank1, mINP in %, feature_dim, epochs,
train_seconds, wall_seconds, protocol), ``blocks_quick.csv`` (row, seed, block, mAP, rank1),
``ablation_quick_ap.npz`` (per-query AP, "rowRR_seedS", NaN = skipped query) and
``ablation_quick.md`` (the protocol, the intervals, the verdicts and the wall time). A run
already in the CSV is skipped, so the benchmark can be stopped and resumed in pieces; runs of
another protocol (e.g. after the package's RRIDConfig defaults changed) are refused (``--fresh``).
One thread; the backbone and the feature cache are built once into ``rrid.paths.cache_dir()``.
The loop, the files and the report are ``rrid.ablation.benchmark``'s (chapter 9 runs the same).

Full protocol (``--protocol full``): ``rrid.ablation.FULL``, the same rows, seeds' pairing,
intervals and verdicts at paper scale: Market-1501 (prepared in ``data/market1501``) at
384 x 128, a frozen ImageNet ResNet-50, the heads reading band statistics of its map (the
reasons are in ``rrid/ablation/full.py``), 5 seeds (0-4) by default; ``ablation_full.csv``,
``blocks_full.csv``, ``ablation_full_ap.npz``, ``ablation_full.md``. It prints its time
estimate (measured here, and a T4's from public figures) before it starts, says so and stops
when Market-1501 is missing, and refuses to start when the estimate is over ``--max-hours``
(a CPU: days). With ``RRID_SMOKE=1`` it runs ``rrid.ablation.SMOKE`` instead: the same code on
market1501-mini with a random ResNet-50, 2 rows, 2 seeds, 1 epoch, in seconds, into
``<cache>/ablation-smoke`` (smoke numbers, not results).

    python benchmarks/ablation_quick.py                     # the whole benchmark, resumable
    python benchmarks/ablation_quick.py --seeds 0 1         # a piece: only these seeds
    python benchmarks/ablation_quick.py --fresh             # start again (new protocol or defaults)
    python benchmarks/ablation_quick.py --report            # only rewrite ablation_quick.md from the CSVs
    python benchmarks/ablation_quick.py --protocol full     # on a GPU (35-50 min on a T4 by the estimate)
    RRID_SMOKE=1 python benchmarks/ablation_quick.py --protocol full    # the smoke run (CPU)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

import rrid.book
from rrid import ablation, paths
from rrid.ablation import benchmark, estimate
from rrid.errors import UserError
from rrid.model import TABLE2

ROOT = Path(__file__).resolve().parents[1]
SEEDS = list(range(5))


def _protocol(name: str):
    """The protocol ``--protocol`` names: QUICK, FULL, or SMOKE under RRID_SMOKE=1."""
    if name == "quick":
        return ablation.QUICK
    return ablation.smoke_protocol() if rrid.book.smoke() else ablation.FULL


def _info(protocol) -> dict | None:
    """The feature cache's info, None when it (or the data that names it) is not here."""
    try:
        return ablation.cache_info(protocol)
    except UserError:
        return None


def _ready(protocol, rows, seeds, max_hours: float) -> None:
    """For the full protocol: its data is there and its estimate here fits ``max_hours``; else exit
    with the reason (no data, no GPU), the estimate printed first when there is data to estimate."""
    gpu = "" if torch.cuda.is_available() else (" There is no CUDA GPU here either: the full protocol needs one "
                                                "(Colab: Runtime > Change runtime type > T4 GPU).")
    try:
        ablation.market_split(protocol)
    except UserError as err:
        if protocol.max_ids:
            sys.exit(f"no data for the smoke run: {err}\nPoint RRID_MARKET_MINI at market1501-mini.")
        sys.exit(f"no data for the full protocol: {err}\nPrepare Market-1501 with `python -m rrid prepare "
                 "market1501 --source Market-1501-v15.09.15.zip`, or set RRID_SMOKE=1 for the smoke run." + gpu)
    here = estimate.announce(protocol, rows, seeds)
    if here.total > 3600 * max_hours:
        sys.exit(f"not started: {estimate.duration(here.total)} by the estimate above, over --max-hours {max_hours}."
                 + (gpu or " Run it on a faster GPU, with fewer --seeds, or raise --max-hours."))


def main(argv=None, protocol=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", choices=["quick", "full"], default="quick",
                    help="quick: rrid.ablation.QUICK (CPU); full: rrid.ablation.FULL (a GPU), SMOKE under RRID_SMOKE=1")
    ap.add_argument("--rows", type=int, nargs="+", default=None, help="Table 2 rows (1..13; the smoke run: 4 5)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0-4 (quick, full), 0-1 (smoke)")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: benchmarks/results (smoke: <cache>/ablation-smoke)")
    ap.add_argument("--report", action="store_true", help="only rewrite the report (.md) from the CSV files")
    ap.add_argument("--fresh", action="store_true",
                    help="delete the results in --out first (e.g. after the protocol changed)")
    ap.add_argument("--max-hours", type=float, default=3.0,
                    help="full protocol: do not start when the estimate is longer")
    args = ap.parse_args(argv)
    protocol = protocol or _protocol(args.protocol)
    smoke = isinstance(protocol, ablation.FullProtocol) and protocol.max_ids > 0
    rows = args.rows or ([4, 5] if smoke else list(range(1, 14)))
    bad = [r for r in rows if not 1 <= r <= len(TABLE2)]
    if bad:
        ap.error(f"--rows: expected rows of Table 2 (1..{len(TABLE2)}), got {bad}")
    seeds = args.seeds or (list(range(protocol.seeds)) if isinstance(protocol, ablation.FullProtocol) else SEEDS)
    out = args.out or (paths.cache_dir() / "ablation-smoke" if smoke else ROOT / "benchmarks" / "results")
    files = benchmark.result_files(out, protocol)
    if smoke:
        print(f"RRID_SMOKE=1: the smoke protocol (market1501-mini, random {protocol.backbone}): smoke numbers, "
              f"not results, into {out}", flush=True)
    if args.fresh and not args.report:
        for path in files:
            path.unlink(missing_ok=True)
    if args.report:
        if not files.runs.is_file():
            sys.exit(f"--report: no results in {out} ({files.runs.name} is missing)")
        text = benchmark.write_report(files, protocol, _info(protocol))
    else:
        if isinstance(protocol, ablation.FullProtocol):
            _ready(protocol, rows, seeds, args.max_hours)
        try:
            text = benchmark.run(protocol, rows, seeds, out)
        except UserError as err:           # mixed protocols, no ImageNet weights, a bad data folder: one line
            sys.exit(f"error: {err}")
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.exit(main())
