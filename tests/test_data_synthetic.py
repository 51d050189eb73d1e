"""The synthetic set: deterministic, Market-1501 layout, identities only as combinations."""

import hashlib
import json
import os
import shutil
import signal
import stat
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from _faults import killed
from conftest import SYNTHETIC_SMALL
from rrid.__main__ import main
from rrid.data import DatasetError, Market1501, synthetic


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_counts_junk_and_distractors(synthetic_small):
    files = {d: sorted(p.name for p in (synthetic_small / d).iterdir())
             for d in ("bounding_box_train", "query", "bounding_box_test")}
    assert len(files["bounding_box_train"]) == 12 * 6
    assert len(files["query"]) == 12 * 2 and len(files["bounding_box_test"]) == 12 * 4 + 3 + 4
    assert sum(f.startswith("-1_") for f in files["bounding_box_test"]) == 3
    assert sum(f.startswith("0000_") for f in files["bounding_box_test"]) == 4
    ds = Market1501(synthetic_small)
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (72, 24, 48 + 4)  # junk dropped
    assert ds.num_train_ids == 12 and sorted({r.pid for r in ds.train}) == list(range(12))
    assert sorted({r.pid for r in ds.query}) == list(range(13, 25))  # test ids keep their values
    assert ds.num_cameras <= 6 and all(0 <= r.camid < 6 for r in ds.gallery)
    assert json.loads((synthetic_small / synthetic.PARAMS_FILE).read_text())["seed"] == 0


def test_same_seed_same_bytes(synthetic_small, tmp_path):
    again = synthetic.generate(tmp_path / "again", **SYNTHETIC_SMALL)
    assert tree_hash(again) == tree_hash(synthetic_small)
    other = synthetic.generate(tmp_path / "other", **{**SYNTHETIC_SMALL, "seed": 1})
    assert tree_hash(other) != tree_hash(synthetic_small)
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind


def test_ensure_regenerates_only_on_change(tmp_path):
    kw = dict(num_train_ids=4, num_test_ids=4, images_per_id=4, num_junk=1, num_distractors=1)
    path = synthetic.ensure(tmp_path / "s", seed=3, **kw)
    marker = path / "bounding_box_train" / "marker.txt"
    marker.write_text("kept")
    synthetic.ensure(tmp_path / "s", seed=3, **kw)
    assert marker.exists()  # same parameters: left alone
    synthetic.ensure(tmp_path / "s", seed=4, **kw)
    assert not marker.exists()  # other parameters: regenerated


def test_every_attribute_value_is_shared():
    table = synthetic.identity_attributes(seed=0, num_train_ids=150, num_test_ids=150)
    assert len(table) == 300
    for split in (table[:150], table[150:]):
        for name, values in synthetic.ATTRIBUTES.items():
            counts = Counter(person[name] for person in split)
            assert set(counts) == {v for v, _ in values}  # every value used in each split
            assert min(counts.values()) >= 150 // len(values) >= 18  # and worn by many identities
    combos = [tuple(p.values()) for p in table]
    assert len(set(combos)) == 300  # only the combination identifies a person
    diffs = min(sum(a != b for a, b in zip(x, y)) for i, x in enumerate(combos) for y in combos[i + 1:])
    assert diffs >= 2
    assert synthetic.identity_attributes(seed=0) == table


def test_render_uses_camera_effects():
    import numpy as np

    person = synthetic.identity_attributes(0, 2, 2)[0]
    clean = np.asarray(synthetic.render(person, None, np.random.default_rng(0)), dtype=float)
    cams = synthetic.cameras(0, 6)
    assert len({c.brightness for c in cams}) == 6 and max(c.blur for c in cams) > 0.5
    seen = np.asarray(synthetic.render(person, cams[0], np.random.default_rng(0)), dtype=float)
    assert clean.shape == seen.shape == (128, 64, 3)
    assert np.abs(clean - seen).mean() > 5


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", str(out), "--seed", "2", "--train-ids", "3", "--test-ids", "3", "--images-per-id", "4"]) == 0
    assert "train" in capsys.readouterr().out
    assert len(Market1501(out).train) == 12


def test_bad_parameters():
    with pytest.raises(ValueError, match="images_per_id"):
        synthetic.plan(images_per_id=3)


# ---- replacing a set safely, and never accepting a partial one ---------------------------

TINY = dict(num_train_ids=4, num_test_ids=4, images_per_id=4, num_junk=1, num_distractors=1)


def _state(path):
    """``"old"`` / ``"new"`` (complete, seed 0 / seed 1), ``"absent"``, or ``"partial"``."""
    if not path.exists():
        return "absent"
    found = synthetic.read_manifest(path)
    return {None: "partial", 0: "old", 1: "new"}[found and found["seed"]]


# Each point is (module, function, n): the n-th call is where the kill lands. Replacing seed 0
# with seed 1 calls, in order: _jpeg per image, Path.write_text (the manifest, last), os.rename
# (old set aside), os.rename (new set into place), shutil.rmtree (the old set; os.unlink per file).
KILL_POINTS = {
    "while rendering": (synthetic, "_jpeg", 5, "old"),
    "before the manifest": (synthetic.Path, "write_text", 1, "old"),
    "before the old set is moved aside": (os, "rename", 1, "old"),
    "between the two renames": (os, "rename", 2, "absent"),
    "before the old set is deleted": (shutil, "rmtree", 1, "new"),
    "halfway through deleting the old set": (os, "unlink", 7, "new"),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_at_each_point_of_a_replacement(tmp_path, point):
    module, name, n, expected = KILL_POINTS[point]
    out = tmp_path / "s"
    synthetic.generate(out, seed=0, **TINY)
    assert killed(lambda: synthetic.generate(out, seed=1, **TINY), (module, name, n)) == signal.SIGKILL
    assert _state(out) == expected  # complete (old or new) or absent: never a partial set
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".s.")]  # the dead writer's leftovers
    synthetic.ensure(out, seed=1, **TINY)  # the next run cleans them up and ends with the complete new set
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    assert tree_hash(out) == tree_hash(synthetic.generate(tmp_path / "reference", seed=1, **TINY))


def test_a_partial_or_altered_set_is_regenerated(tmp_path):
    out = synthetic.generate(tmp_path / "s", seed=0, **TINY)
    reference = tree_hash(out)
    victim = sorted((out / "bounding_box_test").iterdir())[3]
    for damage in ("delete", "truncate", "extra image", "old manifest"):
        if damage == "delete":
            victim.unlink()
        elif damage == "truncate":
            victim.write_bytes(victim.read_bytes()[:100])
        elif damage == "extra image":
            (out / "query" / "0001_c1s1_000001_01.jpg").write_bytes(victim.read_bytes())
        else:  # written before the manifest recorded the files: cannot prove it is complete
            manifest = json.loads((out / synthetic.PARAMS_FILE).read_text())
            (out / synthetic.PARAMS_FILE).write_text(json.dumps({k: v for k, v in manifest.items()
                                                                 if k not in ("files", "listing_sha256")}))
        assert synthetic.read_manifest(out) is None, damage
        synthetic.ensure(out, seed=0, **TINY)
        assert tree_hash(out) == reference, damage
    (out / "bounding_box_train" / "Thumbs.db").write_bytes(b"not an image")  # ignored, as the reader ignores it
    assert synthetic.read_manifest(out)["seed"] == 0


def test_only_a_synthetic_set_is_replaced(tmp_path, capsys):
    mine = tmp_path / "my-data"
    (mine / "query").mkdir(parents=True)
    (mine / "query" / "precious.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match=r"my-data exists and does not hold a synthetic data set \(no synthetic.json\); refusing"):
        synthetic.ensure(mine, seed=0, **TINY)
    assert (mine / "query" / "precious.jpg").read_bytes() == b"x"
    assert main(["synth", str(mine), "--train-ids", "4", "--test-ids", "4", "--images-per-id", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(mine) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-data"]


def test_generated_folder_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        out = synthetic.generate(tmp_path / "s", seed=0, **TINY)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o750  # 0o777 & ~0o027, not mkdtemp's 0o700


def test_a_symlinked_folder_is_replaced_where_it_points(tmp_path):
    real = tmp_path / "disk" / "synthetic"
    synthetic.generate(real, seed=0, **TINY)
    link = tmp_path / "data"
    link.symlink_to(real, target_is_directory=True)
    synthetic.ensure(link, seed=1, **TINY)  # other parameters: regenerated, through the link
    assert link.is_symlink() and synthetic.read_manifest(real)["seed"] == 1
    assert sorted(p.name for p in real.parent.iterdir()) == ["synthetic"]


def test_shared_attributes_value_counts_and_lookalikes():
    import numpy as np

    table = synthetic.identity_attributes(seed=0, num_train_ids=150, num_test_ids=150)
    test = table[150:]
    a, b = test[0], test[1]
    shared = synthetic.shared_attributes(a, b)
    assert shared == {k: a[k] for k in synthetic.ATTRIBUTES if a[k] == b[k]}
    assert len(shared) <= len(synthetic.ATTRIBUTES) - 2          # at least two attributes differ
    counts = synthetic.value_counts(test)
    for name, values in synthetic.ATTRIBUTES.items():
        assert list(counts[name]) == [v for v, _ in values]        # every palette value, in order
        assert sum(counts[name].values()) == 150
        assert counts[name] == dict(Counter(p[name] for p in test)) | {v: 0 for v, _ in values if v not in counts[name]}
    # one attribute alone: each identity has about 150 / palette size - 1 lookalikes
    upper = synthetic.lookalikes(test, ["upper_colour"])
    expected = np.array([counts["upper_colour"][p["upper_colour"]] - 1 for p in test])
    assert (upper == expected).all() and upper.min() >= 150 // 8 - 1
    assert (synthetic.lookalikes(test, list(synthetic.ATTRIBUTES)) == 0).all()   # the combination is unique


def test_attribute_rows_are_where_the_body_parts_are():
    rows = synthetic.attribute_rows(size=(128, 64), samples=3)
    assert set(rows) == set(synthetic.ATTRIBUTES)
    centre = {k: float(np.average(np.arange(128), weights=v)) for k, v in rows.items() if v.sum()}
    # hair above the upper garment above the lower garment above the shoes (image rows, 0 = top)
    assert centre["hair_colour"] < centre["upper_colour"] < centre["lower_colour"] < centre["shoes"]
    assert rows["shoes"][:64].max() == 0 and rows["hair_colour"][64:].max() == 0


def test_camera_table():
    table = synthetic.camera_table(seed=0, num_cameras=6)
    cams = synthetic.cameras(0, 6)
    assert [t["camera"] for t in table] == [1, 2, 3, 4, 5, 6]
    assert [t["blur"] for t in table] == [c.blur for c in cams]
    assert set(table[0]) == {"camera", "cast", "brightness", "blur", "background", "clutter", "occlusion", "misalign"}
