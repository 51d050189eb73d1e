"""The GPU check: what only a CUDA machine can show, in one run, with a report.

    python benchmarks/gpu_check.py [--parts chapters throughput epoch ddp] [--steps 10] [--out DIR]

Four parts, each reported even when another fails:

  chapters    every chapter under nbval in full mode with the smoke setting (RRID_MODE=full
              RRID_SMOKE=1: ResNet-50 at 384 x 128 on market1501-mini, the smallest amounts), now on
              CUDA: the device-placement, TF32 and autocast paths that a CPU never takes;
  throughput  the training step (``rrid.train.train_step``) of Ours-F at the paper's batch of 64 in
              fp32, fp16 (with a gradient scaler) and bf16 (where the GPU has bf16 convolutions),
              beside a bare ResNet-50 with the same input, side by side (benchmarks/train_step.py's
              Stepper): what the estimate of ``rrid.cost`` assumed, measured;
  epoch       one epoch of the paper's config on market1501-mini (random weights: nothing is
              downloaded) with its evaluation, through ``python -m rrid train``;
  ddp         the same under ``torchrun``, one process per GPU, on NCCL: the checkpoint must record
              that world size.

Without CUDA it refuses in one line (exit status 2) and runs nothing. It writes
``gpu_check.md`` and ``gpu_check.json`` into ``--out`` (default ``benchmarks/results``) and exits
1 when a part failed. It needs market1501-mini (``rrid.paths.market_mini``) and the book's
prepared models (``python -m rrid prepare-book``; the chapters part runs it first).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_step import BareResNet, Stepper, side_by_side  # noqa: E402  (benchmarks/train_step.py)

from rrid import book, runtime  # noqa: E402
from rrid.checkpoint import load_checkpoint  # noqa: E402
from rrid.files import atomic_write  # noqa: E402
from rrid.losses import RRIDLoss, SoftmaxLoss  # noqa: E402
from rrid.model import RRID, RRIDConfig  # noqa: E402
from rrid.paths import market_mini  # noqa: E402

PARTS = ("chapters", "throughput", "epoch", "ddp")
SMOKE_ENV = {"RRID_MODE": "full", "RRID_SMOKE": "1", "RRID_LIVEPLOT": "static", "TQDM_DISABLE": "1",
             "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0", "OMP_WAIT_POLICY": "PASSIVE"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which checks to run (default: all)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per precision (default: 10)")
    p.add_argument("--batch", type=int, default=64, help="images per training step (default: the paper's 64)")
    p.add_argument("--gpus", type=int, default=None, help="processes of the ddp part (default: every GPU)")
    p.add_argument("--timeout", type=int, default=600, help="seconds each chapter or command may take (default: 600)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder of the report")
    return p


def parse(argv=None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    bad_gpus = args.gpus is not None and args.gpus < 1
    if args.steps < 1 or args.batch < 8 or args.batch % 4 or args.timeout < 1 or bad_gpus:
        parser().error(f"--steps >= 1, --batch a multiple of 4 from 8, --timeout >= 1 and --gpus >= 1 are needed "
                       f"(got {args.steps}, {args.batch}, {args.timeout}, {args.gpus})")
    return args


def refusal() -> str | None:
    """Why this machine cannot run the check (None: it can)."""
    if not torch.cuda.is_available():
        built = f"with CUDA {torch.version.cuda}" if torch.version.cuda else "without CUDA"
        return f"gpu_check needs a CUDA GPU: torch.cuda.is_available() is False here (torch {torch.__version__}, built {built})"
    if market_mini() is None:
        return "gpu_check needs market1501-mini: set RRID_MARKET_MINI or put it at ../shared/data/market1501-mini"
    return None


def _run(command: list[str], env: dict, timeout: int) -> tuple[bool, float, str]:
    """(succeeded, seconds, the last lines of its output) of a child process."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        ok, text = done.returncode == 0, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        ok, text = False, f"timed out after {timeout} s\n{e.stdout or ''}"
    return ok, time.perf_counter() - start, "\n".join(text.strip().splitlines()[-15:])


def _env(**extra) -> dict:
    return {**os.environ, **SMOKE_ENV, "PYTHONPATH": str(ROOT), **extra}


def check_chapters(args) -> dict:
    """Every page of the book under nbval, one pytest per page, in full mode's smoke setting."""
    env = _env()
    ok, seconds, tail = _run([sys.executable, "-m", "rrid", "prepare-book"], _env(RRID_MODE="quick", RRID_SMOKE="0"),
                             args.timeout * 4)
    results = {"prepare-book": {"ok": ok, "seconds": seconds, "tail": "" if ok else tail}}
    for chapter in book.chapters():
        page = ROOT / f"{chapter}.ipynb"
        if page.is_file():
            ok, seconds, tail = _run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "-p", "no:randomly",
                                      f"--nbval-cell-timeout={args.timeout}", str(page)], env, args.timeout * 4)
            results[chapter] = {"ok": ok, "seconds": seconds, "tail": "" if ok else tail}
    return results


def check_throughput(args) -> dict:
    """Images per second of the training step, fp32 / fp16 / bf16, beside a bare ResNet-50 (fp32)."""
    device = torch.device("cuda")
    dtypes = {"fp32": None, "fp16": torch.float16}
    if runtime.bf16_convolutions(device):
        dtypes["bf16"] = torch.bfloat16
    torch.manual_seed(0)
    full = RRID(RRIDConfig.preset("ours-f"), 651).to(device)
    steppers = [Stepper(full, RRIDLoss(margin=1.2, ce_weight=2.0), args.batch, 384, 128, device, amp_dtype=d)
                for d in dtypes.values()]
    steppers.append(Stepper(BareResNet(651).to(device), SoftmaxLoss(), args.batch, 384, 128, device))
    rates = side_by_side(steppers, args.steps)
    out = {f"Ours-F {name}": rate for name, rate in zip(dtypes, rates)}
    out["bare ResNet-50 fp32"] = rates[-1]
    out["auto (rrid.runtime.amp_dtype)"] = str(runtime.amp_dtype("auto", device)).replace("torch.", "")
    return out


def _train_command(out_dir: Path, extra: list[str]) -> list[str]:
    overrides = ["model.pretrained=false", "train.epochs=1", "data.val_ids=0", f"data.root={market_mini()}",
                 "train.tensorboard=false", "data.workers=4"] + extra
    return ["-m", "rrid", "train", "--config", str(ROOT / book.FULL_CONFIG), "--out", str(out_dir), "--no-progress",
            *[a for o in overrides for a in ("--set", o)]]


def _epoch_record(out_dir: Path) -> dict:
    lines = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    epoch = next(r for r in lines if r.get("kind") == "epoch")
    evaluation = next(r for r in lines if r.get("kind") == "eval")
    return {"img_per_s": epoch["img_per_s"], "mAP": evaluation["mAP"], "rank1": evaluation["rank1"]}


def check_epoch(args) -> dict:
    """One epoch of the paper's config on market1501-mini, with its evaluation."""
    with tempfile.TemporaryDirectory() as tmp:
        ok, seconds, tail = _run([sys.executable, *_train_command(Path(tmp) / "run", [])], _env(), args.timeout)
        return {"ok": ok, "seconds": seconds, **(_epoch_record(Path(tmp) / "run") if ok else {"tail": tail})}


def check_ddp(args) -> dict:
    """The epoch under torchrun, one process per GPU (NCCL); last.pt must record the world size."""
    gpus = args.gpus or torch.cuda.device_count()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "ddp"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                   *_train_command(run, [f"data.p={max(2, 16 // gpus)}"])]
        ok, seconds, tail = _run(command, _env(), args.timeout)
        world = None
        if ok:
            world = load_checkpoint(run / "last.pt").get("world_size")
            ok = world == gpus
        return {"ok": ok, "seconds": seconds, "processes": gpus, "world_size_in_last_pt": world,
                **({} if ok else {"tail": tail})}


CHECKS = {"chapters": check_chapters, "throughput": check_throughput, "epoch": check_epoch, "ddp": check_ddp}


def failed(results: dict) -> list[str]:
    """The parts (or chapters) that did not pass."""
    bad = []
    for part, result in results.items():
        if isinstance(result, dict) and "error" in result:
            bad.append(part)
        elif part == "chapters":
            bad += [f"chapters/{name}" for name, r in result.items() if not r["ok"]]
        elif isinstance(result, dict) and result.get("ok") is False:
            bad.append(part)
    return bad


def report(results: dict, machine: dict) -> str:
    """The markdown report of ``results`` ({part: its dict}) on ``machine``."""
    lines = ["# GPU check (benchmarks/gpu_check.py)", "", ", ".join(f"{k}: {v}" for k, v in machine.items()), ""]
    for part, result in results.items():
        lines.append(f"## {part}")
        if "error" in result:
            lines += [f"FAILED: {result['error']}", ""]
            continue
        if part == "chapters":
            lines += ["| page | result | seconds |", "|---|---|---:|"]
            lines += [f"| {name} | {'passed' if r['ok'] else 'FAILED'} | {r['seconds']:.0f} |"
                      for name, r in result.items()]
            lines += [f"\n{name}:\n```\n{r['tail']}\n```" for name, r in result.items() if r["tail"]]
        else:
            lines += [f"- {key}: {value:,.1f}" if isinstance(value, float) else f"- {key}: {value}"
                      for key, value in result.items() if key != "tail"]
            if result.get("tail"):
                lines.append(f"```\n{result['tail']}\n```")
        lines.append("")
    bad = failed(results)
    lines.append(f"**{'All passed' if not bad else 'Failed: ' + ', '.join(bad)}.**")
    return "\n".join(lines) + "\n"


def machine() -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"GPU": gpu, "GPUs": torch.cuda.device_count(), "torch": torch.__version__, "CUDA": torch.version.cuda,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def write_report(results: dict, where: Path, about: dict) -> Path:
    with atomic_write(where / "gpu_check.json") as f:
        json.dump({"machine": about, "results": results}, f, indent=1)
    with atomic_write(where / "gpu_check.md") as f:
        f.write(report(results, about))
    return where / "gpu_check.md"


def main(argv=None) -> int:
    args = parse(argv)
    why = refusal()
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    results = {}
    for part in args.parts:
        print(f"gpu_check: {part} ...", flush=True)
        try:
            results[part] = CHECKS[part](args)
        except Exception as e:      # noqa: BLE001  a part that breaks is reported, and the others still run
            results[part] = {"error": re.sub(r"\s+", " ", f"{type(e).__name__}: {e}")[:500]}
    path = write_report(results, args.out, machine())
    print(path.read_text())
    return 1 if failed(results) else 0


if __name__ == "__main__":
    sys.exit(main())
