"""rrid.data.OpenReID: the authors' Market-1501 download (open-reid layout) reads as Market1501 does."""

import hashlib
import json
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from rrid.__main__ import main
from rrid.data import DatasetError, Market1501, OpenReID
from rrid.data.datasets import SPLIT_FOLDERS, parse_name
from rrid.train import hold_out_ids


def market_to_openreid(market_root: Path, out: Path) -> Path:
    """Convert a Market-style tree into open-reid's layout, as that project's conversion does:
    images renamed {pid:08d}_{cam:02d}_{index:04d}.jpg (camera 0-based) in the order train,
    gallery, query; junk (pid -1) left out; meta.json, splits.json, test.json."""
    (out / "images").mkdir(parents=True)
    (out / "poses").mkdir()
    identities: dict[int, list[list[str]]] = {}
    lists: dict[str, list] = {}
    for split in ("train", "gallery", "query"):
        lists[split] = []
        for f in sorted((market_root / SPLIT_FOLDERS[split]).glob("*.jpg")):
            pid, cam = parse_name(f.name)
            if pid == -1:
                continue
            cams = identities.setdefault(pid, [[] for _ in range(6)])
            name = f"{pid:08d}_{cam:02d}_{len(cams[cam]):04d}.jpg"
            cams[cam].append(name)
            shutil.copy(f, out / "images" / name)
            lists[split].append([name, pid, cam])
    meta = {"name": "Market1501", "shot": "multiple", "num_cameras": 6,
            "identities": [identities.get(pid, [[] for _ in range(6)]) for pid in range(max(identities) + 1)]}
    splits = [{s: sorted({e[1] for e in lists[k]}) for s, k in (("trainval", "train"), ("query", "query"),
                                                                 ("gallery", "gallery"))}]
    (out / "meta.json").write_text(json.dumps(meta))
    (out / "splits.json").write_text(json.dumps(splits))
    (out / "test.json").write_text(json.dumps([{"query": lists["query"], "gallery": lists["gallery"]}]))
    return out


def pid_cams(records):
    return Counter((r.pid, r.camid) for r in records)


@pytest.fixture(scope="module")
def openreid_small(synthetic_small, tmp_path_factory):
    return market_to_openreid(Path(synthetic_small), tmp_path_factory.mktemp("openreid") / "market1501")


def assert_same_as_market(openreid: OpenReID, market: Market1501):
    assert openreid.num_train_ids == market.num_train_ids
    assert pid_cams(openreid.train) == pid_cams(market.train)          # relabelled in sorted pid order in both
    assert pid_cams(openreid.query) == pid_cams(market.query)
    assert pid_cams(openreid.gallery) == pid_cams(market.gallery)      # distractors (pid 0) included, junk not
    assert all(Path(r.path).parent.name == "images" for r in openreid.train + openreid.query + openreid.gallery)


def test_openreid_reads_what_market1501_reads(openreid_small, synthetic_small):
    market = Market1501(synthetic_small)
    data = OpenReID(openreid_small)
    assert_same_as_market(data, market)
    assert any(r.pid == 0 for r in data.gallery) and not any(r.pid <= 0 for r in data.query)
    # the same pixels behind each record: the n-th image of (pid, camera) in both
    first = sorted(data.query, key=lambda r: Path(r.path).name)[0]
    name = Path(first.path).name
    pid, cam, index = (int(x) for x in name[:-4].split("_"))
    market_files = sorted(f for f in (Path(synthetic_small) / "bounding_box_test").glob(f"{pid:04d}_c{cam + 1}*.jpg"))
    market_files += sorted(f for f in (Path(synthetic_small) / "query").glob(f"{pid:04d}_c{cam + 1}*.jpg"))
    assert Path(first.path).read_bytes() == market_files[index].read_bytes()


@pytest.mark.market_mini
def test_openreid_of_market_mini(market_mini, tmp_path):
    data = OpenReID(market_to_openreid(market_mini, tmp_path / "mini"))
    assert_same_as_market(data, Market1501(market_mini))
    assert (len(data.train), len(data.query), len(data.gallery)) == (405, 146, 303)


def test_holding_out_the_last_ids_as_the_authors_do(openreid_small):
    """Their training split drops the last n trainval identities (sorted): data.val_ids."""
    data = OpenReID(openreid_small)
    split = hold_out_ids(data, 3)
    trainval = json.loads((openreid_small / "splits.json").read_text())[0]["trainval"]
    kept = {int(Path(r.path).name[:8]) for r in split.train}
    held = {int(Path(r.path).name[:8]) for r in split.val}
    assert kept == set(sorted(trainval)[:-3]) and held == set(sorted(trainval)[-3:])
    assert split.num_train_ids == len(trainval) - 3


def test_wrapping_folder_and_missing_root(openreid_small, tmp_path):
    wrapped = tmp_path / "download"
    shutil.copytree(openreid_small, wrapped / "market1501")
    assert OpenReID(wrapped).root == wrapped / "market1501"
    (wrapped / "market1501" / "test.json").unlink()
    with pytest.raises(DatasetError) as err:
        OpenReID(wrapped)
    msg = str(err.value)
    assert str(wrapped) in msg and "images/" in msg and "test.json" in msg and "prepare openreid" in msg


def _copy(openreid_small, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(openreid_small, root)
    return root


def test_missing_images_and_bad_entries_are_named(openreid_small, tmp_path):
    root = _copy(openreid_small, tmp_path)
    test = json.loads((root / "test.json").read_text())
    gone = test[0]["gallery"][0][0]
    (root / "images" / gone).unlink()
    with pytest.raises(DatasetError, match=f"image files not found in {root / 'images'} \\(1: {gone}\\)"):
        OpenReID(root)
    test[0]["gallery"][0] = ["person_1.jpg", 1, 0]
    test[0]["query"][0] = ["00000001_00_0000.jpg", "1"]
    (root / "test.json").write_text(json.dumps(test))
    with pytest.raises(DatasetError, match=r"not \[\{pid:08d\}_.*\(2: .*person_1\.jpg"):
        OpenReID(root)
    with pytest.warns(UserWarning, match="skip_bad"):
        data = OpenReID(root, skip_bad=True)
    assert len(data.gallery) == len(OpenReID(openreid_small).gallery) - 1


@pytest.mark.parametrize("file, content, message", [
    ("meta.json", "{", "cannot read"),
    ("meta.json", "[]", "expected an object with 'identities'"),
    ("splits.json", "[]", "split_id=0"),
    ("splits.json", '[{"trainval": [100000]}]', "needs 'trainval'"),
    ("test.json", "{}", "expected \\[\\{'query'"),
])
def test_malformed_json_is_named(openreid_small, tmp_path, file, content, message):
    root = _copy(openreid_small, tmp_path)
    (root / file).write_text(content)
    with pytest.raises(DatasetError, match=message) as err:
        OpenReID(root)
    assert str(root) in str(err.value)


def test_train_and_test_identities_must_be_disjoint(openreid_small, tmp_path):
    root = _copy(openreid_small, tmp_path)
    splits = json.loads((root / "splits.json").read_text())
    test_pid = json.loads((root / "test.json").read_text())[0]["query"][0][1]
    splits[0]["trainval"].append(test_pid)
    (root / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(DatasetError, match=f"identities in both trainval and test.json \\(1: {test_pid}\\)"):
        OpenReID(root)


def test_prepare_openreid_unpacks_their_zip(openreid_small, tmp_path, capsys):
    archive = tmp_path / "market1501.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(openreid_small.rglob("*")):
            zf.write(f, Path("market1501") / f.relative_to(openreid_small))
    root = tmp_path / "data" / "market1501-openreid"
    assert main(["prepare", "openreid", "--source", str(archive), "--root", str(root), "--md5", "0" * 32]) == 2
    assert "md5" in capsys.readouterr().err and not root.exists()
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    assert main(["prepare", "openreid", "--source", str(archive), "--root", str(root), "--md5", md5]) == 0
    assert "data.dataset=openreid" in capsys.readouterr().out
    assert_same_as_market(OpenReID(root), OpenReID(openreid_small))


@pytest.mark.slow
def test_import_authors_then_eval_on_openreid(tmp_path, capsys):
    """End to end: the authors' (stand-in) file -> import-authors -> `rrid eval` on their layout
    gives the metrics of the imported model through the API. (That the imported model computes
    the stand-in's embeddings is tests/test_authors.py's job.)"""
    from rrid import authors
    from rrid.data import synthetic
    from rrid.evaluation import evaluate

    tiny = synthetic.generate(tmp_path / "tiny", num_train_ids=3, num_test_ids=3, images_per_id=4, num_junk=1,
                              num_distractors=1)
    root = market_to_openreid(Path(tiny), tmp_path / "market1501")
    standin = authors.make_standin(num_classes=10, reduced_dim=16, seed=2)
    weights = authors.save_standin(standin, tmp_path / "pretrained_weights.pth", legacy=True)
    ckpt = tmp_path / "authors.pt"
    assert main(["import-authors", str(weights), "--out", str(ckpt)]) == 0
    config = tmp_path / "eval.yaml"
    config.write_text(f"model: {{preset: ours-f, reduced_dim: 16}}\n"
                      f"data: {{dataset: openreid, root: {root}, height: 192, width: 32, p: 2, k: 2, "
                      f"workers: 0, test_batch_size: 16}}\ntrain: {{device: cpu}}\n")
    capsys.readouterr()
    assert main(["eval", "--config", str(config), "--checkpoint", str(ckpt), "--json", str(tmp_path / "m.json")]) == 0
    got = json.loads((tmp_path / "m.json").read_text())
    data = OpenReID(root)
    assert got["num_valid_queries"] == len(data.query) > 0
    expected, _ = evaluate(authors.load_checkpoint(weights), data, height=192, width=32, flip=True, progress=False)
    assert got["mAP"] == expected["mAP"] and got["rank1"] == expected["cmc"][0]      # the same computation
    assert f"mAP={100 * got['mAP']:.1f}" in capsys.readouterr().out
