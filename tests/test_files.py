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


# ----------------------------------------------------------------------------- long names

def test_a_legal_long_name_is_written_and_its_temps_stay_within_the_limit(tmp_path):
    """235 characters is a legal name; the temp names made from it (prefix, pid, host, random
    part) used to pass 255 and fail. They are cut to fit and still recognised as stale temps."""
    import errno
    import re

    from rrid.files import move_into_place, remove_stale_temps, temp_dir, temp_name, temp_prefix

    name = "r" * 231 + ".pth"
    seen = []
    with atomic_path(tmp_path / name) as tmp:
        seen.append(tmp.name)
        tmp.write_bytes(b"weights")
    with temp_dir(tmp_path / (name + "-set")) as tmp:
        seen.append(tmp.name)
        move_into_place(tmp, tmp_path / (name + "-set"))
    assert (tmp_path / name).read_bytes() == b"weights" and (tmp_path / (name + "-set")).is_dir()
    assert all(len(n.encode()) <= 255 for n in seen) and all(n.startswith(temp_prefix(tmp_path / name)[:60]) for n in seen)
    short = temp_name(name, tmp_path)
    assert re.fullmatch(r"r+~[0-9a-f]{8}", short) and short != temp_name("r" * 231 + ".pt", tmp_path)
    assert temp_name("last.pt", tmp_path) == "last.pt"              # short names are spelled out, as before
    _, _, host = _writer(temp_prefix("x"))
    dead = _dead_pid()
    stale = _touch(tmp_path / f".{short}.rrid-{dead}-1234-{host}.abcdefgh.tmp")
    assert remove_stale_temps(tmp_path, [name]) == [stale]
    with pytest.raises(OSError) as err:                              # a name the file system cannot hold
        with atomic_write(tmp_path / ("n" * 256)) as f:
            f.write("x")
    assert err.value.errno == errno.ENAMETOOLONG
    assert str(err.value) == (f"cannot write {tmp_path / ('n' * 256)}: its name is too long for the file system "
                              f"there (256 bytes, at most 255)")


def test_temp_names_follow_the_file_systems_own_limit(tmp_path, monkeypatch):
    """eCryptfs takes 143 bytes: the temp names made there are cut to it."""
    from rrid.files import temp_prefix

    monkeypatch.setattr(os, "pathconf", lambda path, what: 143 if what == "PC_NAME_MAX" else os.pathconf(path, what))
    name = "m" * 120 + ".onnx"
    with atomic_path(tmp_path / name) as tmp:
        assert len(tmp.name.encode()) <= 143 and tmp.name.startswith(temp_prefix(tmp_path / name))
        tmp.write_bytes(b"x")
    assert os.listdir(tmp_path) == [name]


# ----------------------------------------------------------------------------- errors name the user's file

def _fail(err):
    def fail(*args, **kwargs):
        raise err
    return fail


def test_a_full_disk_names_the_target_not_the_temp(tmp_path):
    import errno

    from rrid.errors import OutputPathError, UserError
    from rrid.files import describe_write_error

    target = tmp_path / "metrics.json"
    with pytest.raises(OutputPathError) as err:
        with atomic_write(target) as f:
            f.write("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))     # what f.write raises on a full disk
    assert str(err.value) == f"No space left on device: {target}" and isinstance(err.value, UserError)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert describe_write_error(err.value) == "No space left on device"   # what the checkpoint writer reads
    assert os.listdir(tmp_path) == []
    with pytest.raises(FileNotFoundError):                          # the writer's own input: not dressed up
        with atomic_path(target) as tmp:
            import shutil
            shutil.copyfile(tmp_path / "absent.pt", tmp)


def test_folders_that_cannot_take_the_file_are_named(tmp_path, monkeypatch):
    import errno
    import tempfile

    from rrid.errors import OutputPathError
    from rrid.files import temp_dir

    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder is expected")
    cases = {
        blocker / "eval.json": f"cannot write {blocker / 'eval.json'}: its parent {blocker} is not a folder (a file "
                               "of that name is in the way)",
        blocker / "sub" / "eval.json": f"cannot write {blocker / 'sub' / 'eval.json'}: its parent {blocker} is not a "
                                       "folder (a file of that name is in the way)",
        tmp_path: f"cannot write {tmp_path}: it is a folder; give a file name",
    }
    for target, expected in cases.items():
        with pytest.raises(OutputPathError) as err:
            with atomic_write(target) as f:
                f.write("x")
        assert str(err.value) == expected
    with pytest.raises(OutputPathError, match=rf"^cannot write {blocker / 'set'}: its parent {blocker} is not a folder"):
        with temp_dir(blocker / "set"):
            pass
    for code, expected in ((errno.EROFS, f"cannot write {tmp_path / 'x.csv'}: its folder {tmp_path} is on a "
                                         "read-only file system"),
                           (errno.EACCES, f"cannot write {tmp_path / 'x.csv'}: no permission to write in its folder "
                                          f"{tmp_path}")):
        monkeypatch.setattr(tempfile, "mkstemp", _fail(OSError(code, os.strerror(code), str(tmp_path / ".x.tmp"))))
        with pytest.raises(OutputPathError) as err:
            with atomic_write(tmp_path / "x.csv") as f:
                f.write("x")
        assert str(err.value) == expected and err.value.errno == code and ".tmp" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in any folder")
def test_a_folder_without_write_permission_is_named(tmp_path):
    from rrid.errors import OutputPathError
    from rrid.files import check_output_path

    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    try:
        for call in (lambda: atomic_write(folder / "x.csv").__enter__(), lambda: check_output_path(folder / "x.csv")):
            with pytest.raises(OutputPathError, match=rf"^cannot write {folder / 'x.csv'}: no permission to write in "
                                                      rf"its folder {folder}$"):
                call()
    finally:
        folder.chmod(0o700)


def test_check_output_path_refuses_before_any_work_and_creates_nothing(tmp_path, monkeypatch):
    import errno

    from rrid.errors import OutputPathError
    from rrid.files import check_output_path

    (tmp_path / "file").write_text("x")
    good = tmp_path / "new" / "deeper" / "eval.json"
    assert check_output_path(good) == good and not (tmp_path / "new").exists()
    bad = {
        tmp_path / "file" / "eval.json": "its parent",
        tmp_path: "it is a folder",
        tmp_path / ("d" * 300) / "eval.json": "the folder name ddddddddddddddddddddddddddddddddddddd... in it is too "
                                              "long for the file system there (300 bytes, at most 255)",
        tmp_path / ("e" * 256): "its name is too long for the file system there (256 bytes, at most 255)",
    }
    for path, expected in bad.items():
        with pytest.raises(OutputPathError) as err:
            check_output_path(path)
        assert str(err.value).startswith(f"cannot write {path}: ") and expected in str(err.value)

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly())
    with pytest.raises(OutputPathError, match=rf"its folder {tmp_path} is on a read-only file system") as err:
        check_output_path(good)
    assert err.value.errno == errno.EROFS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
