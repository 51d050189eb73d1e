"""Downloads and extraction on archives and servers the tests build (nothing leaves 127.0.0.1).

The network tests pass short timeouts (0.3 s) and no backoff, so that every failure,
including a server that never answers, ends within a few seconds.
"""

import hashlib
import http.server
import io
import os
import re
import signal
import socket
import stat
import tarfile
import threading
import time
import zipfile

import pytest

from _faults import killed
from rrid.data import Market1501, download as dl

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
FAST = dict(timeout=0.3, backoff=0.0)  # seconds of silence before a retry; no waits between attempts


def sha(b):
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for key in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)


def test_file_url_and_checksums(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "file.bin"
    assert dl.download(src.as_uri(), dest, sha256=sha(PAYLOAD), md5=hashlib.md5(PAYLOAD).hexdigest()).read_bytes() == PAYLOAD
    dl.verify_checksum(dest, sha256=sha(PAYLOAD))
    with pytest.raises(dl.ChecksumError, match="file.bin: md5"):
        dl.verify_checksum(dest, md5="0" * 32)
    with pytest.raises(dl.DownloadError, match="only http://, https:// and file://"):
        dl.download("ftp://127.0.0.1/x.zip", tmp_path / "x.zip")


def test_checksum_mismatch_leaves_nothing(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "file.bin"
    with pytest.raises(dl.ChecksumError) as e:
        dl.download(src.as_uri(), dest, sha256=sha(b"something else"))
    assert str(e.value) == (f"the file downloaded from {src.as_uri()} is not the expected one (sha256 is {sha(PAYLOAD)}, "
                            f"expected {sha(b'something else')} (corrupt or wrong file)); it was deleted: check the URL")
    assert not dest.exists() and not (tmp_path / "file.bin.part").exists()


# ---- local HTTP servers -----------------------------------------------------------------

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):
        pass  # a client that timed out breaks the pipe: expected here


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.headers.get("Range"))
        self.server.behave(self)

    def log_message(self, *args):
        pass


def send(h, honour_range=True, stall_after=None, status=None, headers=(), trickle=False):
    """Answer like a file server: 206 for a Range when ``honour_range``, else 200 with the whole file."""
    if status is not None:
        h.send_response(status)
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("Content-Length", "0")
        h.end_headers()
        return
    start, header = 0, h.headers.get("Range")
    if header and honour_range:
        start = int(header.split("=")[1].split("-")[0])
        if start >= len(PAYLOAD):
            h.send_response(416)
            h.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(206)
        h.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
    else:
        h.send_response(200)
    body = PAYLOAD[start:]
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if trickle:  # one byte every 50 ms: never silent for a whole read timeout
        for i in range(200):
            if h.server.release.is_set():
                return
            h.wfile.write(body[i:i + 1])
            h.wfile.flush()
            time.sleep(0.05)
        return
    if stall_after is None:
        h.wfile.write(body)
        return
    h.wfile.write(body[:stall_after])
    h.wfile.flush()
    h.server.release.wait(10)  # silent mid-body until the test ends


@pytest.fixture
def serve():
    """``serve(behave) -> (server, url)``: an HTTP server on 127.0.0.1 that answers with ``behave(handler)``."""
    servers = []

    def start(behave):
        httpd = Server(("127.0.0.1", 0), Handler)
        httpd.behave, httpd.requests, httpd.release = behave, [], threading.Event()
        threading.Thread(target=httpd.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
        servers.append(httpd)
        return httpd, f"http://127.0.0.1:{httpd.server_port}/data.bin"

    yield start
    for httpd in servers:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()


def test_resume_partial_download_with_range(tmp_path, serve):
    server, url = serve(send)
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:40_000])
    dl.download(url, dest, sha256=sha(PAYLOAD), progress=False)
    assert server.requests == ["bytes=40000-"]  # only the missing bytes were asked for
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "data.bin.part").exists()
    dl.download(url, dest, sha256=sha(PAYLOAD))  # already there and verified: no request
    assert len(server.requests) == 1
    (tmp_path / "fresh.bin.part").write_bytes(b"stale")
    dl.download(url, tmp_path / "fresh.bin", resume=False, progress=False)
    assert server.requests[-1] is None and (tmp_path / "fresh.bin").read_bytes() == PAYLOAD


def test_complete_part_is_accepted_on_416(tmp_path, serve):
    server, url = serve(send)
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)  # killed after the last byte, before the rename
    dl.download(url, tmp_path / "data.bin", sha256=sha(PAYLOAD), progress=False)
    assert server.requests == [f"bytes={len(PAYLOAD)}-"] and (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_server_ignoring_range_is_read_from_the_start(tmp_path, serve):
    server, url = serve(lambda h: send(h, honour_range=False))
    (tmp_path / "data.bin.part").write_bytes(b"x" * 40_000)  # not even the right bytes: must not survive
    dl.download(url, tmp_path / "data.bin", sha256=sha(PAYLOAD), progress=False)
    assert server.requests == ["bytes=40000-"]
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_silent_server_times_out_in_bounded_time(tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)  # the kernel accepts connections; nobody ever reads or answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/data.bin"
    try:
        t0 = time.monotonic()
        with pytest.raises(dl.DownloadError) as e:
            dl.download(url, tmp_path / "data.bin", retries=1, progress=False, **FAST)
        elapsed = time.monotonic() - t0
    finally:
        silent.close()
    assert elapsed < 5  # two attempts of 0.3 s; generous for a loaded machine
    assert str(e.value) == f"cannot download {url}: no data from the server for 0.3 s (or only a trickle) (2 attempts); try again later"
    assert not (tmp_path / "data.bin").exists() and not (tmp_path / "data.bin.part").exists()


def test_stall_mid_body_is_resumed_with_range(tmp_path, serve):
    server, url = serve(lambda h: send(h, stall_after=30_000 if len(h.server.requests) == 1 else None))
    dest = dl.download(url, tmp_path / "data.bin", sha256=sha(PAYLOAD), retries=2, progress=False, **FAST)
    assert server.requests == [None, "bytes=30000-"]  # the second attempt asked only for the rest
    assert dest.read_bytes() == PAYLOAD


def test_stalls_every_time_keep_the_part_for_the_next_run(tmp_path, serve):
    server, url = serve(lambda h: send(h, stall_after=1000))
    t0 = time.monotonic()
    with pytest.raises(dl.DownloadError, match=r"\(3 attempts\).*the 3,000 bytes received are kept in .*data.bin.part"):
        dl.download(url, tmp_path / "data.bin", sha256=sha(PAYLOAD), retries=2, progress=False, **FAST)
    assert time.monotonic() - t0 < 6
    assert server.requests == [None, "bytes=1000-", "bytes=2000-"]
    assert (tmp_path / "data.bin.part").read_bytes() == PAYLOAD[:3000]  # exactly the bytes served, in order
    good, url2 = serve(send)
    dl.download(url2, tmp_path / "data.bin", sha256=sha(PAYLOAD), progress=False)  # the next run resumes
    assert good.requests == ["bytes=3000-"] and (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_a_trickle_counts_as_a_stall(tmp_path, serve):
    server, url = serve(lambda h: send(h, trickle=True))
    t0 = time.monotonic()
    with pytest.raises(dl.DownloadError, match="no data from the server for 0.3 s .or only a trickle."):
        dl.download(url, tmp_path / "data.bin", retries=0, progress=False, **FAST)
    assert time.monotonic() - t0 < 5  # 200 bytes at 20 bytes/s would take 10 s


@pytest.mark.parametrize("status, attempts", [(404, 1), (500, 3), (503, 3)])
def test_http_errors_are_one_line(tmp_path, serve, status, attempts):
    # 503 with Retry-After: one hour: not honoured, the retries stay bounded in time
    server, url = serve(lambda h: send(h, status=status, headers=[("Retry-After", "3600")]))
    t0 = time.monotonic()
    with pytest.raises(dl.DownloadError) as e:
        dl.download(url, tmp_path / "data.bin", retries=2, progress=False, **FAST)
    assert time.monotonic() - t0 < 5
    msg = str(e.value)
    assert msg.startswith(f"cannot download {url}: the server answered {status} ") and "\n" not in msg
    assert len(server.requests) == attempts  # 404 is final; 5xx is retried
    assert ("check the URL" in msg) == (status == 404) and (f"({attempts} attempts)" in msg) == (attempts > 1)


def test_unresolvable_host_and_refused_connection(tmp_path):
    url = "http://rrid-test-host.invalid/Market-1501-v15.09.15.zip"  # .invalid never resolves (RFC 6761)
    with pytest.raises(dl.DownloadError, match=r"^cannot download http://rrid-test-host\.invalid/Market-1501-v15\.09\.15\.zip: "
                                               r"the host name 'rrid-test-host\.invalid' does not resolve"):
        dl.download(url, tmp_path / "m.zip", retries=0, progress=False, **FAST)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    with pytest.raises(dl.DownloadError, match=rf"cannot download http://127.0.0.1:{port}/x: cannot connect to 127.0.0.1 \(2 attempts\)"):
        dl.download(f"http://127.0.0.1:{port}/x", tmp_path / "x", retries=1, progress=False, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_larger_file_than_expected_is_refused(tmp_path, serve):
    server, url = serve(send)
    with pytest.raises(dl.DownloadError, match="announces 102,400 bytes, more than the 1,000 expected"):
        dl.download(url, tmp_path / "data.bin", max_bytes=1000, progress=False)
    assert not (tmp_path / "data.bin").exists() and not (tmp_path / "data.bin.part").exists()


# ---- archives -------------------------------------------------------------------------

def make_zip(path, members, symlink=None, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items() if isinstance(members, dict) else members:
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink[0])
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, symlink[1])
    return path


def make_tar(path, members=(), links=(), devices=(), fifos=()):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in (members.items() if isinstance(members, dict) else members):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, kind, target in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tf.addfile(info)
        for name in devices:
            info = tarfile.TarInfo(name)
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tf.addfile(info)
        for name in fifos:
            info = tarfile.TarInfo(name)
            info.type = tarfile.FIFOTYPE
            tf.addfile(info)
    return path


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_extract_good_archives(tmp_path):
    good = {"pkg/a.txt": b"a", "pkg/sub/b.txt": b"b"}
    for maker, name in ((make_zip, "good.zip"), (make_tar, "good.tar.gz")):
        out = dl.extract(maker(tmp_path / name, good), tmp_path / (name + ".out"))
        assert (out / "pkg" / "sub" / "b.txt").read_bytes() == b"b"
        # not mkdtemp's 0700: the mode a plain mkdir gives
        assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~_umask()
    with pytest.raises(dl.DatasetError, match=r"good.zip.out: the folder exists and is not empty \(pkg\); remove it"):
        dl.extract(tmp_path / "good.zip", tmp_path / "good.zip.out")


def test_odd_names_unpack_where_expected(tmp_path):
    members = {"données/été ✓.jpg": b"1", "with space/a b.txt": b"2", "win\\sub\\c.txt": b"3", "./dot/d.txt": b"4"}
    out = dl.extract(make_zip(tmp_path / "odd.zip", members), tmp_path / "out")
    found = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert found == {"données/été ✓.jpg": b"1", "with space/a b.txt": b"2", "win/sub/c.txt": b"3", "dot/d.txt": b"4"}


@pytest.mark.filterwarnings("ignore:Duplicate name")  # zipfile warns when writing zip-duplicate
@pytest.mark.parametrize("case", ["zip-dotdot", "zip-absolute", "zip-backslash-dotdot", "zip-drive", "zip-symlink",
                                  "zip-newline", "zip-duplicate", "tar-dotdot", "tar-absolute", "tar-symlink",
                                  "tar-symlink-chain", "tar-hardlink", "tar-hardlink-inside", "tar-device", "tar-fifo",
                                  "tar-file-under-file"])
def test_unsafe_members_are_refused_by_name(tmp_path, case):
    work = tmp_path / "work"
    work.mkdir()
    outside = tmp_path / "evil.txt"
    absolute = str(outside)
    archive = work / "bad"
    ok = {"data/ok.txt": b"ok"}
    member = {
        "zip-dotdot": "data/../../evil.txt", "zip-absolute": absolute, "zip-backslash-dotdot": "data\\..\\..\\evil.txt",
        "zip-drive": "C:/evil.txt", "zip-symlink": "data/link", "zip-newline": "data/evil\nname.txt",
        "zip-duplicate": "data/ok.txt", "tar-dotdot": "../evil.txt", "tar-absolute": absolute,
        "tar-symlink": "data/link", "tar-symlink-chain": "data/a", "tar-hardlink": "data/link",
        "tar-hardlink-inside": "data/copy", "tar-device": "data/null", "tar-fifo": "data/pipe",
        "tar-file-under-file": "data/ok.txt/inner",
    }[case]
    if case == "zip-symlink":
        make_zip(archive, ok, symlink=(member, absolute))
    elif case.startswith("zip"):
        make_zip(archive, [*ok.items(), (member, b"x")])
    elif case == "tar-symlink":
        make_tar(archive, ok, links=[(member, tarfile.SYMTYPE, "../../..")])
    elif case == "tar-symlink-chain":  # each link stays inside; together they climb out
        make_tar(archive, ok, links=[("data/a", tarfile.SYMTYPE, "b/b/b"), ("data/b", tarfile.SYMTYPE, ".."),
                                     ("data/a/evil.txt", tarfile.REGTYPE, "")])
    elif case == "tar-hardlink":
        make_tar(archive, ok, links=[(member, tarfile.LNKTYPE, absolute)])
    elif case == "tar-hardlink-inside":
        make_tar(archive, ok, links=[(member, tarfile.LNKTYPE, "data/ok.txt")])
    elif case == "tar-device":
        make_tar(archive, ok, devices=[member])
    elif case == "tar-fifo":
        make_tar(archive, ok, fifos=[member])
    else:
        make_tar(archive, [*ok.items(), (member, b"x")])
    dest = work / "dest"
    with pytest.raises(dl.UnsafeArchiveError) as e:
        dl.extract(archive, dest)
    msg = str(e.value)
    assert repr(member) in msg and "refused" in msg and "\n" not in msg  # names the member, one line
    assert ".dest." not in msg  # the user's folder is named, never the hidden temp folder
    if case in ("zip-dotdot", "zip-absolute", "zip-backslash-dotdot", "tar-dotdot", "tar-absolute"):
        assert f"outside {dest}" in msg
    assert not outside.exists() and not dest.exists()
    assert sorted(p.name for p in work.iterdir()) == ["bad"]  # no temporary folder left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_archive_bombs_are_bounded(tmp_path):
    zeros = b"\0" * (2 << 20)  # 2 MiB of zeros: a few KB compressed
    bomb = make_zip(tmp_path / "bomb.zip", {"a.bin": zeros, "b.bin": zeros}, compression=zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 50_000
    with pytest.raises(dl.UnsafeArchiveError, match=r"declares 2 members and 4,194,304 unpacked bytes.*zip bomb"):
        dl.extract(bomb, tmp_path / "out", max_bytes=3 << 20)
    tar = make_tar(tmp_path / "bomb.tar.gz", {"a.bin": zeros, "b.bin": zeros})
    with pytest.raises(dl.UnsafeArchiveError, match=r"unpacks to more than 3,145,728 bytes"):
        dl.extract(tar, tmp_path / "out", max_bytes=3 << 20)
    many = make_tar(tmp_path / "many.tar.gz", {f"f{i}": b"" for i in range(12)})
    with pytest.raises(dl.UnsafeArchiveError, match="more than 10 members"):
        dl.extract(many, tmp_path / "out", max_members=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.tar.gz", "bomb.zip", "many.tar.gz"]


def test_corrupt_and_truncated_archives_are_named(tmp_path):
    data = bytes(range(256)) * 64
    good = make_zip(tmp_path / "good.zip", {"pkg/a.bin": data})
    raw = good.read_bytes()
    flipped = tmp_path / "crc.zip"  # one byte of the stored data changed: the CRC no longer matches
    i = raw.index(data[:64]) + 100
    flipped.write_bytes(raw[:i] + bytes([raw[i] ^ 0xFF]) + raw[i + 1:])
    with pytest.raises(dl.CorruptArchiveError, match=r"crc.zip is truncated or corrupt \(Bad CRC-32 for file 'pkg/a.bin'\); download it again"):
        dl.extract(flipped, tmp_path / "out")
    truncated = tmp_path / "cut.zip"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(dl.CorruptArchiveError, match=r"cut.zip is a truncated or corrupt zip archive"):
        dl.extract(truncated, tmp_path / "out")
    tar_raw = make_tar(tmp_path / "good.tar.gz", {"pkg/a.bin": os.urandom(50_000)}).read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(tar_raw[: len(tar_raw) // 2])
    with pytest.raises(dl.CorruptArchiveError, match=r"cut.tar.gz is (a )?truncated or corrupt"):
        dl.extract(tmp_path / "cut.tar.gz", tmp_path / "out")
    (tmp_path / "empty.zip").write_bytes(b"")
    with pytest.raises(dl.CorruptArchiveError, match=r"empty.zip is empty \(0 bytes\)"):
        dl.extract(tmp_path / "empty.zip", tmp_path / "out")
    (tmp_path / "page.zip").write_bytes(b"<html>Not Found</html>")
    with pytest.raises(dl.DatasetError, match=r"page.zip is neither a zip nor a tar archive \(it starts with b'<html>No'\)"):
        dl.extract(tmp_path / "page.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_symlinked_target_folder_is_followed(tmp_path):
    real = tmp_path / "big-disk" / "market"
    real.mkdir(parents=True)
    link = tmp_path / "data"
    link.symlink_to(real, target_is_directory=True)
    dl.extract(make_zip(tmp_path / "a.zip", {"pkg/a.txt": b"a"}), link)
    assert link.is_symlink() and (real / "pkg" / "a.txt").read_bytes() == b"a"  # the data went where the link points
    assert sorted(p.name for p in real.parent.iterdir()) == ["market"]


def _market_zip(path, folders=("bounding_box_train", "query", "bounding_box_test")):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 16)).save(buf, format="JPEG")
    names = {"bounding_box_train": "0001_c1s1_000001_01.jpg", "query": "0002_c1s1_000002_01.jpg",
             "bounding_box_test": "0002_c2s1_000003_01.jpg"}
    return make_zip(path, {f"Market-1501-v15.09.15/{f}/{names[f]}": buf.getvalue() for f in folders})


def test_prepare_market1501_local_zip(tmp_path):
    archive = _market_zip(tmp_path / "Market-1501-v15.09.15.zip")
    with pytest.raises(dl.ChecksumError, match="65005ab7d12ec1c44de4eeafe813e68a"):  # not the real file
        dl.prepare_market1501(archive, tmp_path / "market")
    assert not (tmp_path / "market").exists()
    root = dl.prepare_market1501(archive, tmp_path / "market", md5=hashlib.md5(archive.read_bytes()).hexdigest())
    ds = Market1501(root)
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (1, 1, 1)
    assert dl.prepare_market1501("/no/such.zip", root) == root  # already there: nothing to do


def test_wrong_layout_leaves_no_target_behind(tmp_path):
    wrong = _market_zip(tmp_path / "wrong.zip", folders=("bounding_box_train", "bounding_box_test"))
    root = tmp_path / "market"
    with pytest.raises(dl.DatasetError) as e:
        dl.prepare_market1501(wrong, root, md5=None)
    msg = str(e.value)
    assert msg.startswith(f"{wrong} does not hold the expected folder tree, so nothing was written to {root}: ")
    assert f"missing {root}/Market-1501-v15.09.15/query/" in msg and ".market." not in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrong.zip"]  # no half-filled target, no temp folder
    good = _market_zip(tmp_path / "good.zip")
    assert Market1501(dl.prepare_market1501(good, root, md5=None)).query  # the next prepare is not blocked


@pytest.mark.parametrize("point", ["mid-unpack", "before-rename"])
def test_kill_during_extract_leaves_no_target_and_is_cleaned_next_time(tmp_path, point):
    archive = make_zip(tmp_path / "a.zip", {f"pkg/{i}.txt": b"x" * 100 for i in range(5)})
    dest = tmp_path / "dest"
    where = (dl, "_write", 3) if point == "mid-unpack" else (os, "rename", 1)
    assert killed(lambda: dl.extract(archive, dest), where) == signal.SIGKILL
    assert not dest.exists()
    litter = [p.name for p in tmp_path.iterdir() if p.name.startswith(".dest.")]
    assert len(litter) == 1 and re.match(r"\.dest\.rrid-\d+-\d+-", litter[0])  # the dead writer's pid and start time
    dl.extract(archive, dest)  # the dead writer's temp folder is removed; the unpacking succeeds
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "dest"]
    assert sorted(p.name for p in (dest / "pkg").iterdir()) == [f"{i}.txt" for i in range(5)]


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    def failing(code, text):
        def write(src, path, *args):
            raise OSError(code, text, str(path))
        return write

    monkeypatch.setattr(dl, "_write", failing(errno.ENOSPC, "No space left on device"))
    archive = make_zip(tmp_path / "a.zip", {"pkg/a.txt": b"a"})
    with pytest.raises(dl.DatasetError, match=rf"^no space left on the device of {re.escape(str(tmp_path / 'out'))} "
                                              r"while unpacking .*a.zip \(0 bytes written\); free some space"):
        dl.extract(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]
    monkeypatch.setattr(dl, "_write", failing(errno.EACCES, "Permission denied"))  # named as the user's folder
    with pytest.raises(dl.DatasetError, match=rf"cannot unpack .*a.zip into {re.escape(str(tmp_path / 'out'))}: "
                                              rf"Permission denied \({re.escape(str(tmp_path / 'out' / 'pkg' / 'a.txt'))}\)$"):
        dl.extract(archive, tmp_path / "out")


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_a_huge_tar_header_is_refused_before_it_is_read(tmp_path, fmt):
    # an 8 MB member name: tarfile would read the long-name / pax header whole into memory;
    # the same trick with gigabytes of zeros in a few MB of .tar.gz is a memory bomb
    archive = tmp_path / "header.tar.gz"
    with tarfile.open(archive, "w:gz", format=fmt) as tf:
        info = tarfile.TarInfo("d/" + "a" * (8 << 20))
        tf.addfile(info, io.BytesIO(b""))
    assert archive.stat().st_size < 100_000
    with pytest.raises(dl.UnsafeArchiveError, match=r"header.tar.gz: a tar header declares 8,38\d,\d{3} bytes .*refused"):
        dl.extract(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["header.tar.gz"]


def test_tar_compressions_and_a_gzip_that_is_not_a_tar(tmp_path):
    import gzip

    for mode in ("w", "w:gz", "w:bz2", "w:xz"):
        archive = tmp_path / f"a.{mode[2:] or 'plain'}.tar"
        with tarfile.open(archive, mode) as tf:
            info = tarfile.TarInfo("pkg/a.txt")
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
        out = dl.extract(archive, tmp_path / f"out-{mode[2:] or 'plain'}")
        assert (out / "pkg" / "a.txt").read_bytes() == b"abc"
    (tmp_path / "list.csv.gz").write_bytes(gzip.compress(b"path,pid,camid,split\n" * 100))
    with pytest.raises(dl.DatasetError, match="list.csv.gz is compressed but holds no tar archive"):
        dl.extract(tmp_path / "list.csv.gz", tmp_path / "out")
