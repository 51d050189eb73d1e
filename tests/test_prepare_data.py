"""The data step: ``python -m rrid prepare`` for every data set, from a path, an http(s) URL or a
Google Drive link, on small crafted archives (nothing leaves 127.0.0.1; gdown is replaced by a
fake that copies a local file, so no test needs it installed or the network)."""

import hashlib
import http.server
import io
import os
import sys
import threading
import types
import zipfile
from functools import partial

import pytest
from PIL import Image

from rrid import runtime
from rrid.__main__ import DATASETS, main
from rrid.data import CUHK03NP, DatasetError, DukeMTMCReID, Market1501
from rrid.data import download as dl

DRIVE_ID = "1a2B3c4D5e6F7g8H9i0JkLmNoPqRsTuVw"   # the shape of a Drive file id (33 characters)


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 16), (120, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def market_style(top: str, cameras=(1, 2)) -> dict:
    """The members of a Market-style release under ``top``: one training identity, one test identity
    seen by two cameras (so its query has a match from another camera)."""
    a, b = cameras
    return {f"{top}/bounding_box_train/0001_c{a}_f0000001.jpg": jpeg(),
            f"{top}/bounding_box_train/0001_c{b}_f0000002.jpg": jpeg(),
            f"{top}/query/0002_c{a}_f0000003.jpg": jpeg(),
            f"{top}/bounding_box_test/0002_c{b}_f0000004.jpg": jpeg()}


def make_zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def no_colab(monkeypatch):
    for key in [k for k in os.environ if k.startswith("COLAB_")]:
        monkeypatch.delenv(key)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)


# ----------------------------------------------------------------------------- Google Drive links

@pytest.mark.parametrize("source", [
    f"https://drive.google.com/file/d/{DRIVE_ID}/view?usp=sharing",
    f"https://drive.google.com/file/d/{DRIVE_ID}/view",
    f"https://drive.google.com/open?id={DRIVE_ID}",
    f"https://drive.google.com/uc?id={DRIVE_ID}&export=download",
    f"https://docs.google.com/uc?export=download&id={DRIVE_ID}",
    f"https://drive.usercontent.google.com/download?id={DRIVE_ID}&export=download",
    DRIVE_ID, f"  {DRIVE_ID}\n",
])
def test_drive_links_and_ids_give_the_file_id(source):
    assert dl.drive_file_id(source) == DRIVE_ID


@pytest.mark.parametrize("source", ["https://example.org/Market-1501-v15.09.15.zip", "Market-1501-v15.09.15.zip",
                                    "/content/drive/MyDrive/Market-1501-v15.09.15.zip", "short-id-123", ""])
def test_other_sources_are_not_drive_links(source):
    assert dl.drive_file_id(source) is None


def test_a_drive_folder_or_a_link_without_id_is_refused():
    with pytest.raises(DatasetError, match="a link to a Google Drive folder; share the archive itself"):
        dl.drive_file_id(f"https://drive.google.com/drive/folders/{DRIVE_ID}")
    with pytest.raises(DatasetError, match="a Google Drive link without a file id"):
        dl.drive_file_id("https://drive.google.com/drive/my-drive")


def fake_gdown(monkeypatch, served, calls, fail=None):
    """Install a fake ``gdown`` whose ``download(id=, output=)`` copies ``served`` to ``output``
    (or returns None / raises ``fail``), recording every call."""
    def download(id=None, output=None, quiet=False, resume=False):
        calls.append(id)
        if fail == "none":
            return None
        if fail is not None:
            with open(output, "wb") as f:
                f.write(served.read_bytes()[:100])          # a partial file, then the failure
            raise fail
        with open(output, "wb") as f:
            f.write(served.read_bytes())
        return output

    module = types.ModuleType("gdown")
    module.download = download
    monkeypatch.setitem(sys.modules, "gdown", module)


def test_a_drive_link_is_fetched_with_gdown_checked_unpacked_and_kept(tmp_path, monkeypatch, capsys, no_colab):
    served = make_zip(tmp_path / "served.zip", market_style("Market-1501-v15.09.15", cameras=(1, 2)))
    calls = []
    fake_gdown(monkeypatch, served, calls)
    root = tmp_path / "data" / "market1501"
    link = f"https://drive.google.com/file/d/{DRIVE_ID}/view?usp=sharing"
    args = ["prepare", "market1501", "--source", link, "--root", str(root), "--md5", md5(served)]
    assert main(args) == 0
    assert calls == [DRIVE_ID]
    data = Market1501(root)
    assert (len(data.train), len(data.query), len(data.gallery)) == (2, 1, 1)
    archive = tmp_path / "data" / "Market-1501-v15.09.15.zip"              # downloaded beside the root
    assert archive.read_bytes() == served.read_bytes() and not (tmp_path / "data" / "Market-1501-v15.09.15.zip.part").exists()
    out = capsys.readouterr().out
    assert f"preparing market1501 in {root} from {link} (md5 {md5(served)})" in out and f"market1501 is ready in {root}" in out
    assert main(args) == 0 and calls == [DRIVE_ID], "a prepared root is kept: nothing is fetched again"
    assert f"market1501 is already prepared in {root}: nothing to do" in capsys.readouterr().out


def test_a_drive_file_that_is_not_the_expected_one_is_deleted(tmp_path, monkeypatch, capsys):
    served = make_zip(tmp_path / "served.zip", market_style("Market-1501-v15.09.15"))
    fake_gdown(monkeypatch, served, [])
    root = tmp_path / "m"
    assert main(["prepare", "market1501", "--source", DRIVE_ID, "--root", str(root)]) == 2   # the published md5
    err = capsys.readouterr().err
    assert err.startswith(f"error: the file downloaded from {DRIVE_ID} is not the expected one (md5 is {md5(served)}, "
                          f"expected {dl.MARKET1501_MD5}") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["served.zip"], "nothing half-written is left behind"


@pytest.mark.parametrize("fail, cause", [("none", "gdown fetched nothing"),
                                         (OSError("Connection reset by peer"), "Connection reset by peer")])
def test_a_drive_failure_is_one_line_and_keeps_the_partial_file(tmp_path, monkeypatch, capsys, fail, cause):
    served = make_zip(tmp_path / "served.zip", market_style("Market-1501-v15.09.15"))
    fake_gdown(monkeypatch, served, [], fail=fail)
    assert main(["prepare", "market1501", "--source", DRIVE_ID, "--root", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot download {DRIVE_ID} (Google Drive file {DRIVE_ID}): {cause}; check that the "
                          'file is shared with "anyone with the link"') and err.count("\n") == 1
    part = tmp_path / "Market-1501-v15.09.15.zip.part"
    assert part.exists() == (fail != "none"), "gdown resumes a partial file on the next run"
    assert not (tmp_path / "m").exists()


def test_without_gdown_a_drive_link_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gdown", None)                      # import gdown raises ImportError
    assert main(["prepare", "cuhk03", "--source", DRIVE_ID, "--root", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot download {DRIVE_ID}: Google Drive links need gdown (pip install gdown")
    assert err.count("\n") == 1 and not (tmp_path / "c").exists()


def test_a_local_file_named_like_a_drive_id_is_read_as_a_file(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdown", None)                      # would fail if asked
    monkeypatch.chdir(tmp_path)
    make_zip(tmp_path / DRIVE_ID, market_style("DukeMTMC-reID", cameras=(7, 8)))
    root = dl.prepare_dukemtmc(DRIVE_ID, tmp_path / "duke")
    assert DukeMTMCReID(root).num_cameras == 8


# ----------------------------------------------------------------------------- every data set

def test_cuhk03_np_needs_both_variants(tmp_path, capsys):
    labeled = market_style("cuhk03-np/labeled")
    both = make_zip(tmp_path / "cuhk03-np.zip", {**labeled, **market_style("cuhk03-np/detected")})
    only = make_zip(tmp_path / "labeled-only.zip", labeled)
    root = tmp_path / "data" / "cuhk03-np"
    assert main(["prepare", "cuhk03", "--source", str(only), "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "does not hold the expected folder tree" in err and f"{root}/cuhk03-np/detected" in err
    assert not root.exists()
    assert main(["prepare", "cuhk03", "--source", str(both), "--root", str(root)]) == 0
    assert "(no checksum (none is published))" in capsys.readouterr().out
    for variant in CUHK03NP.VARIANTS:
        data = CUHK03NP(root, variant)
        assert data.root == root / "cuhk03-np" / variant and len(data.train) == 2
    assert CUHK03NP.locate_variants(root) == {v: root / "cuhk03-np" / v for v in CUHK03NP.VARIANTS}


def test_dukemtmc_from_a_url_and_the_default_roots_are_the_configs(tmp_path, monkeypatch, capsys, no_colab):
    from rrid.config import load_config
    from rrid.paths import ROOT

    archive = make_zip(tmp_path / "DukeMTMC-reID.zip", market_style("DukeMTMC-reID", cameras=(3, 8)))
    for key in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/DukeMTMC-reID.zip"
        root = tmp_path / "duke"
        assert main(["prepare", "dukemtmc", "--source", url, "--root", str(root), "--md5", md5(archive)]) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert DukeMTMCReID(root).num_train_ids == 1
    # each data set's default root is where its configs read it
    for name, config in [("market1501", "market1501"), ("dukemtmc", "dukemtmc"), ("cuhk03", "cuhk03_labeled"),
                         ("cuhk03", "cuhk03_detected")]:
        cfg = load_config(ROOT / "configs" / config / "row13_ours_f.yaml")
        assert cfg.data.root == str(ROOT / DATASETS[name].root), (name, config)
    assert DATASETS["market1501"].md5 == dl.MARKET1501_MD5 and DATASETS["cuhk03"].md5 is None


def test_on_colab_the_command_says_to_run_it_again_after_a_disconnect(tmp_path, monkeypatch, capsys):
    archive = make_zip(tmp_path / "m.zip", market_style("Market-1501-v15.09.15"))
    root = tmp_path / "m"
    args = ["prepare", "market1501", "--source", str(archive), "--root", str(root), "--md5", md5(archive)]
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-test")
    assert runtime.on_colab()
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "Colab: this folder is on the VM's disk, which is wiped when the runtime disconnects; run this command again "
        "in each new session (with the archive on Drive it only unpacks it again)")
    monkeypatch.delenv("COLAB_RELEASE_TAG")
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert not runtime.on_colab()
    assert main(args) == 0 and "Colab" not in capsys.readouterr().out
