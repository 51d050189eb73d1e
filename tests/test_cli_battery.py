"""Errors a user can cause at the command line are one line `error: ...` and exit status 2, by
design: the checks raise rrid.errors.UserError where input enters and `main` prints exactly those.
A case per class of input: the device, output paths, checkpoints, data that changed, Ctrl-C."""

import pytest
import torch

from rrid.__main__ import main
from rrid.checkpoint import load_checkpoint, save_checkpoint
from rrid.config import load_config
from rrid.train import fit
from tiny import QUICK, tiny_overrides

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained tiny run: its folder and the --set options that describe it."""
    tmp = tmp_path_factory.mktemp("battery")
    sets = tiny_overrides(tmp, **{"train.epochs": 1})
    fit(load_config(QUICK, sets), out_dir=tmp / "run", progress=False)
    return tmp / "run", [arg for s in sets for arg in ("--set", s)]


def one_line_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def evaluate(run, sets, *extra):
    folder, _ = run
    return main(["eval", "--config", str(QUICK), "--checkpoint", str(folder / "last.pt"), *sets, *extra])


def test_a_gpu_that_is_not_there(run, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    one_line_error(capsys, evaluate(run, run[1], "--device", "cuda"), "no CUDA GPU")
    one_line_error(capsys, evaluate(run, run[1] + ["--set", "train.device=cuda"]), "no CUDA GPU")


@pytest.mark.parametrize("where", ["parent is a file", "a folder"])
def test_json_output_that_cannot_be_written_is_refused_before_the_evaluation(run, capsys, tmp_path, monkeypatch,
                                                                               where):
    import rrid.__main__

    monkeypatch.setattr(rrid.__main__, "evaluate", lambda *a, **k: pytest.fail("evaluated before the check"))
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    target = tmp_path / "file" / "m.json" if where == "parent is a file" else tmp_path / "folder"
    one_line_error(capsys, evaluate(run, run[1], "--json", str(target)), str(target))


@pytest.mark.parametrize("field, value, expected", [
    ("num_classes", -3, "num_classes must be an integer"), ("num_classes", "abc", "num_classes must be an integer"),
    ("num_classes", 10**7, "num_classes must be an integer"), ("num_classes", 99, "its classifiers have"),
    ("model", torch.zeros(3), "is not an rrid checkpoint"),
])
def test_crafted_checkpoint_fields_are_refused_before_any_layer_is_built(run, capsys, tmp_path, field, value,
                                                                          expected):
    ckpt = load_checkpoint(run[0] / "last.pt")
    ckpt.pop("checksums")
    save_checkpoint({**ckpt, field: value}, tmp_path / "crafted.pt")
    code = main(["eval", "--config", str(QUICK), "--checkpoint", str(tmp_path / "crafted.pt"), *run[1]])
    one_line_error(capsys, code, str(tmp_path / "crafted.pt"), expected)


def test_resuming_on_data_that_changed_is_one_line(run, capsys, tmp_path):
    folder, sets = run
    copy = tmp_path / "run"
    copy.mkdir()
    for f in folder.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    changed = [s.replace("images_per_id: 6", "images_per_id: 8") for s in sets]    # more images per identity
    changed = [s if "data.root" not in s else f"data.root={tmp_path / 'other'}" for s in changed]
    code = main(["train", "--config", str(QUICK), "--out", str(copy), "--resume", *changed,
                 "--set", "train.epochs=2", "--no-progress"])
    one_line_error(capsys, code, str(copy))


def test_ctrl_c_is_one_line_saying_where_to_resume(run, capsys, tmp_path, monkeypatch):
    import rrid.train

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(rrid.train, "train_one_epoch", interrupt)
    code = main(["train", "--config", str(QUICK), "--out", str(tmp_path / "run"), *run[1], "--no-progress"])
    err = capsys.readouterr().err
    assert code == 130 and err.count("\n") == 1 and err.startswith("interrupted; "), err
    assert str(tmp_path / "run") in err
