"""A run folder is locked while a run uses it: two `train` runs into one folder never mix, and the
lock of a killed run never blocks the next (rrid.runs.open_run, rrid.files.lock_folder)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rrid.files import lock_path
from tiny import QUICK, read_log, tiny_overrides

pytestmark = pytest.mark.slow


def train(out: Path, data: Path, *flags: str, epochs: int = 2) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rrid", "train", "--config", str(QUICK), "--out", str(out), "--no-progress", *flags]
    for item in tiny_overrides(data, **{"train.epochs": epochs}):
        cmd += ["--set", item]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"})


def wait_for(condition, proc, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline and not condition():
        assert proc.poll() is None, "the first run ended too soon: " + proc.stderr.read()[-2000:]
        time.sleep(0.05)
    assert condition()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The synthetic set generated once (so the runs below spend their time training)."""
    tmp = tmp_path_factory.mktemp("lockdata")
    done = subprocess.run([sys.executable, "-m", "rrid", "synth", str(tmp / "synth"), "--train-ids", "16",
                           "--test-ids", "16", "--images-per-id", "6"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return tmp


def test_a_second_run_into_a_folder_in_use_is_refused_in_one_line(tmp_path, data):
    out = tmp_path / "run"
    first = train(out, data, epochs=1000)                                # runs until interrupted
    try:
        wait_for(lambda: (out / "metrics.jsonl").exists(), first)       # the first run is training
        for flags in ((), ("--resume",), ("--overwrite",)):
            second = train(out, data, *flags)
            _, err = second.communicate(timeout=300)
            assert second.returncode == 2, err[-2000:]
            assert err.count("\n") == 1 and err.startswith(f"error: {out} is in use by another process")
            assert f"pid {first.pid}" in err, err
        assert first.poll() is None, "the first run went on undisturbed"
        first.send_signal(signal.SIGINT)                                 # Ctrl-C: one line, where to resume
        _, err = first.communicate(timeout=120)
        assert first.returncode == 130 and err.count("\n") == 1, err[-2000:]
        assert err.startswith(f"interrupted; continue it with --resume --out {out}") or \
            err.startswith(f"interrupted; no checkpoint was written yet in {out}"), err
    finally:
        first.kill()
    steps = [r["step"] for r in read_log(out) if r["kind"] == "step"]
    assert steps == sorted(set(steps)), "every step once: nothing of a second run mixed in"
    assert not lock_path(out, inside=False).exists(), "the lock file goes with its holder"


def test_the_lock_of_a_killed_run_never_blocks_the_next(tmp_path, data):
    out = tmp_path / "run"
    first = train(out, data, "--set", "train.checkpoint_every_steps=1", epochs=6)
    wait_for(lambda: (out / "last.pt").exists(), first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert lock_path(out, inside=False).exists(), "a killed holder leaves its lock file behind"
    again = train(out, data, "--resume", epochs=1)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["kind"] in ("epoch", "eval", "step")
