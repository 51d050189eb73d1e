"""benchmarks/gpu_check.py without a GPU: it refuses in one line, reads its options, runs the parts
it is given (here fakes, with CUDA mocked) and writes its report even when a part breaks."""

import json
import sys

import pytest
import torch

from rrid.paths import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def test_options_and_their_checks():
    args = gpu_check.parse([])
    assert args.parts == list(gpu_check.PARTS) and (args.steps, args.batch, args.gpus) == (10, 64, None)
    assert gpu_check.parse(["--parts", "epoch", "ddp", "--gpus", "2"]).parts == ["epoch", "ddp"]
    for bad in (["--steps", "0"], ["--batch", "30"], ["--gpus", "0"], ["--parts", "nothing"]):
        with pytest.raises(SystemExit) as e:
            gpu_check.parse(bad)
        assert e.value.code == 2


def test_without_cuda_it_refuses_in_one_line_and_writes_nothing(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: gpu_check needs a CUDA GPU: torch.cuda.is_available() is False") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_the_parts_run_and_the_report_says_what_failed(monkeypatch, capsys, tmp_path, market_mini):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check, "machine", lambda: {"GPU": "Tesla T4", "GPUs": 1})
    chapters = {"prepare-book": {"ok": True, "seconds": 3.0, "tail": ""},
                "book/07_training": {"ok": False, "seconds": 41.0, "tail": "AssertionError: counters differ"}}
    fakes = {"chapters": lambda args: chapters,
             "throughput": lambda args: {"Ours-F fp32": 120.0, "Ours-F fp16": 260.5, "bare ResNet-50 fp32": 131.0},
             "epoch": lambda args: 1 / 0,
             "ddp": lambda args: {"ok": True, "seconds": 12.0, "processes": 1, "world_size_in_last_pt": 1}}
    monkeypatch.setattr(gpu_check, "CHECKS", fakes)
    assert gpu_check.main(["--out", str(tmp_path)]) == 1
    text = (tmp_path / "gpu_check.md").read_text()
    assert capsys.readouterr().out.endswith(text + "\n")
    assert "| book/07_training | FAILED | 41 |" in text and "AssertionError: counters differ" in text
    assert "- Ours-F fp16: 260.5" in text and "FAILED: ZeroDivisionError: division by zero" in text
    assert text.rstrip().endswith("**Failed: chapters/book/07_training, epoch.**")
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["machine"] == {"GPU": "Tesla T4", "GPUs": 1} and saved["results"]["ddp"]["world_size_in_last_pt"] == 1
    assert gpu_check.failed({"ddp": {"ok": True}, "throughput": {"Ours-F fp32": 1.0}}) == []
