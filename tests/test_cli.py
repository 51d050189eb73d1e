"""python -m rrid: help texts, --set overrides, train then eval a checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rrid.__main__ import main
from rrid.config import load_config
from rrid.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quick" / "ours_s.yaml"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rrid", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command, expected", [
    ((), ["train", "eval", "synth", "export", "COMMAND --help"]),
    (("train",), ["--config", "--out", "--resume", "--overwrite", "--set KEY=VALUE", "train.epochs=10", "torchrun",
                  "last.pt", "best.pt", "SHA-256", "exit status"]),
    (("eval",), ["--config", "--checkpoint", "--json", "--set KEY=VALUE", "mAP"]),
    (("synth",), ["out", "--seed", "--train-ids"]),
    (("export",), ["--checkpoint", "--config", "--out", "onnx"]),
])
def test_help_of_each_command(command, expected, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for text in expected:
        assert text.lower() in out.lower(), (text, out)


def test_bad_override_is_a_clear_error():
    """Through the real entry point, ``python -m rrid``."""
    done = run_cli("train", "--config", str(QUICK), "--set", "train.epoch=1")
    assert done.returncode != 0
    assert "unknown key 'train.epoch'" in done.stderr and "Did you mean 'train.epochs'" in done.stderr


def test_train_with_overrides_then_eval_checkpoint(tmp_path, capsys):
    sets = [f"data.root={tmp_path / 'synth'}", "data.synthetic={num_train_ids: 12, num_test_ids: 12, images_per_id: 5}",
            "data.p=4", "data.k=4", "train.epochs=1", "train.num_threads=1", "train.log_every=1"]
    args = ["--config", str(QUICK)] + [x for s in sets for x in ("--set", s)]
    assert main(["train", *args, "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    trained = capsys.readouterr().out
    saved = load_config(tmp_path / "run" / "config.yaml")                    # the overrides reached the run
    assert (saved.train.epochs, saved.data.p, saved.model.feature_dim) == (1, 4, 1792)
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt["config"]["data"]["synthetic"]["num_train_ids"] == 12

    assert main(["eval", *args, "--checkpoint", str(tmp_path / "run" / "best.pt"), "--json", str(tmp_path / "m.json")]) == 0
    evaluated = capsys.readouterr().out
    metrics = json.loads((tmp_path / "m.json").read_text())
    fit_eval = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    # the same checkpoint, data, batches and thread count (eval applies the config's train.num_threads
    # as fit does): the same features, so the same ranking; abs=1e-9 only absorbs the JSON round trip
    assert fit_eval["kind"] == "eval" and metrics["mAP"] == pytest.approx(fit_eval["mAP"], abs=1e-9)
    assert metrics["rank1"] == pytest.approx(fit_eval["rank1"], abs=1e-9)
    assert f"mAP={100 * metrics['mAP']:.1f}" in evaluated and f"mAP={100 * metrics['mAP']:.1f}" in trained

    other = ROOT / "configs" / "quick" / "row01.yaml"                         # a checkpoint of another model
    assert main(["eval", "--config", str(other), *args[2:], "--checkpoint", str(tmp_path / "run" / "best.pt")]) == 2
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "key(s)" in err and len(err.strip().splitlines()) == 1


def _market_zip(tmp_path: Path) -> Path:
    """A tiny archive in the layout of Market-1501-v15.09.15.zip (two ids, two cameras)."""
    import io
    import zipfile

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 128), (120, 80, 40)).save(buf, format="JPEG")
    names = {"bounding_box_train": ["0002_c1s1_000451_01.jpg", "0002_c2s1_000551_01.jpg"],
             "query": ["0007_c1s1_000101_01.jpg"],
             "bounding_box_test": ["0007_c2s1_000201_01.jpg", "0000_c1s1_000001_01.jpg"]}
    archive = tmp_path / "Market-1501-v15.09.15.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for folder, files in names.items():
            for name in files:
                zf.writestr(f"Market-1501-v15.09.15/{folder}/{name}", buf.getvalue())
    return archive


def test_prepare_checks_the_md5_then_unpacks(tmp_path, capsys):
    import hashlib

    from rrid.data import Market1501

    archive = _market_zip(tmp_path)
    root = tmp_path / "market1501"
    # the published md5 is for the real archive: this one must be refused, and nothing written
    assert main(["prepare", "market1501", "--source", str(archive), "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert str(archive) in err and "65005ab7d12ec1c44de4eeafe813e68a" in err
    assert not root.exists()
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    assert main(["prepare", "market1501", "--source", str(archive), "--root", str(root), "--md5", md5]) == 0
    data = Market1501(root)
    assert (len(data.train), len(data.query), len(data.gallery)) == (2, 1, 2)
    assert data.num_train_ids == 1


def test_prepare_root_is_read_like_a_config_root(tmp_path, monkeypatch, capsys):
    import hashlib

    archive = _market_zip(tmp_path)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    (project / "book").mkdir()
    monkeypatch.chdir(project / "book")  # run from a subfolder: the data still lands where configs look
    assert main(["prepare", "market1501", "--source", str(archive), "--root", "data/m", "--md5", md5]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [f"preparing market1501 in {project / 'data' / 'm'} from {archive} (md5 {md5})",
                                f"market1501 is ready in {project / 'data' / 'm'}",
                                f"use it with --set data.root={project / 'data' / 'm'}"]  # not the configs' root
    assert sorted(p.name for p in (project / "data" / "m").iterdir()) == ["Market-1501-v15.09.15"]
    assert not (project / "book" / "data").exists()


def test_prepare_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import hashlib
    import socket
    import zipfile

    for key in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    archive = _market_zip(tmp_path)
    raw = archive.read_bytes()
    (tmp_path / "cut.zip").write_bytes(raw[: len(raw) // 2])
    bad_crc = tmp_path / "crc.zip"
    with zipfile.ZipFile(bad_crc, "w") as zf:  # stored, so that a flipped byte reaches the CRC check
        zf.writestr("Market-1501-v15.09.15/query/0007_c1s1_000101_01.jpg", b"A" * 1000)
    data = bad_crc.read_bytes()
    bad_crc.write_bytes(data.replace(b"A" * 10, b"B" + b"A" * 9, 1))
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/Market-1501-v15.09.15.zip"
    cases = [
        (str(tmp_path / "cut.zip"), "cut.zip is a truncated or corrupt zip archive"),
        (str(bad_crc), "crc.zip is truncated or corrupt (Bad CRC-32"),
        (url, f"cannot download {url}: no data from the server for 0.2 s"),
        ("http://rrid-test-host.invalid/m.zip", "the host name 'rrid-test-host.invalid' does not resolve"),
    ]
    try:
        for source, expected in cases:
            md5 = hashlib.md5(Path(source).read_bytes()).hexdigest() if "://" not in source else "0" * 32
            code = main(["prepare", "market1501", "--source", source, "--root", str(tmp_path / "m"), "--md5", md5,
                         "--timeout", "0.2", "--retries", "0"])
            err = capsys.readouterr().err
            assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and expected in err, (source, err)
    finally:
        silent.close()
    assert not (tmp_path / "m").exists()
