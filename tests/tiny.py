"""The tiny training run that the engine's tests share: the quick Ours-F config shrunk to seconds."""

import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quick" / "ours_f.yaml"


def tiny_overrides(tmp: Path, **extra) -> list[str]:
    """16 + 16 synthetic identities of 6 images under ``tmp``, batches of 4 x 4, one thread (so a
    subprocess and this process compute alike), two epochs, every step logged."""
    sets = {"data.root": str(tmp / "synth"), "data.synthetic": "{num_train_ids: 16, num_test_ids: 16, images_per_id: 6}",
            "data.p": 4, "data.k": 4, "train.num_threads": 1, "train.log_every": 1, "train.eval_every": 100,
            "train.epochs": 2, "optim.milestones": "[1]", **extra}
    return [f"{k}={v}" for k, v in sets.items()]


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
