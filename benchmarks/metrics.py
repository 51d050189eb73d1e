"""How fast is rrid.metrics.evaluate_ranking on a Market-1501-size problem?

Prints, side by side, the seconds of
  * evaluate_ranking (counting, no sort),
  * one numpy.argsort of the same distance matrix (the floor of any sort-based evaluator),
  * the per-query reference loop (timed on a subset of the queries and extrapolated),
their ratios, the peak extra memory of evaluate_ranking, and the largest difference between
its numbers and the reference's on the full problem.

The problem: 3,368 queries x 19,732 gallery images with float32 random distances, 750 test
identities, 6 cameras, about 4.5 queries per identity (each from a different camera), 14-29
gallery images per identity and distractors (pid 0) for the rest of the gallery, as in
Market-1501. Random distances are the slow case: the matches are spread over the whole row.

    python benchmarks/metrics.py [--subset 300] [--threads 2]
"""

import argparse
import time
import tracemalloc

import numpy as np

from rrid.metrics import evaluate_ranking, evaluate_ranking_reference


def market_like(seed=0, num_query=3368, num_gallery=19732, num_ids=750, num_cams=6):
    rng = np.random.default_rng(seed)
    ids = np.arange(1, num_ids + 1)
    per_id = rng.integers(14, 30, num_ids)
    g_pids = np.repeat(ids, per_id)
    g_pids = np.concatenate([g_pids, np.zeros(num_gallery - len(g_pids), dtype=g_pids.dtype)])  # distractors
    g_camids = rng.integers(0, num_cams, num_gallery)
    q_pids, q_camids = [], []
    for pid in ids:  # 3 to 6 queries per identity, from distinct cameras
        cams = rng.permutation(num_cams)[: rng.integers(3, 7)]
        q_pids += [pid] * len(cams)
        q_camids += list(cams)
    keep = np.sort(rng.permutation(len(q_pids))[:num_query])
    q_pids, q_camids = np.array(q_pids)[keep], np.array(q_camids)[keep]
    distmat = rng.random((num_query, num_gallery), dtype=np.float32)
    return distmat, q_pids, g_pids, q_camids, g_camids


def seconds(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subset", type=int, default=300, help="queries timed for the reference loop")
    parser.add_argument("--chunk", type=int, default=None, help="queries per chunk (default: automatic)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (numpy here is single-threaded)")
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)

    distmat, q_pids, g_pids, q_camids, g_camids = market_like()
    print(f"problem: {distmat.shape[0]:,} x {distmat.shape[1]:,} float32, "
          f"{len(np.unique(q_pids))} ids, {np.mean(g_pids == 0):.0%} distractors in the gallery")

    t_fast, fast = seconds(lambda: evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids, chunk=args.chunk))
    t_sort, _ = seconds(lambda: np.argsort(distmat, axis=1), repeat=2)
    n = args.subset
    t_sub, _ = seconds(lambda: evaluate_ranking_reference(distmat[:n], q_pids[:n], g_pids, q_camids[:n], g_camids), repeat=1)
    t_ref = t_sub * distmat.shape[0] / n

    tracemalloc.start()
    evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids, chunk=args.chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    ref = evaluate_ranking_reference(distmat, q_pids, g_pids, q_camids, g_camids)
    diff = max(abs(fast["mAP"] - ref["mAP"]), abs(fast["mINP"] - ref["mINP"]),
               float(np.abs(fast["cmc"] - ref["cmc"]).max()),
               float(np.nanmax(np.abs(fast["all_AP"] - ref["all_AP"]))))

    print(f"{'method':<44}{'seconds':>10}{'/ argsort':>12}")
    label = f"evaluate_ranking (counting, chunks of {args.chunk or 'auto'})"
    print(f"{label:<44}{t_fast:>10.2f}{t_fast / t_sort:>12.2f}")
    print(f"{'numpy.argsort of the matrix (one call)':<44}{t_sort:>10.2f}{1:>12.2f}")
    print(f"{f'reference loop (timed on {n} queries, x{distmat.shape[0] / n:.1f})':<44}{t_ref:>10.2f}{t_ref / t_sort:>12.2f}")
    print(f"evaluate_ranking is {t_ref / t_fast:.0f}x faster than the reference loop")
    print(f"peak extra memory of evaluate_ranking (tracemalloc): {peak / 2**20:.1f} MiB")
    print(f"mAP {fast['mAP']:.6f}, rank-1 {fast['cmc'][0]:.6f}, mINP {fast['mINP']:.6f}; "
          f"max abs difference from the reference: {diff:.2e}")


if __name__ == "__main__":
    main()
