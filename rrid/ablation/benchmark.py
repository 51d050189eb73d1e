"""The head-only benchmark: every (row, seed) trained and scored, resumably, into four files.

:func:`run` is the loop of ``benchmarks/ablation_quick.py`` (both protocols) and of chapter 9's
full mode: for each (row, seed) not yet in ``ablation_<name>.csv`` it trains the row's heads
(:func:`~rrid.ablation.train_heads`), then rewrites, each atomically, ``ablation_<name>_ap.npz``
(per-query AP, "rowRR_seedS", NaN = skipped query), ``blocks_<name>.csv`` (row, seed, block,
mAP, rank1) and ``ablation_<name>.csv`` (row, seed, mAP, rank1, mINP in %, feature_dim, epochs,
train_seconds, wall_seconds, cpu_seconds, protocol), in that order, so a run in the CSV has its
blocks and APs; a stopped benchmark resumes where it stopped. Runs of another protocol in the
files are refused (:class:`MixedProtocolsError`). :func:`write_report` writes
``ablation_<name>.md``: the protocol, each row's mean and interval, the paired comparisons of
:mod:`rrid.ablation.results` with their verdicts, the time. ``<name>`` is "quick" for
``Protocol`` (QUICK) and "full" for ``FullProtocol`` (FULL, and SMOKE in a folder of its own).
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from rrid.errors import UserError
from rrid.files import atomic_path, atomic_write
from rrid.model import TABLE2
from rrid.stats import mean_interval, spearman

from .full import FullProtocol
from .heads import train_heads
from .protocol import features
from .results import (COMPARISONS, POWER_GOAL, TABLE3_COMPARISONS, TABLE4_COMPARISONS, TABLE4_ROWS,
                      block_comparisons, comparisons, read_blocks, read_runs)

__all__ = ["RUN_COLUMNS", "BLOCK_COLUMNS", "ResultFiles", "MixedProtocolsError", "result_name", "result_files",
           "read_csv", "write_csv", "read_ap", "write_ap", "check_protocol", "run", "report", "write_report"]

RUN_COLUMNS = ["row", "seed", "mAP", "rank1", "mINP", "feature_dim", "epochs", "train_seconds", "wall_seconds",
               "cpu_seconds", "protocol"]
BLOCK_COLUMNS = ["row", "seed", "block", "mAP", "rank1"]


class MixedProtocolsError(UserError, RuntimeError):
    """A results folder holds runs of another protocol than the one asked for."""


class ResultFiles(NamedTuple):
    runs: Path
    blocks: Path
    ap: Path
    report: Path


def result_name(protocol) -> str:
    """"full" for a ``FullProtocol``, "quick" for the synthetic ``Protocol``."""
    return "full" if isinstance(protocol, FullProtocol) else "quick"


def result_files(out, protocol) -> ResultFiles:
    """The four files of ``protocol``'s results in the folder ``out``."""
    out, name = Path(out), result_name(protocol)
    return ResultFiles(out / f"ablation_{name}.csv", out / f"blocks_{name}.csv", out / f"ablation_{name}_ap.npz",
                       out / f"ablation_{name}.md")


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


def check_protocol(files: ResultFiles, protocol) -> None:
    """Refuse a results CSV that holds runs of another protocol (:class:`MixedProtocolsError`)."""
    other = {d["protocol"] for d in read_csv(files.runs)} - {protocol.key()}
    if other:
        raise MixedProtocolsError(
            f"{files.runs} holds runs of another protocol ({', '.join(sorted(other))}; this one is {protocol.key()}: "
            "the protocol or the package's RRIDConfig defaults changed). Pass --fresh to start again, or --out "
            "another folder.")


# ----------------------------------------------------------------------------- the loop

def _record(files: ResultFiles, protocol, run, wall: float, cpu: float, tables: dict) -> None:
    """Add one finished run to the three result files: AP and blocks first, then the runs CSV."""
    row, seed = run.row, run.seed
    tables["ap"][f"row{row:02d}_seed{seed}"] = run.all_AP.astype(np.float32)
    write_ap(files.ap, tables["ap"])
    blocks = [b for b in tables["blocks"] if (int(b["row"]), int(b["seed"])) != (row, seed)]
    blocks += [{"row": row, "seed": seed, "block": k, "mAP": m, "rank1": r1} for k, (m, r1) in run.blocks.items()]
    tables["blocks"] = blocks
    write_csv(files.blocks, BLOCK_COLUMNS, blocks)
    tables["runs"].append({"row": row, "seed": seed, "mAP": run.mAP, "rank1": run.rank1, "mINP": run.mINP,
                           "feature_dim": run.feature_dim, "epochs": protocol.epochs,
                           "train_seconds": run.train_seconds, "wall_seconds": wall, "cpu_seconds": cpu,
                           "protocol": protocol.key()})
    write_csv(files.runs, RUN_COLUMNS, tables["runs"])


def run(protocol, rows: Sequence[int], seeds: Sequence[int], out, say: Callable = print, cache_dir=None) -> str:
    """Train and score every (row, seed) of ``rows`` x ``seeds`` missing from ``out``'s results of
    ``protocol``, writing after each; then :func:`write_report`, whose summary it returns."""
    files = result_files(out, protocol)
    Path(out).mkdir(parents=True, exist_ok=True)
    check_protocol(files, protocol)
    t0 = time.perf_counter()
    feats = features(protocol, cache_dir, progress=True)
    built = (feats.info or {}).get("seconds") or 0
    say(f"feature cache ready in {time.perf_counter() - t0:.0f} s (built in {built:.0f} s): "
        f"{tuple(feats.train_x.shape)} training maps", flush=True)
    tables = {"runs": read_csv(files.runs), "blocks": read_csv(files.blocks), "ap": read_ap(files.ap)}
    done = {(int(d["row"]), int(d["seed"])) for d in tables["runs"]}
    todo = [(r, s) for s in seeds for r in rows if (r, s) not in done]
    say(f"{len(done)} runs already in {files.runs}; {len(todo)} to train", flush=True)
    for i, (row, seed) in enumerate(todo, 1):
        t1, c1 = time.perf_counter(), time.process_time()
        result = train_heads(row, seed, protocol, feats)
        wall, cpu = time.perf_counter() - t1, time.process_time() - c1
        _record(files, protocol, result, wall, cpu, tables)
        say(f"[{i}/{len(todo)}] row {row:2d} seed {seed}: mAP {result.mAP:.2f} rank-1 {result.rank1:.2f} "
            f"({result.train_seconds:.0f} s training, {wall:.0f} s in all)", flush=True)
    return write_report(files, protocol, feats.info)


# ----------------------------------------------------------------------------- the report

QUICK_README = """# Quick ablation of Table 2 (written by benchmarks/ablation_quick.py)

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
of 2-6 mAP points and could not resolve effects of 0.6-3 points within the time a 2-core CPU allows. Freezing one
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

"""


FULL_README = """# Full ablation of Table 2 (written by benchmarks/ablation_quick.py --protocol full)

**A head-only protocol on a frozen ImageNet ResNet-50: only the heads of each row are trained, on Market-1501 at
{height} x {width}. These are not the paper's end-to-end results.**

Protocol (`rrid.ablation.FULL`; the reasons for each choice are in the docstring of `rrid/ablation/full.py`):

- **Data**: Market-1501; its training identities but the last {val_ids} (held out, as the authors' code does) train
  the heads; the test split is Market-1501's (query and gallery, its protocol).
- **Backbone**: torchvision's {backbone} with its ImageNet weights (`imagenet` = {imagenet}), last stride 1, frozen:
  never trained here.
- **Cache**: not the feature maps but, for each of the bands that the stripes of P6, P4 and P2 cut the map's rows
  into, the maximum and the sum of the map over the band (`rrid.ablation.bands`): exactly what every head's pooling
  reads. Training images in {views} views (plain, mirrored, random flip + the authors' erasing), test images plain and
  mirrored.
- **Heads**: for each row and seed, the package's heads of that row (`RRID` with its backbone replaced by the cache,
  `RRIDLoss`, the package's default `RRIDConfig` otherwise) trained for {epochs} epochs of P x K = {p} x {k} batches,
  SGD lr {head_lr} (x0.1 after epoch {milestones}), momentum {momentum}, weight decay {weight_decay}. A seed fixes the
  batches, the views and the initial weights for every row, so differences between rows are paired.
- **Evaluation**: flip-averaged embedding, L2-normalised, Euclidean distances; the whole embedding (Table 2) and, for
  rows {block_rows}, each 256-d block alone (Tables 3 and 4).

**What it isolates**: how well each head design uses one fixed ImageNet feature map of real pedestrians at the paper's
input size. **What it cannot show**: how each head's gradients shape the backbone, which the paper's end-to-end
training includes (the paper fine-tunes ResNet-50 with every row's heads for 80 epochs).

**Tables 3 and 4**: which Table 2 rows gave the paper's single-feature tables is an **inference**, not stated in the
paper: Table 3 (q_i of P6 without / with the relation module) = rows 4 and 5; Table 4 (q_0 of P6 by global pooling) =
rows 6 (GAP), 5 (GMP), 7 (GAP+GMP) and 8 (GCP).

"""


VERDICTS_README = """Verdicts (`rrid.stats.verdict`) compare each 95 % interval with 0 and with the paper's
difference P (an interval contains its ends): "agrees with the paper" when it excludes 0 on P's side and contains P;
"agrees in sign, smaller than the paper's (at most X)" or "... larger than the paper's (at least X)" when it excludes 0
on P's side and lies short of P or beyond it; "contradicts the paper (at most X)" when it excludes 0 on the other side;
"no effect of the paper's size here (at most X)" when it contains 0 but lies short of P (the data rule out P's size,
not every difference); "cannot tell at this power" when it contains both 0 and P. X is the end of the interval that
bounds the difference; for a negative P the bounds read "at least" where they read "at most".

"""

QUICK_MACHINE = ("on one thread of this project's 2-core machine while other jobs shared it (wall time > CPU time: "
                 "the process waited for a core)")


def _fmt_cmp(c, label: str) -> str:
    q = c.quick
    ok = "yes" if q.half_width <= POWER_GOAL else "NO"
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


def _rows_table(w, runs: dict, label: str) -> None:
    w("## Rows (mAP, %; mean and 95 % t interval over seeds)")
    w()
    w(f"| row | F-dim | seeds | {label} mAP | 95 % CI | {label} rank-1 | paper mAP | paper rank-1 |")
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
        means = [mean_interval([v["mAP"] for v in runs[r].values()]).mean for r in done]
        rho = spearman([TABLE2[r - 1].market_map for r in done], means)
        w()
        w(f"Spearman's rho between the paper's Market-1501 mAP and the {label} mean mAP over {len(done)} rows: "
          f"{rho.rho:.2f} (p = {rho.pvalue:.3f}).")


def _comparison_tables(w, runs: dict, blocks: dict, label: str) -> list:
    header = [f"| comparison | paper | {label} mean | 95 % CI | half-width | <= 1.5 | seeds | verdict |",
              "|---|---:|---:|---:|---:|:-:|---:|---|"]
    cmp = comparisons(runs, [p for p in COMPARISONS if p[0] in runs and p[1] in runs])
    w()
    w("## Table 2 comparisons (row A - row B, mAP points; paired t interval over seeds)")
    w()
    w("\n".join(header))
    for c in cmp:
        w(_fmt_cmp(c, f"{c.a} - {c.b}"))
    bl = block_comparisons(blocks, [p for p in TABLE3_COMPARISONS + TABLE4_COMPARISONS
                                    if (p[0], p[2]) in blocks and (p[1], p[2]) in blocks])
    pool_of = {row: name for name, row in TABLE4_ROWS.items()}
    w()
    w("## Tables 3 and 4 (single 256-d blocks of P6, mAP points; paired t interval over seeds)")
    w()
    w("Which Table 2 rows gave the paper's Tables 3 and 4 is an inference, not stated in the paper: "
      "Table 3 = rows 4 (w/o RM) and 5 (RM), Table 4 = q_0 of P6 in rows 6 (GAP), 5 (GMP), 7 (GAP+GMP) and 8 (GCP).")
    w()
    w("\n".join(header))
    for c in bl:
        w(_fmt_cmp(c, f"q{c.block[-1]}: RM - w/o RM" if c.block != "P6/q0" else f"q0: {pool_of[c.a]} - {pool_of[c.b]}"))
    return cmp + bl


def report(files: ResultFiles, protocol, info: dict | None) -> str:
    """The summary (markdown) of the result files; ``info``: the feature cache's (``cache_info``)."""
    label = result_name(protocol)
    runs, blocks, lines = read_runs(files.runs), read_blocks(files.blocks), read_csv(files.runs)
    seeds = sorted({int(d["seed"]) for d in lines})
    s = io.StringIO()
    w = lambda text="": print(text, file=s)   # noqa: E731
    _rows_table(w, runs, label)
    every = _comparison_tables(w, runs, blocks, label)
    if every:
        worst = max(c.quick.half_width for c in every)
        w()
        w(f"Half-widths: {sum(c.quick.half_width <= POWER_GOAL for c in every)} of {len(every)} comparisons at or "
          f"below {POWER_GOAL} mAP points; the largest is {worst:.2f}.")
    train = sum(float(d["train_seconds"]) for d in lines)
    wall = sum(float(d["wall_seconds"]) for d in lines)
    cpu = sum(float(d["cpu_seconds"]) for d in lines)
    machine = QUICK_MACHINE if label == "quick" else f"on {(info or {}).get('device', 'the machine that ran them')}"
    w()
    w(f"Time: {len(lines)} runs ({len(runs)} rows x seeds {seeds}) took {wall / 60:.1f} min of wall time "
      f"({train / 60:.1f} min of it head training, the rest evaluation) and {cpu / 60:.1f} min of CPU time, "
      f"{machine}" + _build_time(info) + ".")
    return s.getvalue()


def write_report(files: ResultFiles, protocol, info: dict | None) -> str:
    """Write ``ablation_<name>.md`` (the protocol's description, then :func:`report`); return the report."""
    text = report(files, protocol, info)
    values = {**protocol.as_dict(), "milestones": ", ".join(map(str, protocol.milestones))}
    if isinstance(protocol, FullProtocol):
        values["block_rows"] = ", ".join(map(str, protocol.block_rows))
    with atomic_write(files.report) as f:
        readme = FULL_README if isinstance(protocol, FullProtocol) else QUICK_README
        f.write(readme.format(**values) + VERDICTS_README + "\n" + text)
    return text
