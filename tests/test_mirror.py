"""rrid.runs.Mirror: a second copy of a run (Google Drive on Colab) that a fresh machine resumes from,
written in place so that a mounted Drive keeps one file per name."""

import os

import pytest

from rrid.callbacks import Callback
from rrid.checkpoint import load_checkpoint, load_model
from rrid.config import apply_overrides, load_config
from rrid.errors import RunFolderError
from rrid.train import fit
from tiny import QUICK, assert_same_weights, tiny_overrides

pytestmark = pytest.mark.slow
MIRRORED = {"config.yaml", "metrics.jsonl", "last.pt", "best.pt", "mirror.json"}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return load_config(QUICK, tiny_overrides(tmp_path_factory.mktemp("tiny"), **{"train.eval_every": 1}))


class Inodes(Callback):
    """The identity (inode) of each mirrored file when an epoch starts to end."""

    def __init__(self, folder):
        self.folder, self.seen = folder, []

    def on_epoch(self, state, logs):
        self.seen.append({p.name: p.stat().st_ino for p in self.folder.glob("*")})


def test_the_mirror_is_rewritten_in_place_and_keeps_best_as_weights_only(tmp_path, cfg):
    mirror = tmp_path / "drive" / "run"
    run_cfg = apply_overrides(cfg, [f"train.mirror={mirror}", "train.mirror_every=1", "train.epochs=3"])
    inodes = Inodes(mirror)
    result = fit(run_cfg, out_dir=tmp_path / "local", callbacks=[inodes], progress=False)
    now = {p.name: p.stat().st_ino for p in mirror.glob("*")}
    assert set(now) == MIRRORED, "no temp files or extra copies in the mirror"
    assert inodes.seen[0] == {} and inodes.seen[1] == inodes.seen[2] == now, \
        "every push rewrote the same files: nothing replaced, nothing sent to a Drive's trash"
    last = load_checkpoint(mirror / "last.pt")
    assert last["step"] == load_checkpoint(result.last_checkpoint)["step"]
    best = load_checkpoint(mirror / "best.pt")
    assert "optimizer" not in best and best["step"] == load_checkpoint(result.best_checkpoint)["step"]
    assert_same_weights(load_model(mirror / "best.pt").state_dict(), load_model(result.best_checkpoint).state_dict())
    assert (mirror / "best.pt").stat().st_size < 0.75 * (mirror / "last.pt").stat().st_size


def test_a_fresh_machine_resumes_from_the_mirror_bitwise(tmp_path, cfg):
    mirror = tmp_path / "drive" / "run"
    sets = [f"train.mirror={mirror}", "train.mirror_every=1"]
    fit(apply_overrides(cfg, sets + ["train.epochs=1"]), out_dir=tmp_path / "vm1", progress=False)
    resumed = fit(apply_overrides(cfg, sets), out_dir=tmp_path / "vm2", resume=True, progress=False)  # empty folder
    straight = fit(cfg, out_dir=tmp_path / "straight", progress=False)
    assert_same_weights(load_checkpoint(resumed.last_checkpoint)["model"],
                        load_checkpoint(straight.last_checkpoint)["model"])
    assert load_checkpoint(mirror / "last.pt")["step"] == load_checkpoint(straight.last_checkpoint)["step"]


def test_a_mirror_holding_a_run_is_never_overwritten_silently_nor_read_when_torn(tmp_path, cfg):
    mirror = tmp_path / "drive" / "run"
    sets = [f"train.mirror={mirror}", "train.epochs=1"]
    fit(apply_overrides(cfg, sets), out_dir=tmp_path / "vm1", progress=False)
    with pytest.raises(RunFolderError, match="already holds a run"):
        fit(apply_overrides(cfg, sets), out_dir=tmp_path / "vm2", progress=False)
    size = (mirror / "last.pt").stat().st_size
    with open(mirror / "last.pt", "r+b") as f:           # a copy cut short by a disconnect
        f.truncate(size // 2)
    with pytest.raises(RunFolderError, match="last.pt is not the copy"):
        fit(apply_overrides(cfg, sets + ["train.epochs=2"]), out_dir=tmp_path / "vm3", resume=True, progress=False)
    assert not (tmp_path / "vm3").exists(), "nothing is copied from a mirror that fails its check"
    assert os.path.getsize(mirror / "last.pt") == size // 2, "the mirror is left as it was"
