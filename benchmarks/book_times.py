"""How long each chapter of the book takes to execute in quick mode, as the build runs it.

Executes every chapter of ``_toc.yml`` in a fresh kernel (nbclient, as myst-nb and nbval do)
with ``RRID_MODE=quick`` and an empty model cache, so the first chapter that needs the shared
quick-mode model pays for training it, as on a fresh clone. Writes
``benchmarks/results/book_times.csv`` and ``book_times.md`` (the table the preface includes)
and prints the table with the total.

    python benchmarks/book_times.py [--chapters book/07_training ...]
"""

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rrid.book import chapters  # noqa: E402
from rrid.files import atomic_write  # noqa: E402


def run(chapter: str, workdir: Path) -> float:
    nb = nbformat.read(ROOT / f"{chapter}.ipynb", as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapters", nargs="*", help="chapters as in _toc.yml (default: every notebook)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    names = args.chapters or [c for c in chapters() if (ROOT / f"{c}.ipynb").is_file()]
    os.environ.update(RRID_MODE="quick", TQDM_DISABLE="1", RRID_LIVEPLOT="static")
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        os.environ["RRID_CACHE"] = cache  # cold: the first chapter that needs the quick model trains it
        for name in names:
            seconds = run(name, (ROOT / name).parent)
            rows.append((name, seconds))
            print(f"{name:30} {seconds:6.1f} s", flush=True)
    total = sum(s for _, s in rows)
    cpus = os.cpu_count()
    out = Path(args.out)
    with atomic_write(out / "book_times.csv") as f:
        writer = csv.writer(f)
        writer.writerow(["chapter", "seconds"])
        writer.writerows((n, f"{s:.1f}") for n, s in rows)
    titles = {n: nbformat.read(ROOT / f"{n}.ipynb", as_version=4).cells[0].source.splitlines()[0].lstrip("# ")
              for n, _ in rows}
    with atomic_write(out / "book_times.md") as f:
        f.write(f"| chapter | seconds in quick mode ({cpus}-core CPU, cold model cache) |\n|---|---:|\n")
        f.writelines(f"| {titles[n]} | {s:.0f} |\n" for n, s in rows)
        f.write(f"| **whole book** | **{total:.0f}** |\n")
    print(f"{'whole book':30} {total:6.1f} s  ({total / 60:.1f} min; goal: under 8 min, each chapter under 2)")


if __name__ == "__main__":
    main()
