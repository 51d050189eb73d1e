"""Downloads and extraction on archives and servers the tests build (nothing leaves 127.0.0.1)."""

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile

import pytest

from rrid.data import Market1501, download as dl

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes


def sha(b):
    return hashlib.sha256(b).hexdigest()


def test_file_url_and_checksums(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "file.bin"
    assert dl.download(src.as_uri(), dest, sha256=sha(PAYLOAD), md5=hashlib.md5(PAYLOAD).hexdigest()).read_bytes() == PAYLOAD
    dl.verify_checksum(dest, sha256=sha(PAYLOAD))
    with pytest.raises(dl.ChecksumError, match="file.bin: md5"):
        dl.verify_checksum(dest, md5="0" * 32)


def test_checksum_mismatch_leaves_nothing(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "file.bin"
    with pytest.raises(dl.ChecksumError, match="sha256"):
        dl.download(src.as_uri(), dest, sha256=sha(b"something else"))
    assert not dest.exists() and not (tmp_path / "file.bin.part").exists()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    ranges: list = []

    def do_GET(self):
        start = 0
        header = self.headers.get("Range")
        self.ranges.append(header)
        if header:
            start = int(header.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    RangeHandler.ranges = []
    yield f"http://127.0.0.1:{httpd.server_port}/data.bin"
    httpd.shutdown()
    httpd.server_close()


def test_resume_partial_download(tmp_path, server):
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:40_000])
    dl.download(server, dest, sha256=sha(PAYLOAD))
    assert RangeHandler.ranges == ["bytes=40000-"]
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "data.bin.part").exists()
    dl.download(server, dest, sha256=sha(PAYLOAD))  # already there and verified: no request
    assert len(RangeHandler.ranges) == 1
    dl.download(server, tmp_path / "fresh.bin", resume=False)
    assert RangeHandler.ranges[-1] is None and (tmp_path / "fresh.bin").read_bytes() == PAYLOAD


# ---- archives -------------------------------------------------------------------------

def make_zip(path, members, symlink=None):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink[0])
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, symlink[1])
    return path


def make_tar(path, members=(), links=(), devices=()):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in dict(members).items():
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
    return path


def test_extract_good_archives(tmp_path):
    good = {"pkg/a.txt": b"a", "pkg/sub/b.txt": b"b"}
    for maker, name in ((make_zip, "good.zip"), (make_tar, "good.tar.gz")):
        out = dl.extract(maker(tmp_path / name, good), tmp_path / (name + ".out"))
        assert (out / "pkg" / "sub" / "b.txt").read_bytes() == b"b"
    with pytest.raises(dl.DatasetError, match="not empty"):
        dl.extract(tmp_path / "good.zip", tmp_path / "good.zip.out")


@pytest.mark.parametrize("case", ["zip-dotdot", "zip-absolute", "zip-symlink", "tar-dotdot", "tar-absolute",
                                  "tar-symlink", "tar-hardlink", "tar-device"])
def test_escaping_members_are_refused(tmp_path, case):
    work = tmp_path / "work"
    work.mkdir()
    outside = tmp_path / "evil.txt"
    absolute = str(outside)
    archive = work / "bad"
    ok = {"data/ok.txt": b"ok"}
    if case == "zip-dotdot":
        make_zip(archive, {**ok, "data/../../evil.txt": b"x"})
    elif case == "zip-absolute":
        make_zip(archive, {**ok, absolute: b"x"})
    elif case == "zip-symlink":
        make_zip(archive, ok, symlink=("data/link", absolute))
    elif case == "tar-dotdot":
        make_tar(archive, {**ok, "../evil.txt": b"x"})
    elif case == "tar-absolute":
        make_tar(archive, {**ok, absolute: b"x"})
    elif case == "tar-symlink":
        make_tar(archive, ok, links=[("data/link", tarfile.SYMTYPE, "../../..")])
    elif case == "tar-hardlink":
        make_tar(archive, ok, links=[("data/link", tarfile.LNKTYPE, absolute)])
    else:
        make_tar(archive, ok, devices=["data/null"])
    with pytest.raises(dl.UnsafeArchiveError, match="refused"):
        dl.extract(archive, work / "dest")
    assert not outside.exists() and not (work / "dest").exists()
    assert sorted(p.name for p in work.iterdir()) == ["bad"]  # no temporary folder left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_prepare_market1501_local_zip(tmp_path):
    names = ["bounding_box_train/0001_c1s1_000001_01.jpg", "query/0002_c1s1_000002_01.jpg",
             "bounding_box_test/0002_c2s1_000003_01.jpg"]
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 16)).save(buf, format="JPEG")
    archive = make_zip(tmp_path / "Market-1501-v15.09.15.zip",
                       {f"Market-1501-v15.09.15/{n}": buf.getvalue() for n in names})
    with pytest.raises(dl.ChecksumError, match="65005ab7d12ec1c44de4eeafe813e68a"):  # not the real file
        dl.prepare_market1501(archive, tmp_path / "market")
    assert not (tmp_path / "market").exists()
    root = dl.prepare_market1501(archive, tmp_path / "market", md5=hashlib.md5(archive.read_bytes()).hexdigest())
    ds = Market1501(root)
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (1, 1, 1)
    assert dl.prepare_market1501("/no/such.zip", root) == root  # already there: nothing to do
