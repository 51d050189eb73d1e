"""Quick-mode ablation of Table 2 (and Tables 3 and 4) with paired confidence intervals.

PROTOCOL_PLACEHOLDER

    python benchmarks/ablation_quick.py                     # the whole benchmark, resumable
    python benchmarks/ablation_quick.py --seeds 0 1 2       # a piece: only these seeds
    python benchmarks/ablation_quick.py --report            # only rewrite the summary from the CSVs
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
RUN_COLUMNS = ["row", "seed", "mAP", "rank1", "mINP", "feature_dim", "epochs", "train_seconds", "wall_seconds"]
BLOCK_COLUMNS = ["row", "seed", "block", "mAP", "rank1"]
SEEDS = list(range(10))
GOAL = 1.5   # mAP points: the half-width every paired 95 % interval should reach


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


def report(out: Path, protocol: ablation.Protocol, cache_seconds: float | None) -> str:
    """The summary (markdown) of the CSV files in ``out``."""
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
    w()
    w(f"Time: {len(lines)} runs ({len(runs)} rows x seeds {seeds}), {train / 60:.1f} min of head training and "
      f"{wall / 60:.1f} min in all (training + evaluation), one thread"
      + (f"; the backbone and feature cache took {cache_seconds / 60:.1f} min once." if cache_seconds else "."))
    return s.getvalue()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=list(range(1, 14)), help="Table 2 rows (1..13)")
    ap.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--report", action="store_true", help="only rewrite ablation_quick_summary.md from the CSVs")
    args = ap.parse_args(argv)
    bad = [r for r in args.rows if not 1 <= r <= len(TABLE2)]
    if bad:
        ap.error(f"--rows: expected rows of Table 2 (1..{len(TABLE2)}), got {bad}")
    protocol = ablation.QUICK
    runs_csv, blocks_csv, ap_npz = (args.out / n for n in ("ablation_quick.csv", "blocks_quick.csv", "ablation_quick_ap.npz"))
    args.out.mkdir(parents=True, exist_ok=True)
    cache_seconds = None
    if not args.report:
        t0 = time.perf_counter()
        feats = ablation.features(protocol, progress=True)
        cache_seconds = feats.info.get("seconds") if feats.info else None
        print(f"feature cache ready in {time.perf_counter() - t0:.0f} s "
              f"(built in {cache_seconds or 0:.0f} s): {tuple(feats.train_x.shape)} training maps", flush=True)
        runs, blocks, aps = read_csv(runs_csv), read_csv(blocks_csv), read_ap(ap_npz)
        done = {(int(d["row"]), int(d["seed"])) for d in runs}
        todo = [(r, s) for s in args.seeds for r in args.rows if (r, s) not in done]
        print(f"{len(done)} runs already in {runs_csv}; {len(todo)} to train", flush=True)
        for i, (row, seed) in enumerate(todo, 1):
            t1 = time.perf_counter()
            run = ablation.train_heads(row, seed, protocol, feats)
            wall = time.perf_counter() - t1
            aps[f"row{row:02d}_seed{seed}"] = run.all_AP.astype(np.float32)
            write_ap(ap_npz, aps)                       # AP and blocks first: a run in runs_csv has both
            blocks = [b for b in blocks if (int(b["row"]), int(b["seed"])) != (row, seed)]
            blocks += [{"row": row, "seed": seed, "block": k, "mAP": m, "rank1": r1} for k, (m, r1) in run.blocks.items()]
            write_csv(blocks_csv, BLOCK_COLUMNS, blocks)
            runs.append({"row": row, "seed": seed, "mAP": run.mAP, "rank1": run.rank1, "mINP": run.mINP,
                         "feature_dim": run.feature_dim, "epochs": protocol.epochs, "train_seconds": run.train_seconds,
                         "wall_seconds": wall})
            write_csv(runs_csv, RUN_COLUMNS, runs)
            print(f"[{i}/{len(todo)}] row {row:2d} seed {seed}: mAP {run.mAP:.2f} rank-1 {run.rank1:.2f} "
                  f"({run.train_seconds:.0f} s training, {wall:.0f} s in all)", flush=True)
    text = report(args.out, protocol, cache_seconds)
    with atomic_write(args.out / "ablation_quick_summary.md") as f:
        f.write("# Quick ablation: the numbers (written by benchmarks/ablation_quick.py)\n\n"
                "Quick mode, synthetic data, head-only protocol: **not** the paper's results. "
                "See ablation_quick.md for the protocol.\n\n" + text)
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.exit(main())
