"""The README's Colab snippet, run end to end as a new user would, on the CPU.

The cells of the snippet run in order in a folder standing in for Colab's ``/content``, with a
folder standing in for the mounted Google Drive (``/content/drive/MyDrive``) that holds
``Market-1501-v15.09.15.zip``: here the smoke setting's archive (``rrid.book.smoke_zip``: crops of
market1501-mini, else of the synthetic set). What the test changes in the commands, and only that: the two folders'
paths; the clone (the working tree's files are copied, as ``git clone`` would fetch them) and the
editable install (``PYTHONPATH`` points at the copy); ``--md5`` of the stand-in archive (the
published one is the real file's); and the smoke setting's ``--set`` overrides (one epoch of a
few images, random weights: the ImageNet weights cannot be downloaded here). Then a disconnect:
the VM's folder is deleted, data set and run folder with it, and the same cells run again with
``train.epochs=2``: the data step unpacks the zip again and ``--resume`` continues the run from
its copy on the Drive.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from rrid import book, paths
from rrid.files import file_hash

ROOT = paths.ROOT
CLONED = ("rrid", "configs", "_config.yml", "pyproject.toml")     # what the package reads from its checkout

pytestmark = [pytest.mark.slow, pytest.mark.full_mode]


def snippet() -> list[str]:
    """The Colab code block of the README, one command per entry (backslash continuations joined)."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"\*\*On Colab\*\*.*?```python\n(.*?)```", readme, re.S).group(1)
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_the_snippet_is_the_one_this_test_runs():
    lines = snippet()
    assert lines[0] == 'from google.colab import drive; drive.mount("/content/drive")'
    assert lines[1].startswith("!git clone -q --depth 1 https://github.com/") and lines[1].endswith("pip install -q -e rrid")
    assert lines[2] == "!python -m rrid prepare market1501 --source /content/drive/MyDrive/Market-1501-v15.09.15.zip"
    assert lines[3].startswith("!python -m rrid train --config rrid/configs/market1501/row13_ours_f.yaml ")
    assert "--mirror /content/drive/MyDrive/" in lines[3] and lines[3].endswith("--resume")


def run_snippet(content, drive, env, extra):
    """Run the snippet's cells in ``content`` as Colab would; returns each command's output."""
    outputs = []
    for line in snippet():
        if line.startswith("from google.colab import drive"):
            assert drive.is_dir()                                   # "mounted"
            continue
        if line.startswith("!git clone"):
            content.mkdir(parents=True, exist_ok=True)
            for name in CLONED:
                copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
                copy(ROOT / name, content / "rrid" / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                                              if (ROOT / name).is_dir() else {}))
            continue
        command = shlex.split(line[1:].replace("/content/drive/MyDrive", str(drive)).replace("/content", str(content)))
        assert command[:3] == ["python", "-m", "rrid"], line
        command = [sys.executable, *command[1:]]
        if command[3] == "prepare":
            command += ["--md5", file_hash(drive / "Market-1501-v15.09.15.zip", "md5")]
        else:
            command += [a for o in (*book.SMOKE_OVERRIDES, *extra) for a in ("--set", o)] + ["--no-progress"]
        done = subprocess.run(command, cwd=content, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (line, done.stdout, done.stderr)
        outputs.append(done.stdout)
    return outputs


def test_the_readme_colab_snippet_runs_trains_and_resumes_after_a_disconnect(tmp_path, monkeypatch):
    monkeypatch.setenv("RRID_CACHE", str(tmp_path / "cache"))
    content, drive = tmp_path / "content", tmp_path / "drive" / "MyDrive"
    drive.mkdir(parents=True)
    shutil.copy(book.smoke_zip(), drive / "Market-1501-v15.09.15.zip")   # the user's archive on Drive
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RRID_", "COLAB_"))}
    env.update(PYTHONPATH=str(content / "rrid"), RRID_CACHE=str(tmp_path / "cache"), TQDM_DISABLE="1",
               OMP_WAIT_POLICY="PASSIVE")

    prepared, trained = run_snippet(content, drive, env, extra=())
    data = content / "rrid" / "data" / "market1501"
    assert f"market1501 is ready in {data}" in prepared                 # the absolute folder the configs read
    mirror, run = drive / "rrid" / "ours_f", content / "runs" / "ours_f"
    assert "mAP=" in trained and f"last checkpoint: {run / 'last.pt'}" in trained
    first = json.loads((mirror / "mirror.json").read_text())
    assert sorted(first["files"]) == ["best.pt", "config.yaml", "last.pt", "metrics.jsonl"]

    shutil.rmtree(content)                                               # the runtime disconnects: the VM is gone
    prepared, trained = run_snippet(content, drive, env, extra=("train.epochs=2",))
    assert f"preparing market1501 in {data}" in prepared and f"market1501 is ready in {data}" in prepared
    second = json.loads((mirror / "mirror.json").read_text())
    assert second["step"] == 2 * first["step"] > 0                       # one more epoch, after the first
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if json.loads(line).get("kind") == "epoch"]
    assert epochs == [0, 1], "the resumed run continued the mirrored one: epoch 0 came back from Drive"
