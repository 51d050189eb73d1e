"""rrid.files.lock_folder between real processes, and the builds that use it: two ``synth`` or
``prepare`` runs into one root never mix, and the second finds the first's result."""

import hashlib
import io
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from rrid.data import Market1501, synthetic
from rrid.data import download as dl
from rrid.errors import FolderInUseError, UserError
from rrid.files import LOCK_NAME, lock_folder, lock_path, remove_stale_temps

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(os.name != "posix", reason="flock: Linux and macOS")

HOLDER = """
import sys
from rrid.files import lock_folder

folder, what, wait, inside, log = sys.argv[1:6]


def note(line):
    with open(log, "a") as f:
        f.write(line + "\\n")


with lock_folder(folder, what, wait=wait == "wait", inside=inside == "inside",
                 on_wait=lambda message: print(message, flush=True)):
    note(f"{what} acquired")
    print("locked", flush=True)
    sys.stdin.readline()          # hold the lock until the test says so
    note(f"{what} releasing")
"""


def holder(tmp_path: Path, folder: Path, what: str, wait: bool = False, inside: bool = True) -> subprocess.Popen:
    """A process that takes the lock of ``folder`` and holds it until a line arrives on its stdin."""
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(script), str(folder), what, "wait" if wait else "fail",
                             "inside" if inside else "beside", str(tmp_path / "log")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def log(tmp_path: Path) -> list[str]:
    return (tmp_path / "log").read_text().splitlines()


def test_a_second_holder_is_told_who_holds_the_folder(tmp_path):
    folder = tmp_path / "run"
    first = holder(tmp_path, folder, "training")
    try:
        assert first.stdout.readline() == "locked\n"
        with pytest.raises(FolderInUseError) as err:
            with lock_folder(folder, "evaluating"):
                pass
        message = str(err.value)
        assert "\n" not in message and isinstance(err.value, UserError)
        assert message.startswith(f"{folder} is in use by another process (pid {first.pid} on ")
        assert ", training: " in message and "holder.py" in message and message.endswith("or use another folder")
    finally:
        first.communicate("\n", timeout=60)
    assert first.returncode == 0
    assert not (folder / LOCK_NAME).exists()            # the holder removes its lock file
    with lock_folder(folder, "evaluating") as path:     # and the folder is free again
        assert path == folder / LOCK_NAME and "evaluating" in path.read_text()


def test_the_lock_of_a_killed_holder_never_blocks(tmp_path):
    folder = tmp_path / "data"
    first = holder(tmp_path, folder, "building", inside=False)
    assert first.stdout.readline() == "locked\n"
    first.send_signal(signal.SIGKILL)                   # kill -9: no cleanup at all
    first.wait(timeout=60)
    left = lock_path(folder, inside=False)
    assert left == tmp_path / ".data.rrid.lock" and str(first.pid) in left.read_text()   # its lock file stays
    with lock_folder(folder, "building again", inside=False) as path:
        assert path == left and '"what": "building again"' in path.read_text()
        assert str(os.getpid()) in path.read_text()
    assert not left.exists()
    first.stdout.close()


def test_a_lock_file_a_killed_holder_left_is_cleaned_with_the_temps(tmp_path):
    folder = tmp_path / "data"
    first = holder(tmp_path, folder, "building", inside=False)
    assert first.stdout.readline() == "locked\n"
    assert remove_stale_temps(tmp_path, "data") == []           # held by a live process: kept
    first.kill()
    first.wait(timeout=60)
    first.stdout.close()
    assert remove_stale_temps(tmp_path, "data") == [tmp_path / ".data.rrid.lock"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holder.py", "log"]


def test_a_waiting_holder_gets_the_lock_when_the_first_releases_it(tmp_path):
    folder = tmp_path / "cache"
    first = holder(tmp_path, folder, "first")
    assert first.stdout.readline() == "locked\n"
    second = holder(tmp_path, folder, "second", wait=True)
    note = second.stdout.readline()                     # printed before it blocks
    assert note.startswith(f"waiting: {folder} is in use by another process (pid {first.pid} on ") and ", first: " in note
    first.communicate("\n", timeout=60)
    assert second.stdout.readline() == "locked\n"
    second.communicate("\n", timeout=60)
    assert (first.returncode, second.returncode) == (0, 0)
    assert log(tmp_path) == ["first acquired", "first releasing", "second acquired", "second releasing"]


def test_the_same_thread_may_lock_again_and_names_stay_within_the_limit(tmp_path):
    folder = tmp_path / ("x" * 250)
    with lock_folder(folder, "outer", inside=False) as outer:
        with lock_folder(folder, "inner", inside=False) as inner:     # ensure() -> generate(): no deadlock
            assert inner == outer
        assert outer.exists()                                          # the inner block did not release it
        assert len(outer.name.encode()) <= 255 and outer.name.endswith(".rrid.lock")
    assert not outer.exists()


def test_a_lock_file_that_is_a_link_is_refused(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_NAME).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FolderInUseError, match=rf"cannot lock {folder}: its lock file {folder / LOCK_NAME} is a "
                                               r"symbolic link; remove it"):
        with lock_folder(folder):
            pass
    assert not (tmp_path / "elsewhere").exists()


# ----------------------------------------------------------------------------- builds into one root

TINY = ["--train-ids", "4", "--test-ids", "4", "--images-per-id", "4"]


def _run(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=kw.get("cwd", ROOT))


def test_two_synth_runs_into_one_root_started_together(tmp_path):
    out = tmp_path / "synthetic"
    runs = [_run(["-m", "rrid", "synth", str(out), *TINY]) for _ in range(2)]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    assert all(f"synthetic data set (seed 0) at {out}" in stdout for stdout, _ in results)
    assert synthetic.read_manifest(out)["num_train_ids"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]     # no temp folder, no lock file left


def test_the_second_synth_waits_and_finds_the_set_ready(tmp_path):
    """The first build holds the lock: the second waits (and says so), then finds the set built
    and leaves it as it is (the folder is not replaced a second time)."""
    out = tmp_path / "synthetic"
    with lock_folder(out, "building the synthetic data set", inside=False):
        second = _run(["-m", "rrid", "synth", str(out), *TINY])
        waiting = second.stderr.readline()
        assert waiting.startswith(f"waiting: {out} is in use by another process (pid {os.getpid()} on ")
        synthetic.ensure(out, seed=0, num_train_ids=4, num_test_ids=4, images_per_id=4)   # the lock is ours
        built = out.stat().st_ino
    stdout, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr
    assert f"synthetic data set (seed 0) at {out}" in stdout and out.stat().st_ino == built
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]


def _market_zip(path: Path) -> Path:
    buf = io.BytesIO()
    Image.new("RGB", (8, 16)).save(buf, format="JPEG")
    names = {"bounding_box_train": "0001_c1s1_000001_01.jpg", "query": "0002_c1s1_000002_01.jpg",
             "bounding_box_test": "0002_c2s1_000003_01.jpg"}
    with zipfile.ZipFile(path, "w") as zf:
        for folder, name in names.items():
            zf.writestr(f"Market-1501-v15.09.15/{folder}/{name}", buf.getvalue())
    return path


PREPARE = """
import sys
from rrid.data.download import prepare_market1501

prepare_market1501(sys.argv[1], sys.argv[2], md5=sys.argv[3])
print("ready", flush=True)
"""


def test_two_prepare_runs_into_one_root(tmp_path):
    archive = _market_zip(tmp_path / "Market-1501-v15.09.15.zip")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    root = tmp_path / "market"
    runs = [_run(["-c", PREPARE, str(archive), str(root), md5]) for _ in range(2)]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    assert len(Market1501(root).train) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Market-1501-v15.09.15.zip", "market"]
    # the second of two, deterministically: it waits for the holder, then finds the data ready
    again = tmp_path / "again"
    with lock_folder(again, "preparing Market-1501", inside=False):
        second = _run(["-c", PREPARE, str(archive), str(again), md5])
        assert second.stderr.readline().startswith(f"waiting: {again} is in use by another process (pid {os.getpid()}")
        dl.prepare_market1501(archive, again, md5=md5)
        built = again.stat().st_ino
    stdout, stderr = second.communicate(timeout=300)
    assert second.returncode == 0 and stdout == "ready\n", stderr
    assert again.stat().st_ino == built and len(Market1501(again).train) == 1
