"""How long each chapter of the book, and its slowest cell, takes to execute in quick mode.

Executes every chapter of ``_toc.yml`` in a fresh kernel (nbclient, as myst-nb and nbval do)
with ``RRID_MODE=quick``, the Makefile's environment and an empty model cache, as on a fresh
clone. Before the chapters, the one-time preparation step that ``make book`` and ``make nbval``
run first (``python -m rrid prepare-book``: the ablation's backbone, feature cache and trained
heads, and the end-to-end quick models of ``BOOK_QUICK_MODELS``) is run into that empty cache and
timed on its own line, "preparation"; a chapter that needs another quick model pays for training
it. Each
cell runs under the build's per-cell timeout (``execute.timeout`` in ``_config.yml``), and the
slowest cell of every chapter is reported with its share of that timeout: a cell above 1/5 of it
is flagged, because a machine five times slower (or busy with other work) would fail the build.

``--warm`` keeps the model cache that ``make prepare`` built (``rrid.paths.cache_dir()``) instead of an
empty one: the preparation line then only checks that everything is there, and the chapters are
timed alone (quicker to repeat, e.g. beside ``--busy``).

``--busy N`` starts N CPU-bound processes (a ``while`` loop, like ``while True: pass``, that also
ends if this script dies) for the whole measurement and kills them after it: the build on a
machine that something else keeps busy.

``--full-smoke`` times what ``make test-full`` runs instead: every chapter in full mode with the
smoke setting (``RRID_MODE=full RRID_SMOKE=1``), after the half of the preparation those chapters
read (``prepare-book --heads-only``), and then the full-mode tests (``pytest tests -m full_mode``:
the README's Colab snippet), as one more line.

Writes ``benchmarks/results/book_times.csv`` and ``book_times.md`` (the table the preface
includes), or ``book_times_busy.csv`` / ``.md`` with ``--busy``, or ``book_times_full_smoke.csv`` /
``.md`` with ``--full-smoke``, and prints the table.

    python benchmarks/book_times.py [--chapters book/07_training ...] [--busy 1] [--full-smoke]
"""

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import yaml
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rrid.book import chapters  # noqa: E402
from rrid.files import atomic_write  # noqa: E402

HEADROOM = 5  # every cell must run in under 1 / HEADROOM of the per-cell timeout
# CPU-bound until killed, and ends by itself if this script dies first (its parent changes)
SPIN = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass"


class TimedClient(NotebookClient):
    """nbclient's executor, recording the wall time of every cell."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cell_seconds: dict[int, float] = {}

    async def async_execute_cell(self, cell, cell_index, *args, **kwargs):
        start = time.perf_counter()
        try:
            return await super().async_execute_cell(cell, cell_index, *args, **kwargs)
        finally:
            if cell.cell_type == "code":
                self.cell_seconds[cell_index] = time.perf_counter() - start


def first_line(source: str) -> str:
    """The cell's first line of code that is not blank, a comment or an import (else its first line)."""
    lines = [line.strip() for line in source.splitlines() if line.strip()]
    code = [line for line in lines if not line.startswith(("#", "import ", "from ", "%"))]
    return (code or lines or [""])[0]


def run(chapter: str, workdir: Path, timeout: int) -> tuple[float, str, float]:
    """(chapter seconds, "cell N: its first line of code" for its slowest cell, that cell's seconds)."""
    nb = nbformat.read(ROOT / f"{chapter}.ipynb", as_version=4)
    client = TimedClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    index, cell_seconds = max(client.cell_seconds.items(), key=lambda item: item[1])
    return seconds, f"cell {index}: {first_line(nb.cells[index].source)}", cell_seconds


def prepare(*options: str) -> float:
    """Seconds of ``python -m rrid prepare-book`` (a child process, the environment of this one)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rrid", "prepare-book", *options], check=True, cwd=ROOT,
                   env={**os.environ, "RRID_MODE": "quick"})
    return time.perf_counter() - start


def full_mode_tests() -> float:
    """Seconds of the full-mode tests ``make test-full`` runs after the chapters."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "tests", "-m", "full_mode"],
                   check=True, cwd=ROOT)
    return time.perf_counter() - start


def config_timeout() -> int:
    return int(yaml.safe_load((ROOT / "_config.yml").read_text())["execute"]["timeout"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapters", nargs="*", help="chapters as in _toc.yml (default: every notebook)")
    parser.add_argument("--busy", type=int, default=0, help="CPU-bound processes to run beside the build")
    parser.add_argument("--warm", action="store_true",
                        help="use the model cache make prepare built instead of an empty one")
    parser.add_argument("--full-smoke", action="store_true",
                        help="time make test-full: full mode with RRID_SMOKE=1, then the full-mode tests")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    names = args.chapters or [c for c in chapters() if (ROOT / f"{c}.ipynb").is_file()]
    timeout = config_timeout()
    # the Makefile's environment (OMP_WAIT_POLICY included: it must be set before torch starts)
    os.environ.update(RRID_MODE="full" if args.full_smoke else "quick", RRID_SMOKE="1" if args.full_smoke else "0",
                      TQDM_DISABLE="1", RRID_LIVEPLOT="static", MPLBACKEND="Agg", PYTHONHASHSEED="0")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # `kill` still runs the clean-up below
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.busy)]
    rows, tests = [], None
    try:
        with tempfile.TemporaryDirectory() as cache:
            if not args.warm:
                os.environ["RRID_CACHE"] = cache  # cold: prepare builds everything, as on a fresh clone
            preparation = prepare(*(["--heads-only"] if args.full_smoke else []))
            print(f"{'preparation':30} {preparation:6.1f} s (python -m rrid prepare-book)", flush=True)
            for name in names:
                seconds, cell, cell_seconds = run(name, (ROOT / name).parent, timeout)
                rows.append((name, seconds, cell, cell_seconds))
                flag = "  <-- over 1/%d of the timeout" % HEADROOM if cell_seconds > timeout / HEADROOM else ""
                print(f"{name:30} {seconds:6.1f} s; slowest cell {cell_seconds:6.1f} s "
                      f"({cell_seconds / timeout:.2f} of {timeout} s), {cell[:70]}{flag}", flush=True)
            tests = full_mode_tests() if args.full_smoke else None
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()

    total = sum(r[1] for r in rows)
    slow = [r for r in rows if r[3] > timeout / HEADROOM]
    cpus = os.cpu_count()
    beside = f", {args.busy} CPU-bound process{'es' if args.busy > 1 else ''} beside it" if args.busy else ""
    stem = "book_times_full_smoke" if args.full_smoke else "book_times_busy" if args.busy else "book_times"
    mode = "full mode, RRID_SMOKE=1" if args.full_smoke else "quick mode"
    cache_state = "warm (built by make prepare before)" if args.warm else "cold"
    out = Path(args.out)
    with atomic_write(out / f"{stem}.csv") as f:
        writer = csv.writer(f)
        writer.writerow(["chapter", "seconds", "slowest_cell", "slowest_cell_seconds", "share_of_cell_timeout"])
        writer.writerow(["preparation", f"{preparation:.1f}", "python -m rrid prepare-book", "", ""])
        writer.writerows((n, f"{s:.1f}", c, f"{cs:.1f}", f"{cs / timeout:.3f}") for n, s, c, cs in rows)
        if tests is not None:
            writer.writerow(["full-mode tests", f"{tests:.1f}", "pytest tests -m full_mode", "", ""])
    titles = {n: next(line[2:] for line in nbformat.read(ROOT / f"{n}.ipynb", as_version=4).cells[0].source.splitlines()
                      if line.startswith("# ")) for n, *_ in rows}

    def code(text: str) -> str:
        text = text.replace("`", "'").replace("|", "\\|")
        return f"`{text[:67] + '...' if len(text) > 70 else text}`"

    with atomic_write(out / f"{stem}.md") as f:
        f.write(f"| chapter | seconds in {mode} ({cpus}-core CPU, {cache_state} model cache{beside}) "
                f"| its slowest cell | seconds (share of the {timeout} s cell timeout) |\n|---|---:|---|---:|\n")
        what = "prepare-book --heads-only" if args.full_smoke else "prepare-book"
        f.write(f"| preparation, once before the chapters (`python -m rrid {what}`) | {preparation:.0f} | | |\n")
        f.writelines(f"| {titles[n]} | {s:.0f} | {code(c)} | {cs:.0f} ({cs / timeout:.2f}){' ⚠' if cs > timeout / HEADROOM else ''} |\n"
                     for n, s, c, cs in rows)
        f.write(f"| **whole book** (the chapters) | **{total:.0f}** | | |\n")
        if tests is not None:
            f.write(f"| the full-mode tests (`pytest tests -m full_mode`: the README's Colab snippet) | {tests:.0f} | | |\n")
            total += tests
        f.write(f"| whole book with the preparation{' and the tests' if tests is not None else ''} "
                f"| {total + preparation:.0f} | | |\n")
    chapters_total = sum(r[1] for r in rows)
    print(f"{'whole book':30} {chapters_total:6.1f} s  ({chapters_total / 60:.1f} min; goal: under 8 min, each chapter "
          f"under 2); with the preparation{' and the tests' if tests is not None else ''} {total + preparation:.0f} s")
    print(f"cells over 1/{HEADROOM} of the {timeout} s cell timeout: "
          + (", ".join(f"{n} ({cs:.0f} s)" for n, _, _, cs in slow) if slow else "none"))


if __name__ == "__main__":
    main()
