"""Run folders, checkpoints and the CLI under faults: a folder holding a run is never overwritten
without a word, best.pt survives a kill, flipped tensor bytes are caught, a killed writer's temp
file is cleaned up, and the CLI explains what it can in one line.

Training here is tiny (8 + 8 synthetic identities of 4 images, batches of 4 x 4: two steps an
epoch, resnet18 at 96 x 32, one thread); the kill tests SIGKILL a real process at a chosen point.
"""

import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import pytest
import torch

from rrid.__main__ import main
from rrid.callbacks import Callback
from rrid.config import ConfigError, apply_overrides, load_config
from rrid.data import DatasetError
from rrid.checkpoint import load_checkpoint, load_model, save_checkpoint
from rrid.errors import CheckpointError, RunFolderError
from rrid.runs import RUN_FILES
from rrid.train import fit

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quick" / "ours_f.yaml"
pytestmark = pytest.mark.slow


def tiny_sets(data: Path, **extra) -> list[str]:
    sets = {"data.root": str(data), "data.synthetic": "{num_train_ids: 8, num_test_ids: 8, images_per_id: 4}",
            "data.p": 4, "data.k": 4, "train.num_threads": 1, "train.log_every": 1, "train.eval_every": 1,
            "train.epochs": 1, "optim.milestones": "[1]", "train.tensorboard": "false", **extra}
    return [f"{k}={v}" for k, v in sets.items()]


def cli_args(data: Path, *more: str, config: Path = QUICK, **extra) -> list[str]:
    args = ["--config", str(config)]
    for item in tiny_sets(data, **extra):
        args += ["--set", item]
    return args + list(more)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from rrid.data import synthetic
    folder = tmp_path_factory.mktemp("tiny") / "synth"
    synthetic.ensure(folder, num_train_ids=8, num_test_ids=8, images_per_id=4)
    return folder


@pytest.fixture(scope="module")
def cfg(data):
    return load_config(QUICK, tiny_sets(data))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cfg) -> Path:
    """One finished tiny run: config.yaml, metrics.jsonl, last.pt, best.pt (copy it to change it)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    fit(cfg, out_dir=out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)
    return out


def copy_run(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Stop(Exception):
    pass


class StopAtStart(Callback):
    """Ends fit right after it has prepared the folder (fit writes it just before on_fit_start)."""

    def on_fit_start(self, state):
        raise Stop


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


# ----------------------------------------------------------------------------- a folder that holds a run

@pytest.mark.parametrize("present", [RUN_FILES, ("config.yaml",), ("metrics.jsonl",), ("best.pt",)])
def test_a_folder_holding_a_run_is_refused_and_untouched(trained, tmp_path, cfg, present):
    out = copy_run(trained, tmp_path)
    for name in set(RUN_FILES) - set(present):
        (out / name).unlink()
    before = snapshot(out)
    with pytest.raises(RunFolderError) as err:
        fit(cfg, out_dir=out, progress=False)
    msg = str(err.value)
    assert str(out) in msg and "--resume" in msg and "--overwrite" in msg
    assert all(name in msg for name in present)
    assert snapshot(out) == before


def test_resume_with_another_architecture_is_one_line_and_changes_nothing(trained, tmp_path, data, capsys):
    out = copy_run(trained, tmp_path)
    before = snapshot(out)
    code = main(["train", *cli_args(data, "--out", str(out), "--resume", "--no-progress"), "--set", "model.table2_row=8"])
    line = one_line(capsys.readouterr().err)
    assert code == 2
    assert "model.scales: saved [2, 4, 6], now [6]" in line and str(out) in line
    assert snapshot(out) == before                     # config.yaml included: checked before anything is written

    # train.epochs and where/how it runs may change on resume: the run goes on
    code = main(["train", *cli_args(data, "--out", str(out), "--resume", "--no-progress", **{
        "train.epochs": 2, "train.device": "cpu", "train.log_every": 5, "train.eval_every": 3,
        "train.checkpoint_every_steps": 1, "data.test_batch_size": 64})])
    assert code == 0
    assert load_checkpoint(out / "last.pt")["step"] == 2 * load_checkpoint(trained / "last.pt")["step"]
    assert load_config(out / "config.yaml").train.epochs == 2


def test_resume_without_last_pt_but_with_best_pt_is_refused(trained, tmp_path, cfg):
    out = copy_run(trained, tmp_path)
    (out / "last.pt").unlink()
    with pytest.raises(RunFolderError, match="best.pt but no last.pt"):
        fit(cfg, out_dir=out, resume=True, progress=False)
    assert (out / "best.pt").exists()


def test_overwrite_deletes_the_old_run_only_after_every_check(trained, tmp_path, cfg):
    out = copy_run(trained, tmp_path)
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events").write_text("old")
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    # the data set is missing: the error comes before the old run is touched
    broken = apply_overrides(cfg, ["data.dataset=market1501", f"data.root={tmp_path / 'nowhere'}"])
    with pytest.raises(DatasetError):
        fit(broken, out_dir=out, overwrite=True, progress=False)
    with pytest.raises(ConfigError, match="--device"):
        fit(cfg, out_dir=out, overwrite=True, device="gpu", progress=False)
    assert snapshot(out) == before

    with pytest.raises(Stop):
        fit(apply_overrides(cfg, ["train.seed=7"]), out_dir=out, overwrite=True, callbacks=[StopAtStart()],
            progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "notes.txt"]
    assert load_config(out / "config.yaml").train.seed == 7 and (out / "notes.txt").read_text() == "mine"

    with pytest.raises(ValueError, match="choose one"):
        fit(cfg, out_dir=out, resume=True, overwrite=True)
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--config", str(QUICK), "--resume", "--overwrite"])
    assert exit_.value.code == 2


# ----------------------------------------------------------------------------- kills at chosen points

KILLER = textwrap.dedent("""
    import os, signal, sys
    import torch
    import rrid.runs as R
    import rrid.train as T
    from rrid.config import load_config

    where, out, config, *sets = sys.argv[1:]
    if where == "between last.pt and best.pt":
        R.copy_checkpoint = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)
    elif where == "inside torch.save":
        def save(obj, f, *args, **kwargs):
            f.write(b"PK" + bytes(1 << 20))          # a megabyte of the checkpoint reaches the disk
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = save
    T.fit(load_config(config, sets), out_dir=out, progress=False)
""")


def run_and_kill(out: Path, where: str, sets: list[str]) -> None:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, "-c", KILLER, where, str(out), str(QUICK), *sets],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


def test_best_pt_is_restored_after_a_kill_between_last_and_best(tmp_path, data, cfg):
    """The first evaluation improves mAP: last.pt is written with best_step = step, and the
    process is killed before its copy best.pt exists. Resume re-creates best.pt from it."""
    out = tmp_path / "run"
    run_and_kill(out, "between last.pt and best.pt", tiny_sets(data))
    last = load_checkpoint(out / "last.pt")
    assert last["best_step"] == last["step"] > 0 and last["best_map"] >= 0
    assert not (out / "best.pt").exists()

    result = fit(cfg, out_dir=out, resume=True, progress=False)     # nothing left to train: only the repair
    assert result.best_checkpoint == out / "best.pt"
    assert (out / "best.pt").read_bytes() == (out / "last.pt").read_bytes()
    assert load_checkpoint(out / "best.pt")["step"] == last["step"]


def test_a_killed_writers_temp_file_is_removed_on_the_next_start(tmp_path, data, cfg):
    out = tmp_path / "run"
    run_and_kill(out, "inside torch.save", tiny_sets(data, **{"train.checkpoint_every_steps": 1}))
    litter = [p for p in out.iterdir() if p.name.startswith(".last.pt.rrid-")]
    assert len(litter) == 1 and litter[0].stat().st_size >= 1 << 20 and not (out / "last.pt").exists()

    with pytest.raises(Stop):                         # the next start (no checkpoint yet: a new run)
        fit(apply_overrides(cfg, ["train.checkpoint_every_steps=1"]), out_dir=out, resume=True,
            callbacks=[StopAtStart()], progress=False)
    assert not litter[0].exists()
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]


# ----------------------------------------------------------------------------- checksums

def flip_tensor_byte(path: Path) -> None:
    """Flip one byte inside the largest tensor record (``.../data/N``) of a torch zip file and
    fix the zip's CRC-32 fields, so that only rrid's own checksums can notice."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename and not i.filename.endswith(".pkl")),
                   key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + info.file_size // 2] ^= 0x40
    crc = zlib.crc32(raw[start: start + info.file_size])
    struct.pack_into("<I", raw, info.header_offset + 14, crc)                      # local header
    central = raw.find(b"PK\x01\x02" + raw[info.header_offset + 4: info.header_offset + 14])
    while central >= 0:                                                           # central directory entry
        n = struct.unpack("<H", raw[central + 28: central + 30])[0]
        if raw[central + 46: central + 46 + n] == info.filename.encode():
            struct.pack_into("<I", raw, central + 16, crc)
            break
        central = raw.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(raw))


def test_flipped_tensor_bytes_are_caught_and_named(tmp_path):
    path = tmp_path / "last.pt"
    weight = torch.randn(64, 32)
    save_checkpoint({"model": {"conv.weight": weight, "bn.bias": torch.zeros(4)}, "step": 3}, path)
    assert load_checkpoint(path)["step"] == 3
    flip_tensor_byte(path)
    loaded = torch.load(path, weights_only=True)                   # torch reads it without a word
    assert not torch.equal(loaded["model"]["conv.weight"], weight)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "'model/conv.weight'" in str(err.value) and "corrupted" in str(err.value)


def test_a_checkpoint_without_checksums_loads_with_a_warning(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"model": {"w": torch.ones(3)}, "step": 1}, path)           # as rrid wrote them before
    with pytest.warns(UserWarning, match="no tensor checksums"):
        assert load_checkpoint(path)["step"] == 1


def test_a_corrupted_checkpoint_is_refused_by_resume_eval_export_and_load_model(trained, tmp_path, data, cfg, capsys):
    out = copy_run(trained, tmp_path)
    flip_tensor_byte(out / "last.pt")
    flip_tensor_byte(out / "best.pt")
    before = snapshot(out)
    with pytest.raises(CheckpointError, match="corrupted"):
        load_model(out / "best.pt")
    with pytest.raises(CheckpointError, match="corrupted"):
        fit(cfg, out_dir=out, resume=True, progress=False)
    assert snapshot(out) == before
    for command in (["eval", *cli_args(data, "--checkpoint", str(out / "best.pt"))],
                    ["export", "--config", str(QUICK), "--checkpoint", str(out / "best.pt"),
                     "--out", str(tmp_path / "m.onnx")]):
        assert main(command) == 2
        line = one_line(capsys.readouterr().err)
        assert str(out / "best.pt") in line and "corrupted" in line
    assert not (tmp_path / "m.onnx").exists()


# ----------------------------------------------------------------------------- one-line errors

def test_a_full_disk_while_saving_names_the_checkpoint(tmp_path, data, monkeypatch, capsys):
    def full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 part")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    out = tmp_path / "run"
    assert main(["train", *cli_args(data, "--out", str(out), "--no-progress")]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"cannot write checkpoint {out / 'last.pt'}: No space left on device" in line and "--resume" in line
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.jsonl"]     # no temp file left

    # torch's own writer reports a short write as "unexpected pos", without errno or path
    def short(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 2560 vs 2434")

    monkeypatch.setattr(torch, "save", short)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*x.pt: .*No space left on device"):
        save_checkpoint({"model": {}}, tmp_path / "x.pt")
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("cannot pickle 'generator'")))
    with pytest.raises(RuntimeError, match="cannot pickle"):               # a bug is not dressed up as a disk error
        save_checkpoint({"model": {}}, tmp_path / "y.pt")


def test_ctrl_c_while_a_checkpoint_is_written_is_an_interrupt_and_keeps_the_old_file(tmp_path, monkeypatch):
    """torch.save turns a KeyboardInterrupt raised in f.write into a RuntimeError ("unexpected pos");
    save_checkpoint gives the interrupt back, so Ctrl-C is not reported as a full disk."""
    import contextlib

    import rrid.checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.zeros(3)}, "step": 1}, path)
    before = path.read_bytes()
    real = rrid.checkpoint.atomic_write

    class CtrlC:                                     # Ctrl-C arrives during the third write
        def __init__(self, f):
            self.f, self.calls = f, 0

        def write(self, data):
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    @contextlib.contextmanager
    def interrupted(target, mode):
        with real(target, mode) as f:
            yield CtrlC(f)

    monkeypatch.setattr(rrid.checkpoint, "atomic_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {"w": torch.ones(1000, 100)}, "step": 2}, path)
    assert path.read_bytes() == before                          # the old checkpoint, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # and no temp file left


def test_a_bug_still_shows_its_traceback(tmp_path, data, monkeypatch):
    import rrid.train

    def bug(cfg):
        raise KeyError("a genuine bug")

    monkeypatch.setattr(rrid.train, "build_dataset", bug)
    with pytest.raises(KeyError, match="a genuine bug"):
        main(["train", *cli_args(data, "--out", str(tmp_path / "run"), "--no-progress")])


def _pretrained_config(tmp_path: Path, data: Path) -> Path:
    """The tiny run's config with model.pretrained: true (as every paper config has)."""
    sets = dict(item.split("=", 1) for item in tiny_sets(data))
    text = f"_base_: {QUICK}\nmodel: {{pretrained: true}}\ndata: {{root: {sets['data.root']}, " \
           f"synthetic: {sets['data.synthetic']}, p: 4, k: 4}}\n"
    path = tmp_path / "pretrained.yaml"
    path.write_text(text)
    assert load_config(path).model.pretrained is True
    return path


@pytest.fixture
def no_imagenet(tmp_path, monkeypatch):
    """An empty torch hub cache and no network: any ImageNet weights request fails the test."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download ImageNet weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)


def test_export_builds_from_the_checkpoint_alone(trained, tmp_path, data, no_imagenet, capsys, monkeypatch):
    pytest.importorskip("onnx", reason="the 'onnx' extra is not installed")
    config = _pretrained_config(tmp_path, data)
    best = trained / "best.pt"
    out = tmp_path / "m.onnx"
    assert main(["export", "--config", str(config), "--checkpoint", str(best), "--out", str(out), "--no-check"]) == 0
    assert out.stat().st_size > 1_000_000                                   # a resnet18 graph with its weights

    # mismatched, truncated, and without the onnx package: one line each, exit 2
    other = ROOT / "configs" / "quick" / "row01.yaml"
    assert main(["export", "--config", str(other), "--checkpoint", str(best), "--out", str(tmp_path / "x.onnx")]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(best) in line and "does not fit the model of" in line and "Unexpected key(s)" in line
    broken = tmp_path / "broken.pt"
    broken.write_bytes(best.read_bytes()[:5000])
    assert main(["export", "--config", str(config), "--checkpoint", str(broken), "--out", str(tmp_path / "x.onnx")]) == 2
    assert str(broken) in one_line(capsys.readouterr().err)
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", "--config", str(config), "--checkpoint", str(best), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "pip install" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "x.onnx").exists()


def test_eval_builds_from_the_checkpoint_alone_and_explains_a_mismatch(trained, tmp_path, data, no_imagenet, capsys):
    config = _pretrained_config(tmp_path, data)
    best = trained / "best.pt"
    assert main(["eval", "--config", str(config), "--checkpoint", str(best), "--json", str(tmp_path / "m.json")]) == 0
    fit_eval = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()][-1]
    # eval runs with the config's threads as fit did: the same features and ranking; 1e-9 covers the JSON round trip
    assert json.loads((tmp_path / "m.json").read_text())["mAP"] == pytest.approx(fit_eval["mAP"], abs=1e-9)
    capsys.readouterr()

    other = ROOT / "configs" / "quick" / "row01.yaml"
    assert main(["eval", *cli_args(data, "--checkpoint", str(best), config=other)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(best) in line and "does not fit the model of" in line and "()" not in line and "key(s)" in line
