"""Downloads and archives, done safely.

* ``download(url, dest, sha256=..., md5=...)``: http(s) through urllib3 with connect and
  read timeouts, a retry policy with exponential backoff (urllib3's ``Retry``, also used
  for a body that stalls or breaks off), a progress bar, and a ``dest.part`` file that a
  later attempt or run resumes with an HTTP Range request (206 Partial Content; a server
  that answers 200 is read again from the start). The size and checksum are verified
  *before* the file is renamed to ``dest``, so a corrupt download never sits at ``dest``.
  Failures are one-line :class:`DownloadError` messages naming the URL and what to do.
* ``extract(archive, dest)``: zip or tar(.gz); only regular files and folders are
  unpacked (links, devices and FIFOs are refused by name), no member may land outside
  ``dest``, and the total unpacked size and member count are bounded (zip bombs). It
  unpacks into a temp folder beside ``dest``, checks the folder tree there, and renames it
  into place: ``dest`` is never half-filled.
* ``prepare(source, root, check=...)``: URL, Google Drive link or local archive -> checksum ->
  unpacked -> folder tree checked -> renamed to ``root``. ``prepare_market1501``,
  ``prepare_dukemtmc`` and ``prepare_cuhk03`` are it for each data set. Two processes
  preparing the same root do not mix: the second waits for the first
  (``rrid.files.lock_folder``) and then finds the data set ready.
* A Google Drive share link or file id (:func:`drive_file_id`) is fetched with ``gdown``, an
  optional dependency (``pip install gdown``; Colab ships it): Drive answers large files with
  a virus-scan page that only a Drive-aware client gets past.

A file these functions read or resume (the archive, ``dest``, ``dest.part``) must be a regular
file: a named pipe or device there is an error naming it (reading it could wait forever).

Nothing in the tests or the book downloads anything; users bring the files.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import lzma
import os
import re
import shutil
import socket
import stat
import sys
import tarfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass, url2pathname

import urllib3
from tqdm import tqdm
from urllib3 import exceptions as ux
from urllib3.exceptions import HTTPError, MaxRetryError, ProtocolError, ReadTimeoutError
from urllib3.util import Retry

from ..errors import one_line, short_repr
from ..files import file_hash, file_problem, lock_folder, move_into_place, real_target, remove_stale_temps, temp_dir
from .datasets import CUHK03NP, DatasetError, DukeMTMCReID, Market1501

# Market-1501-v15.09.15.zip, as recorded by the open-reid project (official-code-notes.md).
# DukeMTMC-reID and CUHK03-NP have no published checksum: their archives are checked by their tree only.
MARKET1501_MD5 = "65005ab7d12ec1c44de4eeafe813e68a"
CHUNK = 1 << 20

TIMEOUT = (10.0, 30.0)  # seconds: (connect, read) -- read: the longest silence accepted mid-body
RETRIES = 5  # further attempts after the first, for connection errors, timeouts, stalls and 5xx answers
BACKOFF = 1.0  # urllib3's backoff_factor: waits of 0, 2, 4, 8, ... s (at most 120) between attempts
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
LOW_SPEED = 1024  # bytes: fewer than this in one read-timeout window counts as a stall (a trickle)

MAX_UNPACKED_BYTES = 64 << 30  # default bounds for extract(): far above any reID data set read here
MAX_MEMBERS = 1_000_000


class ChecksumError(DatasetError):
    """A file's sha256 / md5 differs from the expected one."""


class UnsafeArchiveError(DatasetError):
    """An archive member would escape the target, is a link or device, or the archive unpacks too large."""


class CorruptArchiveError(DatasetError):
    """An archive is truncated or damaged (bad CRC, missing end, broken compression)."""


class DownloadError(DatasetError):
    """A URL could not be fetched; the message names the URL, the cause and what to do."""


def _require_regular(path: Path, what: str, absent_ok: bool = False) -> None:
    """Refuse ``path`` unless it is a regular file (or, with ``absent_ok``, absent)."""
    problem = file_problem(path)
    if problem is None or (absent_ok and problem == "missing"):
        return
    if problem == "missing":
        raise DatasetError(f"{what} {path} not found")
    raise DatasetError(f"{what} {path} is {problem}, not a regular file; remove it or give another path")


def _archive_hash(path, algorithm: str) -> str:
    _require_regular(Path(path), "file")
    return file_hash(path, algorithm, CHUNK)


def verify_checksum(path, sha256: str | None = None, md5: str | None = None) -> None:
    """Raise ChecksumError naming ``path`` unless it matches every checksum given."""
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected is None:
            continue
        found = _archive_hash(path, algorithm)
        if found.lower() != expected.lower():
            raise ChecksumError(f"{path}: {algorithm} is {found}, expected {expected} (corrupt or wrong file)")


# ----------------------------------------------------------------------------- download

def _already_there(dest: Path, part: Path, sha256: str | None, md5: str | None) -> bool:
    """Whether ``dest`` is already downloaded and verified. Both paths must be regular files (or
    absent); a ``dest`` that fails its checksum is removed, to be fetched again."""
    _require_regular(dest, "download target", absent_ok=True)
    _require_regular(part, "partial download", absent_ok=True)
    if not dest.exists():
        return False
    try:
        verify_checksum(dest, sha256, md5)
        return True
    except ChecksumError:
        dest.unlink()
        return False


def _verified_into_place(part: Path, dest: Path, sha256: str | None, md5: str | None, what: str,
                         hint: str) -> Path:
    """Rename the finished download ``part`` to ``dest`` once it matches its checksum; a file that
    does not is deleted, and the ChecksumError names ``what`` and the ``hint``."""
    try:
        verify_checksum(part, sha256, md5)
    except ChecksumError as e:
        part.unlink()
        raise ChecksumError(f"{what} is not the expected one ({str(e).replace(f'{part}: ', '')}); "
                            f"it was deleted: {hint}") from None
    os.replace(part, dest)
    return dest


def download(url: str, dest, sha256: str | None = None, md5: str | None = None, resume: bool = True, *,
             timeout: float | tuple[float, float] = TIMEOUT, retries: int = RETRIES, backoff: float = BACKOFF,
             max_bytes: int | None = None, progress: bool | None = None) -> Path:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``), verify it, then rename. Returns ``dest``.

    ``timeout``: seconds, or ``(connect, read)``; ``retries``: further attempts (with
    backoff) after connection errors, timeouts, stalls and 408/429/5xx answers; a stalled
    or broken body is resumed from where it stopped. ``max_bytes`` refuses a larger file.
    On a network failure the ``.part`` file is kept, and the next call resumes it.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    if _already_there(dest, part, sha256, md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not resume:
        part.unlink(missing_ok=True)
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as e:  # e.g. an unbalanced [ in the host
        raise DownloadError(f"cannot download {url}: not a valid URL ({e})") from None
    if scheme == "file":
        _copy_file_url(url, part)
    elif scheme in ("http", "https"):
        connect, read = (timeout, timeout) if isinstance(timeout, (int, float)) else timeout
        _fetch(url, part, connect, read, retries, backoff, max_bytes, progress)
    else:
        raise DownloadError(f"cannot download {url}: only http://, https:// and file:// URLs are supported")
    return _verified_into_place(part, dest, sha256, md5, f"the file downloaded from {url}", "check the URL")


def _copy_file_url(url: str, part: Path) -> None:
    source = Path(url2pathname(urlsplit(url).path))
    problem = file_problem(source)
    if problem is not None:
        raise DownloadError(f"cannot download {url}: {source} is {problem}, expected a regular file")
    try:
        shutil.copyfile(source, part)
    except OSError as e:
        raise DownloadError(f"cannot download {url}: {one_line(e.strerror or e, 120)} ({source})") from None


class _Restart(Exception):
    """The ``.part`` file cannot be resumed: it was removed, ask again for the whole file."""


def _pool(url: str, connect: float, read: float):
    """A urllib3 pool manager, through the proxy named by $https_proxy / $http_proxy when there is one."""
    timeout = urllib3.Timeout(connect=connect, read=read)
    host = urlsplit(url).hostname or ""
    proxy = getproxies().get(urlsplit(url).scheme.lower())
    if proxy and not proxy_bypass(host):
        return urllib3.ProxyManager(proxy, timeout=timeout), True
    return urllib3.PoolManager(timeout=timeout), False


def _fetch(url, part: Path, connect: float, read: float, retries: int, backoff: float,
           max_bytes: int | None, progress: bool | None) -> None:
    """Fill ``part`` with the body of ``url``: retry with backoff, resume with Range, never hang."""
    try:
        host = urlsplit(url).hostname
        http, proxied = _pool(url, connect, read)
    except ValueError as e:  # e.g. a port out of range
        raise DownloadError(f"cannot download {url}: not a valid URL ({e})") from None
    if not host:
        raise DownloadError(f"cannot download {url}: the URL names no host")
    if not proxied:  # a name that does not exist will not appear by retrying: say so at once
        try:
            socket.getaddrinfo(host, None)
        except UnicodeError:
            raise DownloadError(f"cannot download {url}: {host!r} is not a valid host name") from None
        except socket.gaierror as e:
            if e.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                raise DownloadError(f"cannot download {url}: the host name {host!r} does not resolve ({e.strerror}); "
                                    "check the URL and your network connection") from None
    retry = Retry(total=retries, status_forcelist=RETRY_STATUS, allowed_methods={"GET"}, backoff_factor=backoff,
                  raise_on_status=False, respect_retry_after_header=False)
    bar = tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=part.name[: -len(".part")],
               disable=None if progress is None else not progress)
    try:
        while True:
            offset = part.stat().st_size if part.exists() else 0
            headers = {"Accept-Encoding": "identity", "User-Agent": "rrid (python -m rrid prepare)"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            try:
                response = http.request("GET", url, headers=headers, retries=retry, preload_content=False,
                                        decode_content=False)
            except MaxRetryError as e:
                raise _failure(url, e.reason, part, connect, read, retries) from None
            except HTTPError as e:  # a malformed URL and the like: nothing to retry
                raise DownloadError(f"cannot download {url}: {e}") from None
            retry = response.retries or retry  # the attempts spent so far count against the budget
            try:
                _receive(response, url, part, offset, read, max_bytes, bar)
                return
            except _Restart:
                continue
            except (ReadTimeoutError, ProtocolError) as e:  # silence, a trickle, or a connection cut mid-body
                try:
                    retry = retry.increment("GET", url, error=e)
                except MaxRetryError as e2:
                    raise _failure(url, e2.reason, part, connect, read, retries) from None
                retry.sleep()
            finally:
                response.close()  # a stalled connection is not handed back to the pool
    finally:
        bar.close()


def _receive(response, url: str, part: Path, offset: int, read: float, max_bytes: int | None, bar) -> None:
    """Write one response's body to ``part`` (appending after ``offset`` on a 206)."""
    status = response.status
    if status == 416 and offset:  # the range starts at or past the end: the .part is complete, or is another file
        total = _content_range(response.headers.get("Content-Range", ""))[2]
        if total == offset:
            return
        part.unlink()
        raise _Restart
    if status >= 400 or status not in (200, 206):
        hint = ("check the URL (the official links have moved over the years)" if status in (401, 403, 404, 410)
                else "the server has trouble; try again later")
        attempts = len(response.retries.history) + 1 if response.retries else 1
        tried = f" ({attempts} attempts)" if attempts > 1 else ""
        raise DownloadError(f"cannot download {url}: the server answered {status} {response.reason or ''}".rstrip()
                            + f"{tried}; {hint}")
    if status == 206:
        start, _, total = _content_range(response.headers.get("Content-Range", ""))
        if start != offset:  # not the range asked for: start again from scratch
            if not offset:
                raise DownloadError(f"cannot download {url}: the server sent a partial file (from byte {start}) "
                                    "when the whole file was asked for")
            part.unlink()
            raise _Restart
    else:  # 200: the whole file (a server that ignores Range), from byte 0
        start, length = 0, response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
    if max_bytes is not None and total is not None and total > max_bytes:
        raise DownloadError(f"cannot download {url}: the server announces {total:,} bytes, more than the "
                            f"{max_bytes:,} expected; check the URL")
    bar.reset(total=total)
    bar.update(start)
    size, window_start, window_bytes = start, time.monotonic(), 0
    with open(part, "r+b" if start else "wb") as f:
        f.seek(start)
        f.truncate()
        while chunk := response.read1(CHUNK):
            f.write(chunk)
            size += len(chunk)
            bar.update(len(chunk))
            if max_bytes is not None and size > max_bytes:
                f.close()
                part.unlink()
                raise DownloadError(f"cannot download {url}: more than the {max_bytes:,} bytes expected arrived; "
                                    "check the URL")
            window_bytes += len(chunk)
            if time.monotonic() - window_start >= read:
                if window_bytes < LOW_SPEED:  # a trickle that never trips the read timeout
                    raise ReadTimeoutError(None, url, f"less than {LOW_SPEED} bytes in {read:g} s")
                window_start, window_bytes = time.monotonic(), 0
    if total is not None and size != total:
        raise ProtocolError(f"connection closed after {size:,} of {total:,} bytes")


def _content_range(value: str) -> tuple[int | None, int | None, int | None]:
    """``"bytes 100-199/1000"`` -> ``(100, 199, 1000)``; ``"bytes */1000"`` -> ``(None, None, 1000)``."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None, None
    a, b, total = m.groups()
    as_int = lambda x: int(x) if x and x != "*" else None  # noqa: E731
    return as_int(a), as_int(b), as_int(total)


def _failure(url: str, reason, part: Path, connect: float, read: float, retries: int) -> DownloadError:
    """One line for a request that failed every attempt: what happened, and what to do."""
    host = urlsplit(url).hostname
    tried = f" ({retries + 1} attempts)" if retries else ""
    if isinstance(reason, ux.NameResolutionError):
        text = f"the host name {host!r} does not resolve{tried}; check the URL and your network connection"
    elif isinstance(reason, ux.NewConnectionError):
        cause = reason.__context__ or reason
        text = f"cannot connect to {host}{tried}: {getattr(cause, 'strerror', None) or cause}; check the URL and your network"
    elif isinstance(reason, ux.ConnectTimeoutError):
        text = f"no connection to {host} within {connect:g} s{tried}; check your network or try again later"
    elif isinstance(reason, ux.ReadTimeoutError):
        text = f"no data from the server for {read:g} s (or only a trickle){tried}; try again later"
    elif isinstance(reason, ux.SSLError):
        text = f"TLS/SSL error{tried}: {reason}; check the URL and your system's certificates"
    elif isinstance(reason, ux.ProtocolError):
        text = f"the connection broke{tried}: {reason}; try again later"
    else:
        text = f"{reason}{tried}"
    size = part.stat().st_size if part.exists() else 0
    kept = f"; the {size:,} bytes received are kept in {part} and the next run resumes from there" if size else ""
    return DownloadError(f"cannot download {url}: {text}{kept}")


# ----------------------------------------------------------------------------- archives

def _shown(name: str) -> str:
    """An archive member's name as messages show it: repr, one line, at most 300 characters."""
    return short_repr(name, 300)


def _member_path(name: str, archive: Path, dest: Path) -> PurePosixPath | None:
    """The relative path an archive member unpacks to; refuse absolute paths, '..' and control characters.

    Backslashes count as separators (zips written on Windows). None: the member is the
    archive's top folder itself (``./``).
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UnsafeArchiveError(f"{archive}: member {_shown(name)} has control characters in its name; refused")
    n = name.replace("\\", "/")
    if n.startswith("/") or re.match(r"[A-Za-z]:", n):
        raise UnsafeArchiveError(f"{archive}: member {_shown(name)} has an absolute path and would be written "
                                 f"outside {dest}; refused")
    parts = [p for p in n.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {_shown(name)} would be written outside {dest}; refused")
    return PurePosixPath(*parts) if parts else None


class _Budget:
    """Counts members and unpacked bytes against the bounds; refuses the archive past them."""

    def __init__(self, archive: Path, max_bytes: int, max_members: int):
        self.archive, self.max_bytes, self.max_members = archive, max_bytes, max_members
        self.bytes = self.members = 0
        self.files: set[PurePosixPath] = set()
        self.dirs: set[PurePosixPath] = set()

    def member(self, rel: PurePosixPath | None, is_dir: bool, name: str) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise UnsafeArchiveError(f"{self.archive} has more than {self.max_members:,} members; refused "
                                     "(not this data set, or an archive bomb)")
        if rel is None:
            return
        parents = set(rel.parents) - {PurePosixPath(".")}
        if rel in self.files or (not is_dir and rel in self.dirs) or parents & self.files:
            raise UnsafeArchiveError(f"{self.archive}: member {_shown(name)} clashes with another member of the same "
                                     "path; refused")
        (self.dirs if is_dir else self.files).add(rel)
        self.dirs |= parents

    def add(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.max_bytes:
            raise UnsafeArchiveError(f"{self.archive} unpacks to more than {self.max_bytes:,} bytes; refused "
                                     "(not this data set, or an archive bomb)")


def _write(src, path: Path, expected: int, budget: _Budget, archive: Path, name: str) -> None:
    """Copy one member's bytes to the new file ``path``, counting them; its size must be ``expected``."""
    written = 0
    with open(path, "xb") as out:
        while chunk := src.read(CHUNK):
            budget.add(len(chunk))
            written += len(chunk)
            if written > expected:
                raise CorruptArchiveError(f"{archive}: member {_shown(name)} holds more than its declared "
                                          f"{expected:,} bytes")
            out.write(chunk)
    if written != expected:
        raise CorruptArchiveError(f"{archive} is truncated or corrupt: member {_shown(name)} has {written:,} of its "
                                  f"{expected:,} bytes; download it again")


def _unpack_zip(archive: Path, tmp: Path, dest: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        declared = sum(i.file_size for i in infos)
        if len(infos) > budget.max_members or declared > budget.max_bytes:
            raise UnsafeArchiveError(f"{archive} declares {len(infos):,} members and {declared:,} unpacked bytes, "
                                     f"more than the bounds ({budget.max_members:,}, {budget.max_bytes:,}); refused "
                                     "(not this data set, or a zip bomb)")
        for info in infos:
            rel = _member_path(info.filename, archive, dest)
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the writer recorded no Unix file type
            is_dir = info.is_dir() or kind == stat.S_IFDIR
            if kind == stat.S_IFLNK:
                raise UnsafeArchiveError(f"{archive}: member {_shown(info.filename)} is a symbolic link; refused "
                                         "(data set archives hold only files and folders)")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeArchiveError(f"{archive}: member {_shown(info.filename)} is not a regular file or folder "
                                         "(a device, FIFO or other special member); refused")
            budget.member(rel, is_dir, info.filename)
        for info in infos:
            rel = _member_path(info.filename, archive, dest)
            if rel is None:
                continue
            if info.is_dir() or stat.S_IFMT(info.external_attr >> 16) == stat.S_IFDIR:
                (tmp / rel).mkdir(parents=True, exist_ok=True)
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            try:
                src = zf.open(info)
            except (RuntimeError, NotImplementedError) as e:  # encrypted, or an unknown compression method
                raise DatasetError(f"{archive}: cannot read member {_shown(info.filename)}: "
                                   f"{one_line(str(e), 200)}") from None
            with src:
                _write(src, tmp / rel, info.file_size, budget, archive, info.filename)


def _tar_stream(archive: Path):
    """The archive's bytes, decompressed (gzip, bzip2 or xz, by their magic numbers), as a file object."""
    with open(archive, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(archive, "rb")
    if magic.startswith(b"BZh"):
        return bz2.open(archive, "rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(archive, "rb")
    return open(archive, "rb")


class _ReadGuard:
    """Hands a tar stream to ``tarfile``, refusing any single read above ``MAX_READ`` bytes.

    ``tarfile`` reads a GNU long name or a pax header whole, at the size the archive
    declares; a crafted .tar.gz could declare gigabytes of zeros there (a memory bomb).
    Real headers are a few KB, and file data is read in chunks of ``CHUNK``.
    """

    MAX_READ = 4 * CHUNK

    def __init__(self, f, archive: Path):
        self.f, self.archive = f, archive

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self.MAX_READ:
            raise UnsafeArchiveError(f"{self.archive}: a tar header declares {n:,} bytes of names or attributes; "
                                     "refused (a crafted archive)")
        return self.f.read(n)

    def seek(self, *args):
        return self.f.seek(*args)

    def tell(self):
        return self.f.tell()


def _is_tar(archive: Path) -> bool:
    """Whether the (decompressed) archive starts with a valid tar header; corrupt compression raises."""
    with _tar_stream(archive) as f:
        block = f.read(tarfile.BLOCKSIZE)
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.EmptyHeaderError:
        return True  # an empty tar
    except tarfile.HeaderError:
        return False
    return True


def _unpack_tar(archive: Path, tmp: Path, dest: Path, budget: _Budget) -> None:
    data_filter = getattr(tarfile, "data_filter", None)  # the standard library's own guard (3.10.12+)
    with _tar_stream(archive) as raw, tarfile.open(fileobj=_ReadGuard(raw, archive), mode="r:") as tf:
        for m in tf:  # one pass: each member is checked before it is written, all into the temp folder
            rel = _member_path(m.name, archive, dest)
            if m.issym() or m.islnk():
                kind = "symbolic" if m.issym() else "hard"
                raise UnsafeArchiveError(f"{archive}: member {_shown(m.name)} is a {kind} link to "
                                         f"{_shown(m.linkname)}; refused (data set archives hold only files and "
                                         "folders)")
            if not (m.isreg() or m.isdir()):
                raise UnsafeArchiveError(f"{archive}: member {_shown(m.name)} is not a regular file or folder "
                                         "(a device, FIFO or other special member); refused")
            if data_filter is not None and rel is not None:
                try:
                    data_filter(m, str(tmp))
                except tarfile.FilterError as e:
                    raise UnsafeArchiveError(f"{archive}: member {_shown(m.name)} refused: {e}") from None
            budget.member(rel, m.isdir(), m.name)
            if rel is None:
                continue
            if m.isdir():
                (tmp / rel).mkdir(parents=True, exist_ok=True)
                continue
            if budget.bytes + m.size > budget.max_bytes:
                budget.add(m.size)  # refuses on the declared size, before reading a byte
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            with tf.extractfile(m) as src:
                _write(src, tmp / rel, m.size, budget, archive, m.name)


def _archive_kind(archive: Path) -> str:
    """``"zip"`` or ``"tar"``; a truncated or corrupt archive is named as such."""
    _require_regular(archive, "archive")
    try:
        with open(archive, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise DatasetError(f"cannot read archive {archive}: {e.strerror}") from None
    if not head:
        raise CorruptArchiveError(f"{archive} is empty (0 bytes); download it again")
    if zipfile.is_zipfile(archive):
        return "zip"
    if head.startswith(b"PK"):
        raise CorruptArchiveError(f"{archive} is a truncated or corrupt zip archive (its central directory, "
                                  "at the end of the file, is missing); download it again")
    compressed = head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"))
    try:
        if _is_tar(archive):
            return "tar"
    except (EOFError, zlib.error, lzma.LZMAError, OSError):  # broken compression
        raise CorruptArchiveError(f"{archive} is a truncated or corrupt compressed archive; download it again") from None
    if compressed:
        raise DatasetError(f"{archive} is compressed but holds no tar archive")
    raise DatasetError(f"{archive} is neither a zip nor a tar archive (it starts with {head[:8]!r})")


def extract(archive, dest, check: Callable[[Path], object] | None = None, *,
            max_bytes: int = MAX_UNPACKED_BYTES, max_members: int = MAX_MEMBERS) -> Path:
    """Unpack a zip or tar(.gz) ``archive`` into the new folder ``dest``; return ``dest``.

    Unpacks into a temp folder beside ``dest``; ``check(folder)`` (e.g. ``Market1501.locate``)
    may refuse the result by raising DatasetError; only then is the folder renamed to
    ``dest``, which must be absent or empty. A symbolic link at ``dest`` is followed.
    """
    archive, dest = Path(archive), Path(dest)
    budget, tmp = _Budget(archive, max_bytes, max_members), None
    try:
        target = real_target(dest)
        if target.exists() and not target.is_dir():
            raise DatasetError(f"cannot unpack {archive} into {dest}: it exists and is not a folder")
        if target.is_dir() and any(target.iterdir()):
            shown = ", ".join(one_line(name, 100) for name in sorted(p.name for p in target.iterdir())[:5])
            raise DatasetError(f"cannot unpack {archive} into {dest}: the folder exists and is not empty ({shown}); "
                               "remove it or choose another folder")
        kind = _archive_kind(archive)
        with temp_dir(target) as tmp:
            try:
                (_unpack_zip if kind == "zip" else _unpack_tar)(archive, tmp, dest, budget)
            except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as e:
                raise CorruptArchiveError(f"{archive} is truncated or corrupt ({e}); download it again") from None
            except OSError as e:
                if e.errno is not None:  # the file system's error (full disk, permissions): reported below
                    raise
                raise CorruptArchiveError(f"{archive} is truncated or corrupt ({e}); download it again") from None
            if check is not None:
                try:
                    check(tmp)
                except DatasetError as e:
                    raise DatasetError(f"{archive} does not hold the expected folder tree, so nothing was written "
                                       f"to {dest}: " + str(e).replace(str(tmp), str(dest))) from None
            move_into_place(tmp, target, replace=False)  # over an empty folder at most: never deletes data
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DatasetError(f"no space left on the device of {dest} while unpacking {archive} "
                               f"({budget.bytes:,} bytes written); free some space and run again") from None
        where = f" ({e.filename})".replace(str(tmp), str(dest)) if e.filename and tmp else ""
        raise DatasetError(f"cannot unpack {archive} into {dest}: {e.strerror or e}{where}") from None
    return dest


# ----------------------------------------------------------------------------- prepare

def prepare(source, root, check: Callable[[Path], object], archive_name: str, *, what: str = "the data set",
            md5: str | None = None, sha256: str | None = None, max_download_bytes: int | None = None,
            timeout: float | tuple[float, float] = TIMEOUT, retries: int = RETRIES) -> Path:
    """Make ``root`` hold a data set from ``source`` (a URL or a local archive); return ``root``.

    ``check(folder)`` raises DatasetError unless ``folder`` holds the expected tree (e.g.
    ``Market1501.locate``). Nothing happens if ``root`` already passes it. A URL is
    downloaded to ``root``'s folder as ``archive_name``; the checksum is verified, the
    archive unpacked beside ``root``, checked there, and renamed to ``root``. The work is done
    holding the lock of ``root`` (``rrid.files.lock_folder``, beside it): a second process
    preparing it waits, says so on stderr, and then finds it ready.
    """
    root = Path(root)
    remove_stale_temps(real_target(root).parent, real_target(root).name)  # a killed run's temp folders
    if _ready(root, check):
        return root
    with lock_folder(root, f"preparing {what}", wait=True, inside=False,
                     on_wait=lambda note: print(note, file=sys.stderr, flush=True)):
        if _ready(root, check):              # prepared by the process this one waited for
            return root
        archive = _archive(source, root, archive_name, what, md5=md5, sha256=sha256,
                           max_download_bytes=max_download_bytes, timeout=timeout, retries=retries)
        extract(archive, root, check=check)
    return root


def _ready(root: Path, check: Callable[[Path], object]) -> bool:
    try:
        check(root)
        return True
    except DatasetError:
        return False


def _archive(source, root: Path, archive_name: str, what: str, *, md5, sha256, max_download_bytes, timeout,
             retries) -> Path:
    """The local archive of ``source``: downloaded beside ``root`` (a URL) or checked where it is."""
    source = str(source)
    archive = Path(source).expanduser()
    local = "://" not in source and archive.exists()
    drive_id = None if local else drive_file_id(source)
    if drive_id is not None:
        return download_drive(drive_id, real_target(root).parent / archive_name, md5=md5, sha256=sha256, source=source)
    if "://" in source:
        return download(source, real_target(root).parent / archive_name, md5=md5, sha256=sha256,
                        timeout=timeout, retries=retries, max_bytes=max_download_bytes)
    if archive.is_dir():
        raise DatasetError(f"{archive} is a folder, not an archive: if it holds {what} already unpacked, "
                           "point the root (data.root, --root) at it")
    _require_regular(archive, f"{what} archive")
    verify_checksum(archive, md5=md5, sha256=sha256)
    return archive


# ----------------------------------------------------------------------------- Google Drive

_DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")
_DRIVE_ID = re.compile(r"[A-Za-z0-9_-]{25,}")


def drive_file_id(source: str) -> str | None:
    """The Google Drive file id in ``source``, or None when it is no Drive link.

    Accepted: a share link (``https://drive.google.com/file/d/ID/view?usp=sharing``), the older
    ``open?id=ID`` and ``uc?id=ID&export=download`` forms (also on ``docs.google.com`` and
    ``drive.usercontent.google.com``), and a bare id (25 or more letters, digits, ``-`` and
    ``_``; the caller tries a local file of that name first). A link to a Drive *folder* is a
    DatasetError: share the archive itself.
    """
    source = source.strip()
    if "://" not in source:
        return source if _DRIVE_ID.fullmatch(source) else None
    try:
        parts = urlsplit(source)
    except ValueError:
        return None
    if (parts.hostname or "").lower() not in _DRIVE_HOSTS:
        return None
    if "/folders/" in parts.path:
        raise DatasetError(f"{source} is a link to a Google Drive folder; share the archive itself (right-click the "
                           "zip, Share, Copy link) and give that link")
    found = re.search(r"/d/([A-Za-z0-9_-]+)", parts.path) or re.search(r"(?:^|&)id=([A-Za-z0-9_-]+)", parts.query)
    if found is None:
        raise DatasetError(f"{source}: a Google Drive link without a file id; expected "
                           "https://drive.google.com/file/d/<id>/view or ...?id=<id>")
    return found.group(1)


def download_drive(file_id: str, dest, md5: str | None = None, sha256: str | None = None, *,
                   source: str | None = None) -> Path:
    """Fetch the Google Drive file ``file_id`` to ``dest`` with ``gdown`` (resuming ``dest.part``),
    verify it, then rename. Returns ``dest``; a ``dest`` that already matches is kept.

    ``gdown`` is optional (``pip install gdown``): without it, a DownloadError says what to
    install. A file Drive refuses (not shared with "anyone with the link", or over its download
    quota) or a broken connection is a DownloadError naming the id; the ``.part`` file is kept
    for the next run.
    """
    dest, shown = Path(dest), source or f"Google Drive file {file_id}"
    part = dest.with_name(dest.name + ".part")
    if _already_there(dest, part, sha256, md5):
        return dest
    try:
        import gdown  # optional dependency: only Google Drive links need it
    except ImportError:
        raise DownloadError(f"cannot download {shown}: Google Drive links need gdown (pip install gdown, or "
                            "pip install -e \".[drive]\" in the checkout; Colab has it); or download the file "
                            "yourself and give its path") from None
    failures = (OSError, ValueError, RuntimeError, getattr(getattr(gdown, "exceptions", None),
                                                           "FileURLRetrievalError", OSError))
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        got = gdown.download(id=file_id, output=str(part), quiet=False, resume=True)
    except failures as e:
        got, cause = None, one_line(str(e) or type(e).__name__, 200)
    else:
        cause = "gdown fetched nothing"
    if got is None or not part.is_file():
        raise DownloadError(f"cannot download {shown} (Google Drive file {file_id}): {cause}; check that the file is "
                            "shared with \"anyone with the link\", or try again later (Drive limits how often a "
                            "file is downloaded)")
    return _verified_into_place(part, dest, sha256, md5, f"the file downloaded from {shown}", "check the link")


# ----------------------------------------------------------------------------- the data sets

def prepare_market1501(source, root, md5: str | None = MARKET1501_MD5, **kw) -> Path:
    """Make ``root`` hold Market-1501 from ``source`` (a local Market-1501-v15.09.15.zip, a URL or a
    Google Drive link).

    The archive's md5 is checked against the published one; ``root`` ends up holding
    ``Market-1501-v15.09.15/``, which ``Market1501(root)`` reads. Nothing happens if
    ``root`` already holds the data set.
    """
    kw.setdefault("max_download_bytes", 4 << 30)
    return prepare(source, root, Market1501.locate, "Market-1501-v15.09.15.zip", what="Market-1501", md5=md5, **kw)


def prepare_dukemtmc(source, root, md5: str | None = None, **kw) -> Path:
    """Make ``root`` hold DukeMTMC-reID from ``source`` (``DukeMTMC-reID.zip``: a path, a URL or a
    Google Drive link). The data set was withdrawn by its authors in 2019 and no checksum is
    published, so only ``md5`` when given and the folder tree are checked."""
    kw.setdefault("max_download_bytes", 4 << 30)
    return prepare(source, root, DukeMTMCReID.locate, "DukeMTMC-reID.zip", what="DukeMTMC-reID", md5=md5, **kw)


def prepare_cuhk03(source, root, md5: str | None = None, **kw) -> Path:
    """Make ``root`` hold CUHK03-NP (Zhong et al.'s 767/700 split, labeled and detected boxes) from
    ``source`` (the ``cuhk03-np`` zip of the re-ranking authors' repository: a path, a URL or a
    Google Drive link). No checksum is published: ``md5`` when given and the folder tree of both
    variants (:meth:`CUHK03NP.locate_variants`) are checked."""
    kw.setdefault("max_download_bytes", 4 << 30)
    return prepare(source, root, CUHK03NP.locate_variants, "cuhk03-np.zip", what="CUHK03-NP", md5=md5, **kw)
