"""The synthetic set: deterministic, Market-1501 layout, identities only as combinations."""

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rrid.data import Market1501, synthetic
from conftest import SYNTHETIC_SMALL


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
    assert synthetic.cli([str(out), "--seed", "2", "--train-ids", "3", "--test-ids", "3", "--images-per-id", "4"]) == 0
    assert "train" in capsys.readouterr().out
    assert len(Market1501(out).train) == 12


def test_bad_parameters():
    with pytest.raises(ValueError, match="images_per_id"):
        synthetic.plan(images_per_id=3)


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
