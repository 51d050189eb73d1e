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


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)  # reaped: this pid now names no process (until the system reuses it)
    return pid


def test_stale_temps_of_dead_writers_are_removed(tmp_path):
    from rrid.files import remove_stale_temps, temp_prefix

    mine = temp_prefix("market")  # ".market.<pid>-<start>@<host>."
    me, host = mine.split(".")[2].split("@")
    pid, start = me.split("-")
    dead = _dead_pid()
    entries = {
        f".market.{dead}-1234@{host}.abc123": "dir",       # a killed writer's folder: removed
        f".market.{dead}-1234@{host}.old-1234": "dir",     # a killed replacement's old set: removed
        f".market.{pid}-{int(start or 0) + 1}@{host}.x": "dir",  # our pid, another start: an earlier process
        f".last.pt.{dead}-1234@{host}.xyz.tmp": "file",    # the same rule for files of another name: kept here
        f"{mine}def456": "dir",                            # this process is alive: kept
        f".market.{dead}-1234@other-host.ghi789": "dir",   # another machine's writer (shared disk): kept
        ".market.q1w2e3": "dir",                           # no pid in the name: not ours to judge, kept
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
    assert [p.name for p in remove_stale_temps(tmp_path, "last.pt")] == [f".last.pt.{dead}-1234@{host}.xyz.tmp"]
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
