"""Quick-mode training speed when another process shares the CPU: threads and OpenMP wait policy.

    python benchmarks/contention.py [--seconds 8] [--rounds 3] [--busy 1] [--out benchmarks/results/contention.txt]

Times the quick-mode training step (the model of configs/quick/row08.yaml, Ours-S on
ResNet-18, a P x K = 8 x 4 batch of 96 x 32 images: forward, loss, backward, SGD update) in
images per second, for every combination of

  threads       1 or 2 torch intra-op threads
  wait policy   libgomp's default (threads spin for a while at the end of each parallel
                region) or OMP_WAIT_POLICY=PASSIVE (they sleep at once)
  busy          0, or ``--busy`` CPU-bound processes (a ``while`` loop that ends when the script
                does) that the script starts before the measurement and kills after it

Each measurement runs in a fresh Python process, because OpenMP reads OMP_WAIT_POLICY once, when
torch loads it, and times whole steps (after one warm-up step) until ``--seconds`` have passed.
The combinations are interleaved round by round and the median round is reported, so a slow
moment of the machine hits all of them alike. Prints the table, the
slowdown that the busy process causes to each setting, and the load average before and after.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# CPU-bound until killed, and ends by itself if this script dies first (its parent changes)
SPIN = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass"


def start_spinners(n: int) -> list:
    return [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n)]


def stop_spinners(spinners: list) -> None:
    for spinner in spinners:
        spinner.kill()
        spinner.wait()


def worker(threads: int, seconds: float) -> None:
    """Runs in a child process: prints the images/s of whole training steps timed for ``seconds``."""
    import torch

    from rrid.book import quick_config_path
    from rrid.config import load_config
    from rrid.losses import RRIDLoss
    from rrid.model import RRID

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = load_config(quick_config_path(8))
    p, k = cfg.data.p, cfg.data.k
    model = RRID(cfg.model, num_classes=150).train()
    loss_fn = RRIDLoss(cfg.loss.margin, cfg.loss.ce_weight)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=5e-4)
    images = torch.randn(p * k, 3, cfg.data.height, cfg.data.width)
    labels = torch.arange(p).repeat_interleave(k)

    def step():
        loss, _ = loss_fn(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up: allocator, oneDNN primitive caches
    start, steps = time.perf_counter(), 0
    while steps < 1 or time.perf_counter() - start < seconds:
        step()
        steps += 1
    elapsed = time.perf_counter() - start
    print(json.dumps({"images_per_s": p * k * steps / elapsed, "steps": steps}))


def measure(threads: int, policy: str, busy: int, seconds: float) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    spinners = start_spinners(busy)
    try:
        done = subprocess.run([sys.executable, __file__, "--worker", "--threads", str(threads), "--seconds", str(seconds)],
                              env=env, capture_output=True, text=True, check=True, timeout=1800)
    finally:
        stop_spinners(spinners)
    return json.loads(done.stdout.strip().splitlines()[-1])["images_per_s"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8, help="time whole steps for at least this long")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions (the median is reported)")
    parser.add_argument("--busy", type=int, default=1, help="CPU-bound processes started for the busy runs")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "contention.txt"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.threads, args.seconds)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # `kill` still runs the clean-up below

    settings = list(itertools.product((1, 2), ("default", "PASSIVE"), (0, args.busy)))
    runs = {s: [] for s in settings}
    load_before = os.getloadavg()
    for r in range(args.rounds):
        for s in settings:
            runs[s].append(measure(*s, seconds=args.seconds))
            print(f"round {r + 1}: threads={s[0]} policy={s[1]:8s} busy={s[2]}: {runs[s][-1]:6.1f} images/s", flush=True)
    load_after = os.getloadavg()
    speed = {s: statistics.median(v) for s, v in runs.items()}

    lines = [f"quick-mode training step (Ours-S, ResNet-18, 32 images of 96 x 32), images/s, median of "
             f"{args.rounds} interleaved rounds of >= {args.seconds:g} s each; {os.cpu_count()} CPUs; "
             f"busy = {args.busy} CPU-bound `while` loop process(es) started by the script",
             f"load average before: {load_before[0]:.1f}, after: {load_after[0]:.1f} "
             "(above 0 when other jobs ran: they slow every setting alike)", "",
             f"{'threads':>7} {'OMP_WAIT_POLICY':>15} {'idle':>8} {'busy':>8} {'busy / idle':>12}"]
    for threads, policy in itertools.product((1, 2), ("default", "PASSIVE")):
        idle, busy = speed[threads, policy, 0], speed[threads, policy, args.busy]
        lines.append(f"{threads:>7} {policy:>15} {idle:8.1f} {busy:8.1f} {busy / idle:12.2f}")
    best_idle = max(speed[s] for s in settings if s[2] == 0)
    best_busy = max(speed[s] for s in settings if s[2] == args.busy)
    lines += ["", "relative to the fastest setting in each column:",
              f"{'threads':>7} {'OMP_WAIT_POLICY':>15} {'idle':>8} {'busy':>8}"]
    for threads, policy in itertools.product((1, 2), ("default", "PASSIVE")):
        lines.append(f"{threads:>7} {policy:>15} {speed[threads, policy, 0] / best_idle:8.2f} "
                     f"{speed[threads, policy, args.busy] / best_busy:8.2f}")
    lines += ["", "every round (images/s):"]
    lines += [f"  threads={t} policy={p} busy={b}: " + ", ".join(f"{x:.1f}" for x in runs[t, p, b]) for t, p, b in settings]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.out:
        sys.path.insert(0, str(ROOT))
        from rrid.files import atomic_write

        with atomic_write(args.out) as f:
            f.write(f"$ python benchmarks/contention.py --seconds {args.seconds:g} --rounds {args.rounds} --busy {args.busy}\n")
            f.write(text)


if __name__ == "__main__":
    main()
