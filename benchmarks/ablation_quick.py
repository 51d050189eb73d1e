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
resolve effects of 0.1-3 points; on 2 shared CPU cores each end-to-end run costs 20-120 s
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

    python benchmarks/ablation_quick.py                     # the whole benchmark, resumable
    python benchmarks/ablation_quick.py --seeds 0 1         # a piece: only these seeds
    python benchmarks/ablation_quick.py --fresh             # start again (new protocol or defaults)
    python benchmarks/ablation_quick.py --report            # only rewrite ablation_quick.md from the CSVs
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from pathlib import Path

import numpy as np

from rrid import ablation
from rrid.files import atomic_path, atomic_write
from rrid.model import TABLE2
from rrid.stats import mean_interval, spearman

ROOT = Path(__file__).resolve().parents[1]
RUN_COLUMNS = ["row", "seed", "mAP", "rank1", "mINP", "feature_dim", "epochs", "train_seconds", "wall_seconds", "cpu_seconds", "protocol"]
BLOCK_COLUMNS = ["row", "seed", "block", "mAP", "rank1"]
SEEDS = list(range(5))
GOAL = ablation.POWER_GOAL   # mAP points: the half-width every paired 95 % interval should reach
README = """# Quick ablation of Table 2 (written by benchmarks/ablation_quick.py)

**Quick mode, synthetic data, a head-only protocol on a frozen ResNet-18: these are not the paper's
results and not paper-scale results.**

Protocol (`rrid.ablation.QUICK`; the details are in the docstrings of
`rrid/ablation.py` and `benchmarks/ablation_quick.py`):

- **Data**: one synthetic set (seed {data_seed}) with three disjoint groups of identities: {backbone_ids} train the
  backbone, {train_ids} ({images_per_id} images each) train the heads, {test_ids} form the test split (query and
  gallery, Market-1501 protocol). Input {height} x {width}.
- **Backbone**: {backbone} from scratch, trained once for {backbone_epochs} epochs with a generic objective (softmax
  identity classification on the global average of the feature map, last stride 2, as ImageNet pre-training), then
  frozen and used with last stride 1. It was trained with none of the rows' heads; its global-average objective is
  closest to the rows that pool with GAP (1, 2, 3, 6 and 10; 7 and 11 with GAP+GMP), so any bias it has would favour
  those.
- **Cache**: the feature maps x of the head-training images ({views} views: plain, mirrored, random flip + erasing)
  and of the test images (plain and mirrored).
- **Heads**: for each row and seed, the package's heads of that row (`RRID` with its backbone replaced by the cache,
  `RRIDLoss`, the package's default `RRIDConfig` otherwise) trained for {epochs} epochs of P x K = {p} x {k} batches,
  SGD lr {head_lr} (x0.1 after epoch {milestones}), momentum {momentum}, weight decay {weight_decay}. A seed fixes the
  batches, the views and the initial weights for every row, so differences between rows are paired.
- **Evaluation**: flip-averaged embedding, L2-normalised, Euclidean distances; the whole embedding (Table 2) and each
  256-d block alone (Tables 3 and 4).

**Why**: the end-to-end quick protocol this replaces (ResNet-18 from scratch per row, 1 epoch, 3 seeds) had a seed sd
of 2-6 mAP points and could not resolve effects of 0.1-3 points within the time a 2-core CPU allows. Freezing one
backbone removes its training noise and makes a run take seconds to minutes; pilots showed paired differences
varying by a few tenths of a point between seeds and the heads converging by epoch 8, so 5 seeds of 10 epochs
reach the 1.5-point goal.

**What it isolates**: how well each head design (stripe pooling, the relation module, GCP and the other global
poolings, one or three scales, their classifiers and losses) uses one fixed feature map. **What it cannot show**: how
each head's gradients shape the backbone, which the paper's end-to-end training includes, and anything about real
images, ImageNet features, ResNet-50 or 384 x 128 inputs.

**Tables 3 and 4**: which Table 2 rows gave the paper's single-feature tables is an **inference**, not stated in the
paper: Table 3 (q_i of P6 without / with the relation module) = rows 4 and 5; Table 4 (q_0 of P6 by global pooling) =
rows 6 (GAP), 5 (GMP), 7 (GAP+GMP) and 8 (GCP).

Verdicts (`rrid.stats.verdict`): "agrees with the paper" when the 95 % interval excludes 0 on the side of the paper's
difference, "contradicts it" when it excludes 0 on the other side, "cannot tell at this power" when it contains 0.

"""


# ----------------------------------------------------------------------------- CSV files

def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, columns: list[str], lines: list[dict]) -> None:
    """Write ``lines`` (sorted by row, seed) to a temp file beside ``path``, then rename it."""
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = sorted(lines, key=lambda d: (int(d["row"]), int(d["seed"])))  # stable: blocks keep their order
    with atomic_write(path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({c: fmt(d[c]) for c in columns} for d in lines)


def read_ap(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def write_ap(path: Path, ap: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **ap)


# ----------------------------------------------------------------------------- the report

def _fmt_cmp(c, label: str) -> str:
    q = c.quick
    ok = "yes" if q.half_width <= GOAL else "NO"
    return (f"| {label} | {c.paper:+.1f} | {q.mean:+.2f} | [{q.low:+.2f}, {q.high:+.2f}] | {q.half_width:.2f} | {ok} | "
            f"{q.n} | {c.verdict} |")


def _build_time(info: dict | None) -> str:
    """"; the feature cache took ... once" from the cache's info (the backbone's time where it was recorded)."""
    if not info or not info.get("seconds"):
        return ""
    text = f"; before these runs, the feature cache took {info['seconds'] / 60:.1f} min of wall time once"
    if info.get("backbone_seconds"):
        text += f" and the backbone's training {info['backbone_seconds'] / 60:.1f} min"
    return text


def report(out: Path, protocol: ablation.Protocol, info: dict | None) -> str:
    """The summary (markdown) of the CSV files in ``out``; ``info``: ``rrid.ablation.cache_info``."""
    runs = ablation.read_runs(out / "ablation_quick.csv")
    blocks = ablation.read_blocks(out / "blocks_quick.csv")
    lines = read_csv(out / "ablation_quick.csv")
    seeds = sorted({int(d["seed"]) for d in lines})
    s = io.StringIO()
    w = lambda text="": print(text, file=s)   # noqa: E731
    w("## Rows (mAP, %; mean and 95 % t interval over seeds)")
    w()
    w("| row | F-dim | seeds | quick mAP | 95 % CI | quick rank-1 | paper mAP | paper rank-1 |")
    w("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in TABLE2:
        if t.row not in runs:
            continue
        m = mean_interval([v["mAP"] for v in runs[t.row].values()])
        r1 = mean_interval([v["rank1"] for v in runs[t.row].values()])
        w(f"| {t.row} | {t.feature_dim} | {m.n} | {m.mean:.2f} | [{m.low:.2f}, {m.high:.2f}] | {r1.mean:.2f} | "
          f"{t.market_map:.1f} | {t.market_rank1:.1f} |")
    done = [t.row for t in TABLE2 if t.row in runs]
    if len(done) > 2:
        rho = spearman([TABLE2[r - 1].market_map for r in done], [mean_interval([v["mAP"] for v in runs[r].values()]).mean
                                                                  for r in done])
        w()
        w(f"Spearman's rho between the paper's Market-1501 mAP and the quick mean mAP over {len(done)} rows: "
          f"{rho.rho:.2f} (p = {rho.pvalue:.3f}).")
    header = ["| comparison | paper | quick mean | 95 % CI | half-width | <= 1.5 | seeds | verdict |",
              "|---|---:|---:|---:|---:|:-:|---:|---|"]
    cmp = [c for c in ablation.comparisons(runs, [p for p in ablation.COMPARISONS if p[0] in runs and p[1] in runs])]
    w()
    w("## Table 2 comparisons (row A - row B, mAP points; paired t interval over seeds)")
    w()
    w("\n".join(header))
    for c in cmp:
        w(_fmt_cmp(c, f"{c.a} - {c.b}"))
    bl = [c for c in ablation.block_comparisons(blocks, [p for p in ablation.TABLE3_COMPARISONS + ablation.TABLE4_COMPARISONS
                                                         if (p[0], p[2]) in blocks and (p[1], p[2]) in blocks])]
    pool_of = {row: name for name, row in ablation.TABLE4_ROWS.items()}
    w()
    w("## Tables 3 and 4 (single 256-d blocks of P6, mAP points; paired t interval over seeds)")
    w()
    w("Which Table 2 rows gave the paper's Tables 3 and 4 is an inference, not stated in the paper: "
      "Table 3 = rows 4 (w/o RM) and 5 (RM), Table 4 = q_0 of P6 in rows 6 (GAP), 5 (GMP), 7 (GAP+GMP) and 8 (GCP).")
    w()
    w("\n".join(header))
    for c in bl:
        label = (f"q{c.block[-1]}: RM - w/o RM" if c.block != "P6/q0" else f"q0: {pool_of[c.a]} - {pool_of[c.b]}")
        w(_fmt_cmp(c, label))
    every = cmp + bl
    if every:
        worst = max(c.quick.half_width for c in every)
        w()
        w(f"Half-widths: {sum(c.quick.half_width <= GOAL for c in every)} of {len(every)} comparisons at or below "
          f"{GOAL} mAP points; the largest is {worst:.2f}.")
    train = sum(float(d["train_seconds"]) for d in lines)
    wall = sum(float(d["wall_seconds"]) for d in lines)
    cpu = sum(float(d["cpu_seconds"]) for d in lines)
    w()
    w(f"Time: {len(lines)} runs ({len(runs)} rows x seeds {seeds}) took {wall / 60:.1f} min of wall time "
      f"({train / 60:.1f} min of it head training, the rest evaluation) and {cpu / 60:.1f} min of CPU time, on one "
      "thread of this project's 2-core machine while other jobs shared it (wall time > CPU time: the process waited "
      "for a core)" + _build_time(info) + ".")
    return s.getvalue()


def main(argv=None, protocol: ablation.Protocol = ablation.QUICK) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=list(range(1, 14)), help="Table 2 rows (1..13)")
    ap.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--report", action="store_true", help="only rewrite ablation_quick.md from the CSV files")
    ap.add_argument("--fresh", action="store_true", help="delete the results in --out first (e.g. after the protocol changed)")
    args = ap.parse_args(argv)
    bad = [r for r in args.rows if not 1 <= r <= len(TABLE2)]
    if bad:
        ap.error(f"--rows: expected rows of Table 2 (1..{len(TABLE2)}), got {bad}")
    runs_csv, blocks_csv, ap_npz = (args.out / n for n in ("ablation_quick.csv", "blocks_quick.csv", "ablation_quick_ap.npz"))
    args.out.mkdir(parents=True, exist_ok=True)
    info = ablation.cache_info(protocol)
    if args.fresh and not args.report:
        for path in (runs_csv, blocks_csv, ap_npz, args.out / "ablation_quick.md"):
            path.unlink(missing_ok=True)
    other = {d["protocol"] for d in read_csv(runs_csv)} - {protocol.key()}
    if other and not args.report:
        sys.exit(f"{runs_csv} holds runs of another protocol ({', '.join(sorted(other))}; this one is {protocol.key()}: "
                 "the protocol or the package's RRIDConfig defaults changed). Pass --fresh to start again, or --out "
                 "another folder.")
    if not args.report:
        t0 = time.perf_counter()
        feats = ablation.features(protocol, progress=True)
        info = feats.info
        print(f"feature cache ready in {time.perf_counter() - t0:.0f} s "
              f"(built in {(info or {}).get('seconds') or 0:.0f} s): {tuple(feats.train_x.shape)} training maps",
              flush=True)
        runs, blocks, aps = read_csv(runs_csv), read_csv(blocks_csv), read_ap(ap_npz)
        done = {(int(d["row"]), int(d["seed"])) for d in runs}
        todo = [(r, s) for s in args.seeds for r in args.rows if (r, s) not in done]
        print(f"{len(done)} runs already in {runs_csv}; {len(todo)} to train", flush=True)
        for i, (row, seed) in enumerate(todo, 1):
            t1, c1 = time.perf_counter(), time.process_time()
            run = ablation.train_heads(row, seed, protocol, feats)
            wall, cpu = time.perf_counter() - t1, time.process_time() - c1
            aps[f"row{row:02d}_seed{seed}"] = run.all_AP.astype(np.float32)
            write_ap(ap_npz, aps)                       # AP and blocks first: a run in runs_csv has both
            blocks = [b for b in blocks if (int(b["row"]), int(b["seed"])) != (row, seed)]
            blocks += [{"row": row, "seed": seed, "block": k, "mAP": m, "rank1": r1} for k, (m, r1) in run.blocks.items()]
            write_csv(blocks_csv, BLOCK_COLUMNS, blocks)
            runs.append({"row": row, "seed": seed, "mAP": run.mAP, "rank1": run.rank1, "mINP": run.mINP,
                         "feature_dim": run.feature_dim, "epochs": protocol.epochs, "train_seconds": run.train_seconds,
                         "wall_seconds": wall, "cpu_seconds": cpu, "protocol": protocol.key()})
            write_csv(runs_csv, RUN_COLUMNS, runs)
            print(f"[{i}/{len(todo)}] row {row:2d} seed {seed}: mAP {run.mAP:.2f} rank-1 {run.rank1:.2f} "
                  f"({run.train_seconds:.0f} s training, {wall:.0f} s in all)", flush=True)
    text = report(args.out, protocol, info)
    with atomic_write(args.out / "ablation_quick.md") as f:
        values = {**protocol.as_dict(), "milestones": ", ".join(map(str, protocol.milestones))}
        f.write(README.format(**values) + "\n" + text)
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.exit(main())
