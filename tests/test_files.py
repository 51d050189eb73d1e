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
