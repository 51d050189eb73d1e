"""k-reciprocal re-ranking: rrid.rerank against fast-reid's numpy ``re_ranking``, side by side.

    python benchmarks/rerank.py [--sizes 1000x5000x256 3368x15913x256 3368x15913x3840] [--threads 2]

The features: identities as Gaussian clusters (a centre per identity, N(0, I), and each image
its identity's centre plus N(0, noise² I)), L2-normalised like re-ID embeddings; queries and
gallery images are drawn from the same identities (one identity per 25 images). With the default
noise 1.5 the Euclidean rank-1 is about 1, and float32 rounding does not reorder the neighbour
lists, so the printed difference from fast-reid checks the implementation; from noise 2.0
(rank-1 0.95) distances closer than float32's rounding flip neighbour sets, and any two float32
implementations differ (this one and the dense one it replaced differ from fast-reid by 7e-2
there, at the same speed). Each method runs in its own process, which loads the features from
a .npy file, imports what it needs, then runs once:

  rrid       rrid.rerank(q, g) (float32, default memory budget)
  fast-reid  the three Euclidean distance matrices (torch.cdist, float32) and fast-reid 1.4.0's
             ``re_ranking`` (numpy), its file fetched with ``pip download --no-deps fastreid``
             into a temporary folder and loaded by path (never committed; its package's imports
             pull in faiss, cv2 and an old torch)

Both use torch.set_num_threads(threads). Reported per run: wall seconds of the call, and the
peak memory it adds: the child's peak RSS (Linux's VmHWM; ru_maxrss would also count the
parent's memory at the fork) at the end minus its peak RSS just before the call (after imports
and loading the features), and the child's whole peak RSS.

fast-reid runs at the first size only: at Market-1501 scale (n = 19,281) it holds n x n matrices
(the distances, V, the expanded V, the ranks: about 5 x 4 n² bytes, 6.9 GiB) on this shared
machine. Put that size first to run it there (``--sizes 3368x15913x256``: once here, 54.5 s and
8.2 GiB added, against 4.6 s and 0.5 GiB for rrid, max |d* difference| 4.5e-07).

Goals (issue 20): at 1,000 x 5,000 (256-d) rrid takes at most 1/10 of fast-reid's time and 1/2 of
its peak memory; at Market-1501 scale (3,368 x 15,913; 256-d and 3,840-d) rrid takes at most 60 s
and 2 GB (the peak it adds, as above). The last output is in benchmarks/results/rerank.txt.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

GIB = 2**30
FAST_REID = "fastreid==1.4.0"


def clustered_features(num_q, num_g, dim, noise, seed=0, per_id=25):
    """(features, identities): unit-norm rows, centre of the row's identity plus noise."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, max(1, (num_q + num_g) // per_id), num_q + num_g)
    centres = rng.standard_normal((ids.max() + 1, dim), dtype=np.float32)
    x = centres[ids] + noise * rng.standard_normal((len(ids), dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), ids


def rank1(x, ids, num_q):
    """Share of queries whose nearest gallery image (Euclidean) has the query's identity."""
    import torch

    nearest = torch.cdist(torch.from_numpy(x[:num_q]), torch.from_numpy(x[num_q:])).argmin(1).numpy()
    return float(np.mean(ids[num_q:][nearest] == ids[:num_q]))


def fetch_fast_reid(folder: Path) -> Path | None:
    """fast-reid's evaluation/rerank.py, from its wheel on PyPI (None when pip cannot get it)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), FAST_REID]
    if subprocess.run(cmd, capture_output=True, check=False).returncode != 0:
        return None
    wheel = next(folder.glob("fastreid-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        return Path(z.extract("fastreid/evaluation/rerank.py", folder))


def peak_rss():
    """This process's peak resident set size in bytes: Linux's VmHWM, which starts afresh at exec.
    (ru_maxrss does not: after fork and exec it still counts the parent's memory at the fork.)"""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(method, features, num_q, threads, out, fast_reid):
    """Runs in its own process: load, run once, print a JSON line."""
    import torch

    torch.set_num_threads(threads)
    x = torch.from_numpy(np.load(features))
    q, g = x[:num_q], x[num_q:]
    if method == "rrid":
        from rrid.reranking import rerank

        def run():
            return rerank(q, g).numpy()
    else:
        spec = importlib.util.spec_from_file_location("fastreid_rerank", fast_reid)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)

        def run():
            dist = [torch.cdist(a, b).numpy() for a, b in ((q, g), (q, q), (g, g))]
            return module.re_ranking(*dist, k1=20, k2=6, lambda_value=0.3)
    before = peak_rss()
    t0 = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - t0
    peak = peak_rss()
    if out:
        np.save(out, result)
    print(json.dumps(dict(seconds=seconds, added=peak - before, peak=peak, shape=list(result.shape))))


def run_child(method, features, num_q, threads, out=None, fast_reid=None):
    cmd = [sys.executable, __file__, "--child", method, "--features", str(features), "--num-query", str(num_q),
           "--threads", str(threads)]
    cmd += ["--out", str(out)] if out else []
    cmd += ["--fast-reid", str(fast_reid)] if fast_reid else []
    root = str(Path(__file__).resolve().parents[1])  # this checkout's rrid, whatever is installed
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(runs):
    """The median seconds and the largest memory of repeated runs."""
    return dict(seconds=statistics.median(r["seconds"] for r in runs), all=[r["seconds"] for r in runs],
                added=max(r["added"] for r in runs), peak=max(r["peak"] for r in runs))


def row(label, r):
    runs = ", ".join(f"{t:.2f}" for t in r["all"])
    return f"{label:<34}{r['seconds']:>10.2f}{r['added'] / GIB:>13.2f}{r['peak'] / GIB:>12.2f}   {runs}"


def load():
    return "load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def compare(size, features, num_q, threads, fast_reid, tmp, repeat):
    """fast-reid and rrid, alternately: the table rows, the ratios and the goals."""
    fr, rr = [], []
    for _ in range(repeat):
        fr.append(run_child("fast-reid", features, num_q, threads, tmp / "fr.npy", fast_reid))
        rr.append(run_child("rrid", features, num_q, threads, tmp / "rr.npy"))
    diff = np.abs(np.load(tmp / "fr.npy") - np.load(tmp / "rr.npy")).max()
    fr, rr = summary(fr), summary(rr)
    print(row(f"{size} fast-reid re_ranking", fr))
    print(row(f"{size} rrid.rerank", rr))
    t, m = rr["seconds"] / fr["seconds"], rr["added"] / fr["added"]
    print(f"  rrid / fast-reid: time {t:.3f} (goal <= 0.1: {'met' if t <= 0.1 else 'NOT met'}), "
          f"memory added {m:.3f} (goal <= 0.5: {'met' if m <= 0.5 else 'NOT met'}); "
          f"max |d* difference| {diff:.2e}")


def alone(size, features, num_q, threads, repeat, why):
    rr = summary([run_child("rrid", features, num_q, threads) for _ in range(repeat)])
    print(row(f"{size} rrid.rerank", rr))
    ok_t, ok_m = rr["seconds"] <= 60, rr["added"] <= 2 * GIB
    print(f"  goal <= 60 s: {'met' if ok_t else 'NOT met'}; goal <= 2 GiB added: {'met' if ok_m else 'NOT met'}"
          f" (fast-reid {why})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["1000x5000x256", "3368x15913x256", "3368x15913x3840"],
                        help="QxGxD; fast-reid runs beside rrid at the first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--noise", type=float, default=1.5, help="noise / centre scale of the clusters")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each method (alternating); the median is shown")
    parser.add_argument("--child", choices=["rrid", "fast-reid"], help=argparse.SUPPRESS)
    parser.add_argument("--features", help=argparse.SUPPRESS)
    parser.add_argument("--num-query", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--fast-reid", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.features, args.num_query, args.threads, args.out, args.fast_reid)

    print(f"k1 = 20, k2 = 6, lambda = 0.3; {args.threads} torch threads; {os.cpu_count()} CPUs; {load()}")
    print(f"seconds: median of {args.repeat} runs, each in a fresh process; memory: the largest over the runs of the"
          " peak RSS the call adds (VmHWM after - before the call, after imports and features); child peak:"
          " the child's whole peak RSS")
    print(f"{'problem (Q x G x d), method':<34}{'seconds':>10}{'added (GiB)':>13}{'child peak':>12}   runs (s)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fast_reid = fetch_fast_reid(tmp)
        for i, size in enumerate(args.sizes):
            num_q, num_g, dim = map(int, size.split("x"))
            x, ids = clustered_features(num_q, num_g, dim, args.noise)
            np.save(tmp / "x.npy", x)
            print(f"{size}: {ids.max() + 1} identities, rank-1 of the Euclidean ranking {rank1(x, ids, num_q):.3f}")
            if i == 0 and fast_reid is not None:
                compare(size, tmp / "x.npy", num_q, args.threads, fast_reid, tmp, args.repeat)
            else:
                n = num_q + num_g
                why = (f"not run: `pip download --no-deps {FAST_REID}` failed" if fast_reid is None else
                       f"runs at the first size only: here its n x n matrices would hold {5 * 4 * n * n / GIB:.1f} GiB")
                alone(size, tmp / "x.npy", num_q, args.threads, args.repeat, why)
    print(load())


if __name__ == "__main__":
    main()
