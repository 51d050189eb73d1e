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

Writes ``benchmarks/results/book_times.csv`` (every measurement), ``book_times.md`` (the reader's
table the preface includes: the setting in one sentence, then each chapter's seconds) and
``book_times_cells.md`` (the maintainer's: each chapter's slowest cell and its share of the cell
timeout); ``book_times_busy.*`` with ``--busy``, ``book_times_full_smoke.*`` with ``--full-smoke``.
``--report`` times nothing: it rewrites the two .md files from the CSV of an earlier run made with
the same options.

    python benchmarks/book_times.py [--chapters book/07_training ...] [--busy 1] [--full-smoke] [--report]
"""

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Setting:
    """What was measured, and on what: the mode, the load beside the build, the model cache, the CPU."""

    full_smoke: bool
    busy: int
    warm: bool
    cpus: int

    @property
    def stem(self) -> str:
        return "book_times_full_smoke" if self.full_smoke else "book_times_busy" if self.busy else "book_times"

    @property
    def preparation_step(self) -> str:
        return "python -m rrid prepare-book" + (" --heads-only" if self.full_smoke else "")

    def describe(self) -> str:
        """One sentence for the reader: mode, machine, load and model cache."""
        mode = "Full mode's smoke setting (`RRID_MODE=full RRID_SMOKE=1`)" if self.full_smoke else "Quick mode"
        load = (f"{self.busy} CPU-bound process{'es' if self.busy > 1 else ''} started beside the build"
                if self.busy else "no other work started beside the build")
        cache = ("the model cache built before (warm)" if self.warm
                 else "an empty model cache (cold, as on a fresh clone)")
        return f"{mode} on a {self.cpus}-core x86-64 CPU without a GPU, {load}, {cache}."


def write_csv(path: Path, preparation: float, rows: list, tests: float | None, timeout: int, step: str) -> None:
    """Every measurement, the maintainer's detail included (each chapter's slowest cell)."""
    with atomic_write(path) as f:
        writer = csv.writer(f)
        writer.writerow(["chapter", "seconds", "slowest_cell", "slowest_cell_seconds", "share_of_cell_timeout"])
        writer.writerow(["preparation", f"{preparation:.1f}", step, "", ""])
        writer.writerows((n, f"{s:.1f}", c, f"{cs:.1f}", f"{cs / timeout:.3f}") for n, s, c, cs in rows)
        if tests is not None:
            writer.writerow(["full-mode tests", f"{tests:.1f}", "pytest tests -m full_mode", "", ""])


def read_csv(path: Path) -> tuple[float, list, float | None]:
    """(preparation seconds, chapter rows as ``run`` gives them, full-mode tests seconds or None) of a CSV."""
    preparation, rows, tests = None, [], None
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["chapter"] == "preparation":
                preparation = float(row["seconds"])
            elif row["chapter"] == "full-mode tests":
                tests = float(row["seconds"])
            else:
                rows.append((row["chapter"], float(row["seconds"]), row["slowest_cell"],
                             float(row["slowest_cell_seconds"])))
    if preparation is None:
        raise SystemExit(f"{path}: no 'preparation' row; expected the CSV this script writes")
    return preparation, rows, tests


def title(chapter: str) -> str:
    """The chapter's title: the first level-1 heading of its first cell."""
    first = nbformat.read(ROOT / f"{chapter}.ipynb", as_version=4).cells[0].source
    return next(line[2:] for line in first.splitlines() if line.startswith("# "))


def write_reports(out: Path, setting: Setting, preparation: float, rows: list, tests: float | None,
                  timeout: int) -> None:
    """``{stem}.md``, the reader's table (the preface includes it: chapter and seconds), and
    ``{stem}_cells.md``, the maintainer's (each chapter's slowest cell against the cell timeout).
    Every figure is rounded to a second first, and the totals add the rounded figures, so that
    the table adds up as the reader checks it."""
    preparation, tests = round(preparation), None if tests is None else round(tests)
    total = sum(round(r[1]) for r in rows)
    with atomic_write(out / f"{setting.stem}.md") as f:
        f.write(f"{setting.describe()}\n\n| chapter | seconds |\n|---|---:|\n")
        f.write(f"| preparation, once before the chapters (`{setting.preparation_step}`) | {preparation} |\n")
        f.writelines(f"| {title(n)} | {round(s)} |\n" for n, s, *_ in rows)
        f.write(f"| **whole book** (the chapters) | **{total}** |\n")
        if tests is not None:
            f.write("| the full-mode tests (`pytest tests -m full_mode`: the README's Colab snippet) "
                    f"| {tests} |\n")
        f.write(f"| whole book with the preparation{' and the tests' if tests is not None else ''} "
                f"| {total + (tests or 0) + preparation} |\n")

    def code(text: str) -> str:
        text = text.replace("`", "'").replace("|", "\\|")
        return f"`{text[:67] + '...' if len(text) > 70 else text}`"

    with atomic_write(out / f"{setting.stem}_cells.md") as f:
        f.write(f"{setting.describe()} The slowest cell of each chapter, against the build's {timeout} s cell "
                f"timeout (⚠: over 1/{HEADROOM} of it).\n\n"
                f"| chapter | its slowest cell | seconds | share of the cell timeout |\n|---|---|---:|---:|\n")
        f.writelines(f"| {title(n)} | {code(c)} | {cs:.0f} | {cs / timeout:.2f}"
                     f"{' ⚠' if cs > timeout / HEADROOM else ''} |\n" for n, _, c, cs in rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapters", nargs="*", help="chapters as in _toc.yml (default: every notebook)")
    parser.add_argument("--busy", type=int, default=0, help="CPU-bound processes to run beside the build")
    parser.add_argument("--warm", action="store_true",
                        help="use the model cache make prepare built instead of an empty one")
    parser.add_argument("--full-smoke", action="store_true",
                        help="time make test-full: full mode with RRID_SMOKE=1, then the full-mode tests")
    parser.add_argument("--report", action="store_true",
                        help="time nothing: rewrite the .md tables from the CSV of an earlier run with the "
                             "same options (--busy, --warm, --full-smoke, --cpus)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(),
                        help="cores of the machine measured, for --report (default: this machine's)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    setting = Setting(args.full_smoke, args.busy, args.warm, args.cpus)
    out = Path(args.out)
    timeout = config_timeout()
    if args.report:
        preparation, rows, tests = read_csv(out / f"{setting.stem}.csv")
    else:
        preparation, rows, tests = measure(args, setting, timeout)
        write_csv(out / f"{setting.stem}.csv", preparation, rows, tests, timeout, setting.preparation_step)
    write_reports(out, setting, preparation, rows, tests, timeout)
    total = sum(r[1] for r in rows)
    print((out / f"{setting.stem}.md").read_text())
    print(f"{'whole book':30} {total:6.1f} s  ({total / 60:.1f} min; goal: under 8 min, each chapter "
          f"under 2); with the preparation{' and the tests' if tests is not None else ''} "
          f"{total + (tests or 0) + preparation:.0f} s")
    slow = [r for r in rows if r[3] > timeout / HEADROOM]
    print(f"cells over 1/{HEADROOM} of the {timeout} s cell timeout: "
          + (", ".join(f"{n} ({cs:.0f} s)" for n, _, _, cs in slow) if slow else "none"))


def measure(args, setting: Setting, timeout: int) -> tuple[float, list, float | None]:
    """Time the preparation, then every chapter (and the full-mode tests with --full-smoke)."""
    names = args.chapters or [c for c in chapters() if (ROOT / f"{c}.ipynb").is_file()]
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
            print(f"{'preparation':30} {preparation:6.1f} s ({setting.preparation_step})", flush=True)
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
    return preparation, rows, tests


if __name__ == "__main__":
    main()
