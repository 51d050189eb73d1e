"""Downloads and archives, done safely.

* ``download(url, dest, sha256=..., md5=...)``: a progress bar; the bytes go to
  ``dest.part`` and a partial file is resumed with an HTTP Range request; the checksum is
  verified *before* the file is renamed to ``dest``, so a corrupt download never sits at
  ``dest`` (a mismatch removes the ``.part`` and raises).
* ``extract(archive, dest)``: zip or tar(.gz); every member is checked first and the
  archive is refused if any would land outside ``dest`` (``../``, absolute paths, links
  pointing out, device files); it is unpacked into a temporary folder renamed at the end.
* ``prepare_market1501(source, root)``: URL or local zip -> checked (md5) -> unpacked.

Nothing in the tests or the book downloads anything; users bring the files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from .datasets import DatasetError, Market1501

# Market-1501-v15.09.15.zip, as recorded by the open-reid project (official-code-notes.md).
MARKET1501_MD5 = "65005ab7d12ec1c44de4eeafe813e68a"
CHUNK = 1 << 20


class ChecksumError(DatasetError):
    """A file's sha256 / md5 differs from the expected one."""


class UnsafeArchiveError(DatasetError):
    """An archive member would be written outside the target folder."""


def file_hash(path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_checksum(path, sha256: str | None = None, md5: str | None = None) -> None:
    """Raise ChecksumError naming ``path`` unless it matches every checksum given."""
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected is None:
            continue
        found = file_hash(path, algorithm)
        if found.lower() != expected.lower():
            raise ChecksumError(f"{path}: {algorithm} is {found}, expected {expected} (corrupt or wrong file)")


def download(url: str, dest, sha256: str | None = None, md5: str | None = None, resume: bool = True) -> Path:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``), verify it, then rename. Returns ``dest``."""
    dest = Path(dest)
    if dest.exists():
        try:
            verify_checksum(dest, sha256, md5)
            return dest
        except ChecksumError:
            dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if resume and part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    from tqdm import tqdm

    with urllib.request.urlopen(request) as response:
        if offset and getattr(response, "status", None) != 206:
            offset = 0  # the server ignored the Range request: start again
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                                            desc=dest.name, disable=None) as bar:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                f.write(chunk)
                bar.update(len(chunk))
    try:
        verify_checksum(part, sha256, md5)
    except ChecksumError:
        part.unlink()
        raise
    os.replace(part, dest)
    return dest


def _inside(name: str, dest: Path) -> bool:
    """Whether the archive path ``name`` stays inside ``dest`` (no absolute path, no escape by '..')."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return False
    target = (dest / name).resolve()
    return target == dest or dest in target.parents


def _check_zip(zf: zipfile.ZipFile, dest: Path) -> None:
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeArchiveError(f"archive member {info.filename!r} is a symbolic link; refused")
        if not _inside(info.filename, dest):
            raise UnsafeArchiveError(f"archive member {info.filename!r} would be written outside {dest}; refused")


def _check_tar(tf: tarfile.TarFile, dest: Path) -> None:
    for m in tf.getmembers():
        if not _inside(m.name, dest):
            raise UnsafeArchiveError(f"archive member {m.name!r} would be written outside {dest}; refused")
        if m.issym() and not _inside(str(PurePosixPath(m.name).parent / m.linkname), dest):
            raise UnsafeArchiveError(f"archive member {m.name!r} is a symbolic link to {m.linkname!r} outside {dest}; refused")
        if m.islnk() and not _inside(m.linkname, dest):
            raise UnsafeArchiveError(f"archive member {m.name!r} is a hard link to {m.linkname!r} outside {dest}; refused")
        if m.isdev():
            raise UnsafeArchiveError(f"archive member {m.name!r} is a device file; refused")


def extract(archive, dest) -> Path:
    """Unpack a zip or tar(.gz) ``archive`` into the new folder ``dest``; refuse escaping members."""
    archive, dest = Path(archive), Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise DatasetError(f"cannot extract {archive} into {dest}: the folder exists and is not empty")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent)).resolve()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _check_zip(zf, tmp)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                _check_tar(tf, tmp)
                tf.extractall(tmp, filter="data")  # the standard library's own guard, as a second fence
        else:
            raise DatasetError(f"{archive} is neither a zip nor a tar archive")
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def prepare_market1501(source, root, md5: str | None = MARKET1501_MD5) -> Path:
    """Make ``root`` hold Market-1501 from ``source`` (a URL or a local Market-1501-v15.09.15.zip).

    The archive's md5 is checked against the published one; ``root`` ends up holding
    ``Market-1501-v15.09.15/``, which ``Market1501(root)`` reads. Nothing happens if
    ``root`` already holds the data set.
    """
    root = Path(root)
    try:
        Market1501.locate(root)
        return root
    except DatasetError:
        pass
    source = str(source)
    if "://" in source:
        archive = download(source, root.parent / "Market-1501-v15.09.15.zip", md5=md5)
    else:
        archive = Path(source)
        if not archive.is_file():
            raise DatasetError(f"Market-1501 archive {archive} not found")
        verify_checksum(archive, md5=md5)
    extract(archive, root)
    Market1501.locate(root)  # the archive held the expected tree
    return root
