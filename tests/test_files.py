"""rrid.files: a failed write leaves the old file and no temp file; a good one replaces it."""

import os

import pytest

from rrid.files import atomic_path, atomic_write


def test_atomic_write_replaces_the_file(tmp_path):
    target = tmp_path / "sub" / "table.csv"
    with atomic_write(target) as f:
        f.write("a,b\n1,2\n")
    assert target.read_text() == "a,b\n1,2\n"
    with atomic_write(target, "wb") as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    assert sorted(os.listdir(target.parent)) == ["table.csv"]
    assert (target.stat().st_mode & 0o777) == 0o666 & ~_umask()


def test_a_crash_midway_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half of the ne")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_read_modes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="expected a write mode"):
        with atomic_write(tmp_path / "x", "r"):
            pass


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------- stale temps of killed writers

def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _writer(prefix: str) -> tuple[str, str, str]:
    """(pid, start, host) as a temp prefix of this process spells them."""
    import re

    m = re.fullmatch(r"\..+\.rrid-(\d+)-(\d*)-([A-Za-z0-9-]+)\.", prefix)
    assert m, prefix
    return m.group(1), m.group(2), m.group(3)


def _touch(path, age: float = 0.0, folder: bool = False):
    import time

    path.mkdir() if folder else path.write_bytes(b"x" * 10)
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_temp_names_say_whose_they_are(tmp_path):
    from rrid.files import temp_prefix

    names = []

    class Spy(Exception):
        pass

    with pytest.raises(Spy):
        with atomic_path(tmp_path / "last.pt") as tmp:
            names.append(tmp.name)
            raise Spy
    assert names[0].startswith(temp_prefix(tmp_path / "last.pt")) and names[0].endswith(".tmp")
    assert f".rrid-{os.getpid()}-" in names[0] and _writer(temp_prefix(tmp_path / "last.pt"))[0] == str(os.getpid())


def test_only_stale_temps_of_ours_are_removed(tmp_path):
    import socket

    from rrid.files import STALE_AGE, remove_stale_temps, temp_prefix

    _, _, host = _writer(temp_prefix("x"))     # this host as the names spell it
    assert host and "." not in host and socket.gethostname()
    from rrid.files import _start_time
    init = _start_time(1)                       # PID 1 runs on every Linux machine
    dead, hour = _dead_pid(), STALE_AGE + 60
    stale = [
        _touch(tmp_path / f".last.pt.rrid-{dead}-1234-{host}.abcd_123.tmp"),               # writer killed (kill -9)
        _touch(tmp_path / f".best.pt.rrid-{dead}-1234-{host}.x1y2z3w4.tmp"),
        _touch(tmp_path / ".other-host.pt.rrid-1-1-elsewhere.abcdefgh.tmp", age=hour),  # another host, long untouched
        _touch(tmp_path / ".last.pt.q9w8e7r6.tmp", age=hour),                         # an older rrid's name
        _touch(tmp_path / f".synthetic.rrid-{dead}-1234-{host}.k2j3h4g5.tmp", folder=True),  # a temp folder
    ]
    kept = [
        _touch(tmp_path / f"{temp_prefix('last.pt')}aaaaaaaa.tmp"),                   # this live process
        _touch(tmp_path / ".config.yaml.rrid-1-1-elsewhere.bbbbbbbb.tmp"),             # another host, fresh
        _touch(tmp_path / ".last.pt.z9z9z9z9.tmp"),                                   # older name, fresh
        _touch(tmp_path / "last.pt", age=hour), _touch(tmp_path / "notes.tmp", age=hour),
        _touch(tmp_path / ".last.pt.tmp", age=hour), _touch(tmp_path / ".cache.abcdefgh.tmp", age=hour),
    ]
    (tmp_path / "sub").mkdir()
    below = _touch(tmp_path / "sub" / f".last.pt.rrid-{dead}-1234-{host}.abcdefgh.tmp")   # not below the folder
    # PID 1 is alive on every Linux machine: a temp of a live writer of this host stays
    live = _touch(tmp_path / f".metrics.jsonl.rrid-1-{init}-{host}.cccccccc.tmp", age=hour)

    removed = remove_stale_temps(tmp_path, ["last.pt", "best.pt", "other-host.pt", "synthetic"])
    assert sorted(removed) == sorted(stale)
    assert all(p.exists() for p in kept + [below, live]) and not any(p.exists() for p in stale)
    # without names, the older rrid's names (no PID to check) are never touched
    legacy = _touch(tmp_path / ".best.pt.m1n2b3v4.tmp", age=hour)
    assert remove_stale_temps(tmp_path) == [] and legacy.exists()


def test_atomic_write_cleans_the_stale_temps_of_its_target(tmp_path):
    from rrid.files import temp_prefix

    dead = _dead_pid()
    _, _, host = _writer(temp_prefix("x"))
    litter = _touch(tmp_path / f".table.csv.rrid-{dead}-1234-{host}.abcdefgh.tmp")
    other = _touch(tmp_path / f".model.onnx.rrid-{dead}-1234-{host}.abcdefgh.tmp")     # another target: not this write's
    with atomic_write(tmp_path / "table.csv") as f:
        f.write("a\n")
    assert not litter.exists() and other.exists()


def test_describe_write_error():
    import errno

    from rrid.files import describe_write_error

    assert describe_write_error(OSError(errno.ENOSPC, "No space left on device")) == "No space left on device"
    assert describe_write_error(OSError(errno.EDQUOT, "Disk quota exceeded")) == "No space left on device"
    assert "No space left on device" in describe_write_error(
        RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1152 vs 1046"))
    assert describe_write_error(OSError(errno.EROFS, "Read-only file system")) == "Read-only file system"
    assert describe_write_error(RuntimeError("cannot pickle 'generator' object")) is None   # a bug: not explained
    assert describe_write_error(KeyError("x")) is None


def test_stale_temps_of_dead_writers_are_removed(tmp_path):
    from rrid.files import remove_stale_temps, temp_prefix

    mine = temp_prefix("market")  # ".market.rrid-<pid>-<start>-<host>."
    pid, start, host = _writer(mine)
    dead = _dead_pid()
    entries = {
        f".market.rrid-{dead}-1234-{host}.abc123": "dir",       # a killed writer's folder: removed
        f".market.rrid-{dead}-1234-{host}.old-1234": "dir",     # a killed replacement's old set: removed
        f".market.rrid-{pid}-{int(start or 0) + 1}-{host}.x": "dir",  # our pid, another start: an earlier process
        f".last.pt.rrid-{dead}-1234-{host}.xyz.tmp": "file",    # the same rule for files of another name: kept here
        f"{mine}def456": "dir",                                 # this process is alive: kept
        f".market.rrid-{dead}-1234-other-host.ghi789": "dir",   # another machine's writer (shared disk), fresh: kept
        ".market.q1w2e3": "dir",                                # no writer in the name: not ours to judge, kept
        "market": "dir",
    }
    for name, kind in entries.items():
        if kind == "dir":
            (tmp_path / name / "sub").mkdir(parents=True)
            (tmp_path / name / "sub" / "f.jpg").write_bytes(b"x")
        else:
            (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_temps(tmp_path, "market")
    assert sorted(p.name for p in removed) == sorted(list(entries)[:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(list(entries)[3:])
    assert [p.name for p in remove_stale_temps(tmp_path, "last.pt")] == [f".last.pt.rrid-{dead}-1234-{host}.xyz.tmp"]
    assert remove_stale_temps(tmp_path / "missing", "market") == []


def test_move_into_place_replaces_a_folder_and_sets_the_mode(tmp_path):
    from rrid.files import move_into_place, temp_dir

    target = tmp_path / "set"
    (target / "old").mkdir(parents=True)
    old_mask = os.umask(0o022)
    try:
        with temp_dir(target) as tmp:
            (tmp / "new.txt").write_text("new")
            assert oct(os.stat(tmp).st_mode & 0o777) == oct(0o700)  # mkdtemp's mode while it is being built
            move_into_place(tmp, target)
    finally:
        os.umask(old_mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"] and (target / "new.txt").read_text() == "new"
    assert (target.stat().st_mode & 0o777) == 0o755
    with pytest.raises(RuntimeError):
        with temp_dir(target) as tmp:
            raise RuntimeError("killed")  # an error while building: the temp folder goes, the target stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(OSError):
        with temp_dir(tmp_path / "full") as tmp:
            move_into_place(tmp, tmp_path / "full", replace=False)  # never over a non-empty folder
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
