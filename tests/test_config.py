"""rrid.config: every YAML under configs/ loads, validates and builds its model; typos are errors."""

import functools
from pathlib import Path

import pytest
import torch

from rrid.config import ConfigError, ExperimentConfig, apply_overrides, load_config, save_config
from rrid.model import RRID, TABLE2, RRIDConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
DATASETS = {"market1501": ("market1501", None), "dukemtmc": ("dukemtmc", None),
            "cuhk03_labeled": ("cuhk03", "labeled"), "cuhk03_detected": ("cuhk03", "detected")}


def test_there_is_one_config_per_table2_row_and_data_set():
    for folder in DATASETS:
        rows = sorted(p.name[:5] for p in (ROOT / "configs" / folder).glob("row*.yaml"))
        assert rows == [f"row{n:02d}" for n in range(1, 14)], folder
    assert {f"row{n:02d}.yaml" for n in range(1, 14)} | {"ours_s.yaml", "ours_f.yaml"} <= {
        p.name for p in (ROOT / "configs" / "quick").glob("*.yaml")}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_loads_validates_and_builds(path):
    cfg = load_config(path)
    rel = path.relative_to(ROOT / "configs")
    folder = rel.parts[0] if len(rel.parts) > 1 else None
    if path.name.startswith("row"):                       # the Table 2 row in the name is the model's
        row = TABLE2[int(path.name[3:5]) - 1]
        assert (cfg.model.scales, cfg.model.global_pool, cfg.model.local_pool, cfg.model.relation) == (
            row.scales, row.global_pool, row.local_pool, row.relation)
        assert cfg.model.feature_dim == row.feature_dim
    if folder in DATASETS:                                 # the paper's recipe
        assert (cfg.data.dataset, cfg.data.variant if DATASETS[folder][1] else None) == DATASETS[folder]
        assert (cfg.model.backbone, cfg.model.pretrained, cfg.data.height, cfg.data.width) == ("resnet50", True, 384, 128)
        assert (cfg.data.p, cfg.data.k, cfg.data.epoch_length, cfg.train.epochs) == (16, 4, "official", 80)
        assert (cfg.optim.backbone_lr, cfg.optim.head_lr, cfg.optim.milestones, cfg.optim.gamma) == (1e-3, 1e-2, (40, 60), 0.1)
        assert (cfg.optim.momentum, cfg.optim.weight_decay, cfg.loss.margin, cfg.loss.ce_weight) == (0.9, 5e-4, 1.2, 2.0)
        # the authors' code: the legacy single-gallery-shot CMC for CUHK03, Market-1501's elsewhere
        assert cfg.eval.metric == ("cuhk03_single_shot" if folder.startswith("cuhk03") else "market")
    if folder == "quick":
        assert (cfg.data.dataset, cfg.model.backbone, cfg.model.pretrained) == ("synthetic", "resnet18", False)
    # build small and offline (resnet18, no download): the embedding has the config's F-dim
    small = {**cfg.model.__dict__, "backbone": "resnet18", "pretrained": False}
    assert _embedding_dim(tuple(sorted(small.items()))) == cfg.model.feature_dim


@functools.lru_cache(maxsize=None)
def _embedding_dim(fields: tuple) -> int:
    """Width of the eval-mode embedding of RRID(fields); one build per distinct architecture."""
    model = RRID(RRIDConfig(**dict(fields)), num_classes=5).eval()
    with torch.no_grad():
        return model(torch.zeros(1, 3, 96, 32)).shape[1]


def test_defaults_are_the_papers_recipe():
    cfg = ExperimentConfig()
    assert cfg.model == RRIDConfig.preset("ours-f", pretrained=True)
    assert (cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.backbone_lr, cfg.optim.head_lr) == (0.9, 5e-4, 1e-3, 1e-2)
    assert (cfg.optim.milestones, cfg.train.epochs, cfg.data.p * cfg.data.k, cfg.data.val_ids) == ((40, 60), 80, 64, 0)
    assert cfg.eval.metric == "market"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_inheritance_overrides_and_round_trip(tmp_path):
    _write(tmp_path / "configs" / "base.yaml", "model: {backbone: resnet18}\noptim: {milestones: [4, 6], head_lr: 1e-2}\n")
    child = _write(tmp_path / "configs" / "x" / "child.yaml",
                   "_base_: ../base.yaml\nmodel: {table2_row: 5}\ndata: {root: data/here, p: 4}\n")
    cfg = load_config(child, ["train.epochs=3", "model.scales=[2, 6]"])
    assert cfg.model.backbone == "resnet18" and cfg.model.global_pool == "gmp" and cfg.model.scales == (2, 6)
    assert cfg.optim.milestones == (4, 6) and cfg.optim.head_lr == 0.01 and isinstance(cfg.optim.head_lr, float)
    assert (cfg.data.p, cfg.train.epochs, cfg.name) == (4, 3, "child")
    assert Path(cfg.data.root) == tmp_path / "data" / "here"          # relative to the project folder
    again = load_config(save_config(cfg, tmp_path / "run" / "config.yaml"))
    assert again == cfg
    # a row override on a built config lets the row decide the architecture again
    assert apply_overrides(cfg, ["model.table2_row=13"]).model.feature_dim == 3840


@pytest.mark.parametrize("text, key, suggestion", [
    ("train: {epoch: 3}\n", "train.epoch", "train.epochs"),
    ("model: {global_pol: gcp}\n", "model.global_pol", "model.global_pool"),
    ("optimizer: {}\n", "optimizer", "optim"),
])
def test_unknown_key_names_key_file_and_suggestion(tmp_path, text, key, suggestion):
    base = _write(tmp_path / "base.yaml", text)
    child = _write(tmp_path / "child.yaml", "_base_: base.yaml\n")
    with pytest.raises(ConfigError) as err:
        load_config(child)
    msg = str(err.value)
    assert repr(key) in msg and str(base) in msg and f"Did you mean {suggestion!r}" in msg and "Valid keys" in msg


@pytest.mark.parametrize("override, expected", [
    ("train.epochs=ten", "train.epochs: expected int"),
    ("train.amp=fp8", "train.amp: expected 'auto' | 'bf16' | 'fp16' | 'off'"),
    ("model.backbone=resnet19", "RRIDConfig.backbone='resnet19'"),
    ("optim.milestones=[60, 40]", "optim.milestones must increase"),
    ("model.table2_row=14", "model.table2_row must be an integer 1..13"),
    ("data.p=1", "data.p must be >= 2"),
    ("train.epochs", "expected key=value"),
    ("eval.metric=cuhk03", "eval.metric: expected 'market' | 'cuhk03_single_shot', got 'cuhk03'"),
])
def test_bad_values_are_errors_that_name_the_setting(override, expected):
    cfg = load_config(ROOT / "configs" / "quick" / "ours_f.yaml")
    with pytest.raises(ConfigError, match=None) as err:
        apply_overrides(cfg, [override])
    assert expected in str(err.value)


def test_scalar_milestone_becomes_tuple():
    cfg = apply_overrides(ExperimentConfig(), ["optim.milestones=30", "data.epoch_length=once"])
    assert cfg.optim.milestones == (30,) and cfg.data.epoch_length == "once"


@pytest.mark.parametrize("value", ["''", "'   '"])
def test_empty_data_root_is_refused(tmp_path, value):
    # an empty root would read as the working directory and silently pick up whatever data set sits there
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "run.yaml"
    path.write_text(f"data:\n  dataset: market1501\n  root: {value}\n")
    with pytest.raises(ConfigError, match=r"run.yaml: data.root is empty; set it to the data set's folder"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"data.root is empty"):
        apply_overrides(ExperimentConfig(), [f"data.root={value}"])
