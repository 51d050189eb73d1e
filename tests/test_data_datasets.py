"""Parsers and validation: the real Market-1501 excerpt and folders built here."""

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rrid.data import (CUHK03NP, DatasetError, DukeMTMCReID, ImageDataset, ImageList, Market1501, build_transforms,
                       summary, summary_rows)
from rrid.data.datasets import parse_name


@pytest.mark.market_mini
def test_market_mini_counts(market_mini):
    ds = Market1501(market_mini)
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (405, 146, 303)
    assert sorted({r.pid for r in ds.train}) == list(range(50))
    assert ds.num_train_ids == 50 and ds.num_cameras == 6
    # test ids keep their original values: the other 50 of ids 0001-0200, disjoint from train
    train_raw = {parse_name(Path(r.path).name)[0] for r in ds.train}
    test_ids = {r.pid for r in ds.gallery}
    assert len(test_ids) == 50 and not train_raw & test_ids and max(test_ids) <= 200
    assert {r.pid for r in ds.query} <= test_ids and len({r.pid for r in ds.query}) == 49
    # camids are 0-based and agree with the file name
    for r in ds.query + ds.gallery:
        assert r.camid == int(re.search(r"_c(\d)", Path(r.path).name).group(1)) - 1
    assert summary_rows(ds) == [("train", 50, 405, 6), ("query", 49, 146, 6), ("gallery", 50, 303, 6)]
    assert summary(ds).splitlines()[1].split() == ["train", "50", "405", "6"]


def test_parse_name():
    assert parse_name("0002_c1s1_000451_03.jpg") == (2, 0)
    assert parse_name("-1_c3s2_000001_00.jpg") == (-1, 2)
    assert parse_name("0005_c8_f0046182.jpg") == (5, 7)  # Duke
    assert parse_name("0001_c2_1.png") == (1, 1)  # CUHK03-NP
    assert parse_name("Thumbs.db") is None and parse_name("person_12.jpg") is None


def _jpeg(path, colour=(120, 60, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 32), colour).save(path, quality=90)


def make_market(root, extra=()):
    """A tiny Market-style tree: train ids 7, 3, 12; test ids 5, 9; junk and distractors."""
    names = {
        "bounding_box_train": ["0007_c1s1_000001_01.jpg", "0007_c2s1_000002_01.jpg", "0003_c1s1_000003_01.jpg",
                               "0012_c4s1_000004_01.jpg", "-1_c1s1_000005_01.jpg"],
        "query": ["0005_c1s1_000006_01.jpg", "0009_c2s1_000007_01.jpg"],
        "bounding_box_test": ["0005_c2s1_000008_01.jpg", "0005_c1s1_000009_01.jpg", "0009_c3s1_000010_01.jpg",
                              "0000_c5s1_000011_01.jpg", "-1_c6s1_000012_01.jpg"],
    }
    for folder, files in names.items():
        for f in files:
            _jpeg(root / folder / f)
    for rel in extra:
        _jpeg(root / rel)
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"not an image")
    return root


def test_market_rules(tmp_path):
    ds = Market1501(make_market(tmp_path / "m"))
    # train: junk dropped, pids 3, 7, 12 relabelled 0, 1, 2 in sorted order
    assert sorted((Path(r.path).name[:4], r.pid) for r in ds.train) == [("0003", 0), ("0007", 1), ("0007", 1), ("0012", 2)]
    assert [(r.pid, r.camid) for r in ds.query] == [(5, 0), (9, 1)]
    gallery = sorted((r.pid, r.camid) for r in ds.gallery)
    assert gallery == [(0, 4), (5, 0), (5, 1), (9, 2)]  # distractor kept, junk dropped
    assert ds.num_train_ids == 3 and ds.num_cameras == 5


def test_market_parent_folder_and_missing_root(tmp_path):
    make_market(tmp_path / "data" / "Market-1501-v15.09.15")
    assert len(Market1501(tmp_path / "data").gallery) == 4
    with pytest.raises(DatasetError) as e:
        Market1501(tmp_path / "nowhere")
    msg = str(e.value)
    assert "nowhere/bounding_box_train" in msg and "nowhere/query" in msg and "prepare_market1501" in msg


def test_bad_names_are_listed(tmp_path):
    bad = [f"bounding_box_train/img_{i}.jpg" for i in range(7)] + ["query/0005_c9s1_000001_01.jpg"]
    root = make_market(tmp_path / "m", extra=bad)
    with pytest.raises(DatasetError) as e:
        Market1501(root)
    msg = str(e.value)
    assert "7: img_0.jpg, img_1.jpg, img_2.jpg, img_3.jpg, img_4.jpg and 2 more" in msg  # first few + count
    shutil.rmtree(root / "bounding_box_train")
    make_market(root)
    with pytest.raises(DatasetError, match=r"0005_c9s1_000001_01\.jpg"):  # camera 9 of 6
        Market1501(root)
    with pytest.warns(UserWarning, match="skip_bad"):
        ds = Market1501(root, skip_bad=True)
    assert len(ds.query) == 2


def test_empty_split_and_unmatched_query(tmp_path):
    root = make_market(tmp_path / "m")
    _jpeg(root / "query" / "0009_c3s1_000099_01.jpg")  # 9's only gallery image is camera 3
    (root / "query" / "0009_c2s1_000007_01.jpg").unlink()
    with pytest.raises(DatasetError, match=r"0009_c3s1_000099_01\.jpg"):
        Market1501(root)
    with pytest.warns(UserWarning):
        assert [r.pid for r in Market1501(root, skip_bad=True).query] == [5]
    for f in (root / "query").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match="query split .* is empty"):
        Market1501(root)


def test_truncated_jpeg_is_named(tmp_path):
    root = make_market(tmp_path / "m")
    broken = root / "bounding_box_test" / "0009_c3s1_000010_01.jpg"
    big = root / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(big, quality=95)
    broken.write_bytes(big.read_bytes()[:300])
    big.unlink()
    ds = Market1501(root)  # not decoded unless asked
    with pytest.raises(DatasetError, match="0009_c3s1_000010_01.jpg"):
        Market1501(root, verify_images=True)
    with pytest.raises(DatasetError, match="0009_c3s1_000010_01.jpg"):  # at load time
        record = next(r for r in ds.gallery if r.path == str(broken))
        ImageDataset([record], build_transforms(32, 16, train=False))[0]
    with pytest.warns(UserWarning):
        ds = Market1501(root, verify_images=True, skip_bad=True)
    assert str(broken) not in [r.path for r in ds.gallery]
    assert [r.pid for r in ds.query] == [5]  # 9 lost its only gallery match with the broken file


def test_duke_and_cuhk03(tmp_path):
    duke = tmp_path / "duke" / "DukeMTMC-reID"
    for rel in ["bounding_box_train/0001_c7_f0000001.jpg", "bounding_box_train/0002_c8_f0000002.jpg",
                "query/0010_c1_f0000003.jpg", "bounding_box_test/0010_c8_f0000004.jpg"]:
        _jpeg(duke / rel)
    ds = DukeMTMCReID(tmp_path / "duke")
    assert ds.num_cameras == 8 and [r.camid for r in ds.gallery] == [7]
    assert "withdrawn" in DukeMTMCReID.__doc__
    cuhk = tmp_path / "c" / "cuhk03-np"
    for variant in ("labeled", "detected"):
        for rel in ["bounding_box_train/0001_c1_1.png", "bounding_box_train/0001_c2_2.png",
                    "query/0003_c1_1.png", "bounding_box_test/0003_c2_1.png", "bounding_box_test/0004_c2_1.png"]:
            _jpeg(cuhk / variant / rel.replace(".png", ".jpg" if variant == "detected" else ".png"))
    lab = CUHK03NP(tmp_path / "c", variant="labeled")
    det = CUHK03NP(cuhk, variant="detected")
    assert Path(lab.root).name == "labeled" and Path(det.root).name == "detected"
    assert [len(d.gallery) for d in (lab, det)] == [2, 2] and lab.num_train_ids == 1
    with pytest.raises(DatasetError, match="variant"):
        CUHK03NP(cuhk, variant="both")


def test_image_list(tmp_path):
    rows = [("imgs/a.jpg", 40, 0, "train"), ("imgs/b.jpg", 40, 1, "train"), ("imgs/c.jpg", 11, 0, "train"),
            ("imgs/d.jpg", 5, 0, "query"), ("imgs/e.jpg", 5, 1, "gallery")]
    for path, *_ in rows:
        _jpeg(tmp_path / path)
    csv_path = tmp_path / "list.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "pid", "camid", "split"])
        w.writerows(rows)
    ds = ImageList(csv_path)
    assert [(Path(r.path).name, r.pid) for r in ds.train] == [("a.jpg", 1), ("b.jpg", 1), ("c.jpg", 0)]
    assert ds.query[0].path == str(tmp_path / "imgs" / "d.jpg") and ds.gallery[0].pid == 5
    with open(csv_path, "a", newline="") as f:
        csv.writer(f).writerows([("imgs/missing.jpg", 1, 0, "train"), ("imgs/a.jpg", 1, 0, "validation")])
    with pytest.raises(DatasetError, match="line 8"):  # the bad split value
        ImageList(csv_path)
    with pytest.warns(UserWarning) as caught:
        assert len(ImageList(csv_path, skip_bad=True).train) == 3
    assert ["line 8" in str(w.message) for w in caught] == [True, False] and "missing.jpg" in str(caught[1].message)
    csv_path.write_text("\n".join(csv_path.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(DatasetError, match="missing.jpg"):
        ImageList(csv_path)


def _write_list(csv_path, rows, encoding="utf-8", newline="\n"):
    with open(csv_path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f, lineterminator=newline)
        w.writerow(["path", "pid", "camid", "split"])
        w.writerows(rows)
    return csv_path


ROWS = [("imgs/a.jpg", 40, 0, "train"), ("imgs/b.jpg", 40, 1, "train"), ("imgs/c.jpg", 11, 0, "train"),
        ("imgs/d.jpg", 5, 0, "query"), ("imgs/e.jpg", 5, 1, "gallery")]


def test_image_list_refuses_repeated_images(tmp_path):
    for path, *_ in ROWS:
        _jpeg(tmp_path / path)
    # line 7 names a.jpg again through another spelling of the same path; line 8 repeats e.jpg in another split
    csv_path = _write_list(tmp_path / "list.csv", ROWS + [("./imgs/../imgs/a.jpg", 40, 0, "train"),
                                                          (str(tmp_path / "imgs" / "e.jpg"), 5, 1, "query")])
    with pytest.raises(DatasetError) as e:
        ImageList(csv_path)
    assert str(e.value) == (f"{csv_path}: images listed more than once, which would count them twice in training and "
                            f"evaluation (2: line 7 repeats line 2 (./imgs/../imgs/a.jpg), "
                            f"line 8 repeats line 6 ({tmp_path / 'imgs' / 'e.jpg'}))")
    with pytest.warns(UserWarning, match="line 7 repeats line 2"):
        ds = ImageList(csv_path, skip_bad=True)  # the first occurrence is kept
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (3, 1, 1)


def test_image_list_written_by_excel(tmp_path):
    for path, *_ in ROWS:
        _jpeg(tmp_path / path)
    csv_path = _write_list(tmp_path / "list.csv", ROWS, encoding="utf-8-sig", newline="\r\n")  # BOM + CRLF
    assert csv_path.read_bytes().startswith(b"\xef\xbb\xbfpath,pid")
    ds = ImageList(csv_path)
    assert [(Path(r.path).name, r.pid) for r in ds.train] == [("a.jpg", 1), ("b.jpg", 1), ("c.jpg", 0)]
    csv_path.write_bytes("path,pid,camid,split\nimgs/caf\xe9.jpg,1,0,train\n".encode("cp1252"))
    with pytest.raises(DatasetError, match=r"list.csv is not UTF-8 text \(line 2\); save it as \"CSV UTF-8\""):
        ImageList(csv_path)


def test_image_list_empty_split_names_the_csv(tmp_path):
    for path, *_ in ROWS:
        _jpeg(tmp_path / path)
    csv_path = _write_list(tmp_path / "list.csv", [r for r in ROWS if r[3] != "query"])
    with pytest.raises(DatasetError, match=rf"^ImageList: the query split of {re.escape(str(csv_path))} is empty$"):
        ImageList(csv_path)


def test_missing_split_folder_is_named(tmp_path):
    root = make_market(tmp_path / "data" / "Market-1501-v15.09.15")
    shutil.rmtree(root / "bounding_box_test")
    with pytest.raises(DatasetError) as e:
        Market1501(tmp_path / "data")
    msg = str(e.value)
    assert msg.startswith(f"Market-1501 at {root} is incomplete: missing {root}/bounding_box_test/. "
                          f"Expected the folder tree\n    {tmp_path / 'data'}/bounding_box_train/")


def test_empty_root_is_refused(tmp_path, monkeypatch):
    make_market(tmp_path / "m")
    monkeypatch.chdir(tmp_path / "m")  # an empty root must not silently read the data set sitting here
    for make in (Market1501, DukeMTMCReID, ImageList, lambda r: CUHK03NP(r)):
        with pytest.raises(DatasetError, match="is empty; give the data set's folder"):
            make("")
