"""Quick-mode ablation: every row of the paper's Table 2, trained on the CPU for several seeds.

Each (row, seed) pair is one ``rrid.fit`` run of ``configs/quick/rowNN.yaml`` (the synthetic
data set, ResNet-18 from scratch, 96 x 32 input) with ``train.seed = seed``. The trained model
is then evaluated twice over the same test features:

* the whole representation (the concatenation of every 256-d block, L2-normalised), as in
  Table 2 -> ``ablation_quick.csv``: ``row,seed,mAP,rank1,mINP,feature_dim,epochs,train_seconds``;
* every 256-d block alone (L2-normalised), as in Tables 3 and 4 of the paper (single q_i with
  and without the relation module; q_0 of P6 for GMP / GAP / GAP+GMP / GCP) ->
  ``blocks_quick.csv``: ``row,seed,block,mAP,rank1`` with ``block`` from ``model.block_names``.

mAP, rank1 and mINP are percentages. ``train_seconds`` is the wall time of the training epochs
(the evaluation excluded). Both files are rewritten after every run, atomically (temp file in
the same folder, then rename), so an interrupted run loses at most the pair in progress; a new
run skips the pairs the CSV already has. Seeds are the outer loop: every row gets seed 0 before
any row gets seed 1.

Quick-mode shortcuts, on top of the quick configs: ``--epochs`` (default 1) short epochs with
the learning-rate step scaled to match, test features without the flip average, one torch
thread. On a shared 2-core machine one thread is several times faster than two (measured:
about 40 vs 10 training images/s for Ours-F while other jobs ran). One run takes 35 to 60 s
(row 1 to row 13) on two otherwise idle cores; the default run (13 rows x 3 seeds, 1 epoch)
took about 40 minutes on the project's 2-core machine while other jobs shared it. These
numbers say how the variants compare on a toy problem after a minute of training each; they
are not the paper's results.

    python benchmarks/ablation_quick.py [--rows 1 5 13] [--seeds 0 1 2] [--epochs 1] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import rrid
from rrid.config import load_config
from rrid.evaluation import extract_features
from rrid.files import atomic_write
from rrid.metrics import evaluate_ranking
from rrid.model import TABLE2
from rrid.train import build_dataset, load_model

ROOT = Path(__file__).resolve().parents[1]
RUN_COLUMNS = ["row", "seed", "mAP", "rank1", "mINP", "feature_dim", "epochs", "train_seconds"]
BLOCK_COLUMNS = ["row", "seed", "block", "mAP", "rank1"]
BLOCK_DIM = 256  # c, the width of every q_i and q_0


def quick_config(row: int, seed: int, epochs: int, threads: int):
    """``configs/quick/rowNN.yaml`` shortened to ``epochs`` and seeded with ``seed``."""
    step = max(1, round(5 * epochs / 6))  # the quick configs step the rate at epoch 5 of 6
    overrides = [f"train.seed={seed}", f"train.epochs={epochs}", f"train.eval_every={epochs}",
                 f"optim.milestones=[{step}]", f"train.num_threads={threads}", "train.tensorboard=false",
                 "eval.flip=false"]
    return load_config(ROOT / "configs" / "quick" / f"row{row:02d}.yaml", overrides)


class _TrainClock(rrid.Callback):
    """Wall time from the first step to the end of the last epoch (before its evaluation)."""

    def on_fit_start(self, state) -> None:
        self.start, self.seconds = time.perf_counter(), 0.0

    def on_epoch(self, state, logs: dict) -> None:
        self.seconds = time.perf_counter() - self.start


def _metrics(feats: torch.Tensor, q, g) -> dict:
    """mAP / rank-1 / mINP in % of L2-normalised ``feats`` (query rows first, then gallery)."""
    feats = F.normalize(feats, dim=1)
    qf, gf = feats[:len(q.pids)], feats[len(q.pids):]
    m = evaluate_ranking(rrid.pairwise_distance(qf, gf), q.pids, g.pids, q.camids, g.camids)
    return {"mAP": 100 * m["mAP"], "rank1": 100 * float(m["cmc"][0]), "mINP": 100 * m["mINP"]}


def run_pair(row: int, seed: int, epochs: int, threads: int) -> tuple[dict, list[dict]]:
    """Train one (row, seed) pair; return its CSV line and one line per 256-d block."""
    from rrid.data import ImageDataset, build_transforms

    cfg = quick_config(row, seed, epochs, threads)
    clock = _TrainClock()
    with tempfile.TemporaryDirectory(prefix=f"rrid-ablation-row{row:02d}-") as out:
        result = rrid.fit(cfg, out_dir=out, callbacks=[clock], progress=False)
        model = load_model(result.last_checkpoint)
    dataset = build_dataset(cfg)
    tf = build_transforms(cfg.data.height, cfg.data.width, train=False)
    torch.set_num_threads(threads)
    q, g = (extract_features(model, torch.utils.data.DataLoader(ImageDataset(recs, tf), batch_size=cfg.data.test_batch_size),
                             flip=cfg.eval.flip, normalize=False, progress=False)
            for recs in (dataset.query, dataset.gallery))
    feats = torch.cat([q.feats, g.feats])
    whole = _metrics(feats, q, g)
    if abs(whole["mAP"] - 100 * result.metrics["mAP"]) > 0.5:   # the same features as fit's evaluation
        raise RuntimeError(f"row {row} seed {seed}: re-extracted mAP {whole['mAP']:.2f} differs from "
                           f"fit's {100 * result.metrics['mAP']:.2f}")
    line = {"row": row, "seed": seed, **whole, "feature_dim": feats.shape[1], "epochs": epochs,
            "train_seconds": clock.seconds}
    blocks = []
    for i, name in enumerate(model.block_names):
        m = _metrics(feats[:, i * BLOCK_DIM:(i + 1) * BLOCK_DIM], q, g)
        blocks.append({"row": row, "seed": seed, "block": name, "mAP": m["mAP"], "rank1": m["rank1"]})
    return line, blocks


# ----------------------------------------------------------------------------- CSV files

def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, columns: list[str], lines: list[dict]) -> None:
    """Write ``lines`` (sorted by row, seed) to a temp file beside ``path``, then rename it."""
    def fmt(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)
    lines = sorted(lines, key=lambda d: (int(d["row"]), int(d["seed"])))  # stable: blocks keep their order
    with atomic_write(path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({c: fmt(d[c]) for c in columns} for d in lines)


def summary(lines: list[dict]) -> str:
    """Mean ± std over seeds per row, beside the paper's Market-1501 numbers (Table 2)."""
    out = [f"{'row':>3} {'F-dim':>5} {'seeds':>5}  {'quick mAP':>13} {'quick R-1':>13}   paper mAP  paper R-1"]
    for t in TABLE2:
        mine = [d for d in lines if int(d["row"]) == t.row]
        if not mine:
            continue
        cols = []
        for key in ("mAP", "rank1"):
            v = np.array([float(d[key]) for d in mine])
            cols.append(f"{v.mean():6.2f} ± {v.std(ddof=1) if len(v) > 1 else 0:4.2f}")
        out.append(f"{t.row:>3} {t.feature_dim:>5} {len(mine):>5}  {cols[0]:>13} {cols[1]:>13}   "
                   f"{t.market_map:9.1f} {t.market_rank1:10.1f}")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=list(range(1, 14)), help="Table 2 rows (1..13)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=1, help="training epochs per run (default 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    bad = [r for r in args.rows if not 1 <= r <= len(TABLE2)]
    if bad:
        ap.error(f"--rows: expected rows of Table 2 (1..{len(TABLE2)}), got {bad}")
    os.environ.setdefault("TQDM_DISABLE", "1")
    runs_csv, blocks_csv = args.out / "ablation_quick.csv", args.out / "blocks_quick.csv"
    runs, blocks = read_csv(runs_csv), read_csv(blocks_csv)
    done = {(int(d["row"]), int(d["seed"])) for d in runs}
    todo = [(r, s) for s in args.seeds for r in args.rows if (r, s) not in done]
    print(f"{len(done)} pairs already in {runs_csv}; {len(todo)} to train", flush=True)
    for i, (row, seed) in enumerate(todo, 1):
        t0 = time.perf_counter()
        line, lines = run_pair(row, seed, args.epochs, args.threads)
        blocks = [b for b in blocks if (int(b["row"]), int(b["seed"])) != (row, seed)] + lines
        write_csv(blocks_csv, BLOCK_COLUMNS, blocks)   # blocks first: a pair in runs_csv has its blocks
        runs.append(line)
        write_csv(runs_csv, RUN_COLUMNS, runs)
        print(f"[{i}/{len(todo)}] row {row:2d} seed {seed}: mAP {line['mAP']:.2f} rank-1 {line['rank1']:.2f} "
              f"({line['train_seconds']:.0f} s training, {time.perf_counter() - t0:.0f} s in all)", flush=True)
    print(summary(read_csv(runs_csv)))
    print("Quick mode: synthetic data, ResNet-18 from scratch, 96 x 32, "
          f"{args.epochs} epoch(s); not comparable in scale to the paper's Market-1501 numbers.")


if __name__ == "__main__":
    sys.exit(main())
