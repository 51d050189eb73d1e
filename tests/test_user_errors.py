"""Values that used to fail late (in numpy, in the sampler, in the renderer) are refused where
they are given, in one line that names the setting and the range it must lie in."""

from pathlib import Path

import pytest

from rrid.__main__ import main
from rrid.config import ConfigError, apply_overrides, load_config
from rrid.data import synthetic
from rrid.errors import DatasetError, UserError, listing, one_line, short_repr

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quick" / "ours_f.yaml"


@pytest.fixture(scope="module")
def quick():
    return load_config(QUICK)


def refused(cfg, *overrides) -> str:
    with pytest.raises(ConfigError) as err:
        apply_overrides(cfg, list(overrides))
    message = str(err.value)
    assert "\n" not in message and len(message) < 400, message
    return message


# ----------------------------------------------------------------------------- config values

@pytest.mark.parametrize("override, expected", [
    ("train.seed=-1", "train.seed must be in 0..4294967295 (numpy's seeds), got -1"),
    ("train.seed=4294967296", "train.seed must be in 0..4294967295 (numpy's seeds), got 4294967296"),
    ("data.workers=-1", "data.workers must be >= 0, got -1"),
    ("data.test_batch_size=0", "data.test_batch_size must be >= 1, got 0"),
    ("train.epochs=0", "train.epochs must be >= 1, got 0"),
    ("train.log_every=0", "train.log_every must be >= 1, got 0"),
    ("train.eval_every=0", "train.eval_every must be >= 1, got 0"),
    ("train.checkpoint_every_steps=-1", "train.checkpoint_every_steps must be >= 0, got -1"),
    ("train.num_threads=-2", "train.num_threads must be >= 0, got -2"),
    ("optim.head_lr=.inf", "optim.head_lr must be finite, got inf"),
    ("loss.ce_weight=.nan", "loss.ce_weight must be >= 0, got nan"),
    ("optim.gamma=.inf", "optim.gamma must be > 0 (the paper: 0.1), got inf"),
    ("data.height=100000", "data.height must be at most 4096 pixels, got 100000"),
    ("data.width=0", "data.width must be >= 1, got 0"),
    ("data.p=1", "data.p must be >= 2"),
    ("data.k=1", "data.k must be >= 2"),
    ("data.p=200", "data.p=200 identities per batch, but the synthetic set trains on 150 (data.synthetic.num_train_ids "
                   "minus data.val_ids); expected data.p <= 150"),
    ("train.out_dir=''", "train.out_dir must be a path (not empty, no NUL character), got ''"),
    ("data.root=a\x00b", "data.root must be a path (not empty, no NUL character), got 'a\\x00b'"),
])
def test_values_that_failed_late_are_refused_by_the_config(quick, override, expected):
    assert expected in refused(quick, override)
    assert override.split("=")[0] in refused(quick, override)


@pytest.mark.parametrize("value, expected", [
    ("{num_train_ids: -5}", "data.synthetic.num_train_ids must be an integer in 2..2000, got -5"),
    ("{num_test_ids: 1500, num_train_ids: 1000}", "data.synthetic.num_train_ids + data.synthetic.num_test_ids "
                                                  "must be at most 2000 (every pair of identities is compared), "
                                                  "got 1000 + 1500"),
    ("{images_per_id: 3}", "data.synthetic.images_per_id must be an integer in 4..1000 (two cameras, two images each)"),
    ("{num_cameras: 8}", "data.synthetic.num_cameras must be an integer in 2..6 (the Market-1501 reader takes cameras"),
    ("{size: [0, 64]}", "data.synthetic.size (height) must be an integer in 16..512 pixels, got 0"),
    ("{size: 64}", "data.synthetic.size must be [height, width] in pixels, got 64"),
    ("{seed: -1}", "data.synthetic.seed must be an integer in 0..4294967295 (numpy's seeds), got -1"),
    ("{quality: 0}", "data.synthetic.quality must be an integer in 1..100 (JPEG quality), got 0"),
    ("{num_junk: 2.5}", "data.synthetic.num_junk must be an integer in 0..10000 (or null), got 2.5"),
    ("{progress: 1}", "data.synthetic.progress must be true or false, got 1"),
    ("{num_ids: 5}", "data.synthetic.num_ids is not a parameter of the synthetic set; expected one of seed, "),
    ("{num_train_ids: 4, num_test_ids: 4}", "data.p=8 identities per batch, but the synthetic set trains on 4"),
    ("[1, 2]", "data.synthetic: expected dict, got [1, 2]"),
])
def test_synthetic_parameters_are_checked_by_the_config(quick, value, expected):
    assert expected in refused(quick, f"data.synthetic={value}")


def test_synthetic_parameters_are_checked_whatever_the_data_set(quick):
    """A typo under data.synthetic shows at once, even while another data set is used."""
    message = refused(quick, "data.dataset=market1501", "data.synthetic={num_train_ids: -5}")
    assert "data.synthetic.num_train_ids must be an integer in 2..2000, got -5" in message
    assert apply_overrides(quick, ["data.dataset=market1501", "data.p=200"]).data.p == 200   # ids unknown there


@pytest.mark.parametrize("override, expected", [
    ("name.x=1", "override 'name.x=1': 'name' is a setting, so it has no 'x'; sections: model, data, optim"),
    ("seed.x=1", "override 'seed.x=1': 'seed' is not a section, so it has no 'x'"),
    ("train..epochs=3", "override 'train..epochs=3': expected key=value with a key like train.epochs"),
    ("name=[1, 2]", "name must be one line of text (at most 200 characters), got [1, 2]"),
    ("name=\"a\\nb\"", "name must be one line of text (at most 200 characters), got 'a\\nb'"),
])
def test_overrides_that_do_not_name_a_setting(quick, override, expected):
    assert expected in refused(quick, override)


def test_a_name_override_of_a_config_without_name_is_refused(tmp_path):
    """load_config names the run after the file only after the overrides: name.x=1 used to win."""
    path = tmp_path / "c.yaml"
    path.write_text(f"_base_: {QUICK}\n")
    assert load_config(path).name == "c"
    with pytest.raises(ConfigError, match=r"'name' is a setting, so it has no 'x'"):
        load_config(path, ["name.x=1"])


def test_values_are_shortened_in_messages(quick):
    message = refused(quick, "train.amp=" + "x" * 100_000)
    assert "train.amp: expected 'auto' | 'bf16' | 'fp16' | 'off', got 'xxxx" in message and message.endswith("x...")
    message = refused(quick, "train.epochs=[" + ", ".join(["[1, 2, 3, 4, 5]"] * 1000) + "]")
    assert "train.epochs: expected int, got [[1, 2, 3, 4, ...], [1, 2, 3, 4, ...]" in message


def test_message_helpers():
    assert short_repr(10**5000) == "<an integer of 16610 bits>"
    assert short_repr("a\nb") == "'a\\nb'" and len(short_repr("x" * 10**6)) <= 80
    assert one_line("two\nlines") == "two\\nlines" and one_line("plain name.jpg") == "plain name.jpg"
    assert listing(["b", "a\nc", "d"], limit=2) == "3: b, a\\nc and 1 more"
    assert listing(["b", "a", "c"], sort=True) == "3: a, b, c"
    assert listing(["x" * 500], width=10) == "1: xxxxxxx..."


# ----------------------------------------------------------------------------- synthetic parameters

@pytest.mark.parametrize("argv, expected", [
    (["--train-ids", "-5"], "error: --train-ids must be an integer in 2..2000, got -5\n"),
    (["--height", "0"], "error: --height must be an integer in 16..512 pixels, got 0\n"),
    (["--width", "8"], "error: --width must be an integer in 16..512 pixels, got 8\n"),
    (["--cameras", "9"], "error: --cameras must be an integer in 2..6 (the Market-1501 reader takes cameras c1..c6), "
                         "got 9\n"),
    (["--images-per-id", "2"], "error: --images-per-id must be an integer in 4..1000 (two cameras, two images "
                               "each), got 2\n"),
    (["--seed", "-3"], "error: --seed must be an integer in 0..4294967295 (numpy's seeds), got -3\n"),
    (["--test-ids", "1999"], "error: --train-ids + --test-ids must be at most 2000 (every pair of identities is "
                             "compared), got 150 + 1999\n"),
])
def test_synth_command_line_names_the_option(tmp_path, capsys, argv, expected):
    assert main(["synth", str(tmp_path / "s"), *argv]) == 2
    assert capsys.readouterr().err == expected
    assert not (tmp_path / "s").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kw, expected", [
    (dict(num_train_ids=-5), "num_train_ids must be an integer in 2..2000, got -5"),
    (dict(size=(0, 64)), "size (height) must be an integer in 16..512 pixels, got 0"),
    (dict(num_train_ids=100_000), "num_train_ids must be an integer in 2..2000, got 100000"),
    (dict(num_distractors=-1), "num_distractors must be an integer in 0..10000 (or null), got -1"),
])
@pytest.mark.parametrize("make", [synthetic.generate, synthetic.ensure])
def test_generate_and_ensure_check_their_parameters(tmp_path, make, kw, expected):
    with pytest.raises(DatasetError) as err:
        make(tmp_path / "s", **kw)
    assert str(err.value) == expected
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DatasetError, match=r"^colour is not a parameter of the synthetic set; expected one of seed, "):
        synthetic.ensure(tmp_path / "s", colour=True)      # ensure takes **kw: not a TypeError


def test_the_bounds_are_the_generators_own():
    """The extremes that check_parameters accepts do render: the bounds are not arbitrary."""
    import numpy as np

    low, _ = synthetic.SIZE_RANGE
    attrs = synthetic.identity_attributes(0, 2, 2)[0]
    for cam in synthetic.cameras(0, 2):
        for part in ("full", "top", "bottom"):
            assert synthetic.render(attrs, cam, np.random.default_rng(0), (low, low), part).size == (low, low)
    smallest = dict(num_train_ids=2, num_test_ids=2, images_per_id=4, num_cameras=2)
    synthetic.check_parameters({**smallest, "size": [low, low]})
    for seed in range(20):
        assert len(synthetic.plan(seed, **smallest, num_junk=0, num_distractors=0)) == 16


def test_errors_are_user_errors():
    from rrid.errors import FolderInUseError, OutputPathError

    assert issubclass(OutputPathError, UserError) and issubclass(OutputPathError, OSError)
    assert issubclass(FolderInUseError, UserError)
    err = OutputPathError("No space left on device: /x", 28, "No space left on device", "/x")
    assert str(err) == "No space left on device: /x" and err.errno == 28 and err.filename == "/x"
