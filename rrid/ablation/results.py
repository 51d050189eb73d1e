"""The head-only benchmark's results: the CSV files of ``benchmarks/ablation_quick.py``
(``rrid.ablation.benchmark``; quick or full) read back, and paired intervals of the differences
the paper discusses, with their verdicts.
"""

from __future__ import annotations

import csv
from typing import NamedTuple

from rrid import paper as _paper
from rrid.model import TABLE2
from rrid.stats import paired_difference, verdict

__all__ = ["COMPARISONS", "POWER_GOAL", "TABLE3_ROWS", "TABLE4_ROWS", "PAPER_TABLE3", "PAPER_TABLE4",
           "TABLE3_COMPARISONS", "TABLE4_COMPARISONS", "Comparison", "read_runs", "read_blocks", "comparisons",
           "block_comparisons"]

# The pairs of Table 2 rows whose difference the paper discusses (Park & Ham 2020, Table 2 and
# the text around it): (A, B) means "A - B".
COMPARISONS = [(3, 1), (3, 2), (4, 3), (5, 4), (6, 4), (7, 4), (8, 5), (8, 6), (8, 7), (9, 4),
               (12, 9), (12, 10), (12, 11), (13, 12), (13, 8)]

POWER_GOAL = 1.5
"""mAP points: the half-width every paired 95 % interval of the quick benchmark should reach."""

# Tables 3 and 4 of the paper evaluate single 256-d features of P6 on Market-1501 (mAP, %).
# Which Table 2 rows gave those features is not stated in the paper; it is an INFERENCE:
# Table 3 compares q_i "w/o RM" and "w/ RM" in the one-scale GMP model, i.e. rows 4 and 5;
# Table 4 compares q_0 for the four global poolings in the one-scale model with the relation
# module, i.e. rows 6 (GAP), 5 (GMP), 7 (GAP+GMP) and 8 (GCP). The numbers and the mapping are held
# once, in rrid.paper; these are views of them keyed for the comparisons below.
TABLE3_ROWS = {"w/o RM": _paper.TABLE3_MODELS["without"], "RM": _paper.TABLE3_MODELS["with"]}
TABLE4_ROWS = {r.pooling: r.table2_row for r in _paper.TABLE4}
PAPER_TABLE3 = {r.region: (r.map_without, r.map_with) for r in _paper.TABLE3}   # region i: (w/o RM, RM) mAP
PAPER_TABLE4 = {r.pooling: r.map for r in _paper.TABLE4}                       # q_0 alone, mAP
# Table 3: q_i of row 5 - q_i of row 4, i = 1..6; Table 4: the pairs of global poolings.
TABLE3_COMPARISONS = [(5, 4, f"P6/q{i}") for i in range(1, 7)]
TABLE4_COMPARISONS = [(TABLE4_ROWS[a], TABLE4_ROWS[b], "P6/q0") for a, b in
                      [("GCP", "GAP"), ("GCP", "GMP"), ("GCP", "GAP+GMP"), ("GMP", "GAP"),
                       ("GAP+GMP", "GAP"), ("GAP+GMP", "GMP")]]



class Comparison(NamedTuple):
    """Row ``a`` - row ``b`` (or their ``block``): the paper's difference, the quick one, the verdict."""

    a: int
    b: int
    block: str | None
    paper: float
    quick: object      # rrid.stats.Interval (paired_difference, over seeds)
    verdict: object    # rrid.stats.Verdict: .category (one of rrid.stats.VERDICTS), str() its words


def read_runs(path) -> dict[int, dict[int, dict]]:
    """``ablation_quick.csv`` (or ``ablation_full.csv``) as {row: {seed: {"mAP": ..., "rank1": ..., "mINP": ...}}}."""
    out: dict[int, dict[int, dict]] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out.setdefault(int(r["row"]), {})[int(r["seed"])] = {k: float(r[k]) for k in ("mAP", "rank1", "mINP")}
    return out


def read_blocks(path) -> dict[tuple[int, str], dict[int, dict]]:
    """``blocks_quick.csv`` (or ``blocks_full.csv``) as {(row, block): {seed: {"mAP": ..., "rank1": ...}}}."""
    out: dict = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out.setdefault((int(r["row"]), r["block"]), {})[int(r["seed"])] = {k: float(r[k]) for k in ("mAP", "rank1")}
    return out


def _paired(per_seed_a: dict, per_seed_b: dict, key: str, confidence: float):
    seeds = sorted(set(per_seed_a) & set(per_seed_b))
    return paired_difference([per_seed_a[s][key] for s in seeds], [per_seed_b[s][key] for s in seeds], confidence)


def comparisons(runs: dict, pairs=COMPARISONS, key: str = "mAP", confidence: float = 0.95) -> list[Comparison]:
    """Paired intervals over the seeds both rows have, for each (A, B) in ``pairs``, with the
    paper's Market-1501 difference (``TABLE2``) and :func:`rrid.stats.verdict`."""
    out = []
    for a, b in pairs:
        paper = getattr(TABLE2[a - 1], "market_map" if key == "mAP" else "market_rank1") - \
            getattr(TABLE2[b - 1], "market_map" if key == "mAP" else "market_rank1")
        d = _paired(runs[a], runs[b], key, confidence)
        out.append(Comparison(a, b, None, round(paper, 2), d, verdict(d, paper)))
    return out


def block_comparisons(blocks: dict, pairs=TABLE3_COMPARISONS + TABLE4_COMPARISONS, confidence: float = 0.95) -> list[Comparison]:
    """Paired mAP intervals of single blocks (Tables 3 and 4), with the paper's difference."""
    pool_of = {row: name for name, row in TABLE4_ROWS.items()}
    out = []
    for a, b, block in pairs:
        if block == "P6/q0":
            paper = PAPER_TABLE4[pool_of[a]] - PAPER_TABLE4[pool_of[b]]
        else:
            wo, rm = PAPER_TABLE3[int(block[-1])]
            paper = (rm - wo) if (a, b) == (TABLE3_ROWS["RM"], TABLE3_ROWS["w/o RM"]) else (wo - rm)
        d = _paired(blocks[a, block], blocks[b, block], "mAP", confidence)
        out.append(Comparison(a, b, block, round(paper, 2), d, verdict(d, paper)))
    return out

