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
        # the authors' code holds the last 100 training identities out (651 of Market-1501's 751 train)
        assert cfg.data.val_ids == 100
    if folder == "quick":
        assert (cfg.data.dataset, cfg.model.backbone, cfg.model.pretrained) == ("synthetic", "resnet18", False)
        assert cfg.data.val_ids == 0  # the small synthetic set trains on every identity
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


# ----------------------------------------------------------------------------- shortcuts: table2_row and preset

@pytest.mark.parametrize("config, override, row", [
    ("quick/ours_f.yaml", "model.table2_row=8", 8),        # a preset file, a row override
    ("quick/ours_s.yaml", "model.table2_row=13", 13),
    ("quick/row08.yaml", "model.preset=ours-f", 13),       # a row file, a preset override
    ("market1501/row01_gap_global.yaml", "model.preset=ours-s", 8),
])
def test_one_shortcut_override_replaces_the_other(config, override, row):
    expected = TABLE2[row - 1]
    for cfg in (load_config(ROOT / "configs" / config, [override]),                    # on the file
                apply_overrides(load_config(ROOT / "configs" / config), [override])):  # on a built config
        assert (cfg.model.scales, cfg.model.global_pool, cfg.model.local_pool, cfg.model.relation) == (
            expected.scales, expected.global_pool, expected.local_pool, expected.relation)
        assert cfg.model.feature_dim == expected.feature_dim
    # the file's other model fields stay, and an override after the shortcut still applies
    cfg = load_config(ROOT / "configs" / config, [override, "model.scales=[4, 6]"])
    assert cfg.model.scales == (4, 6) and cfg.model.backbone == load_config(ROOT / "configs" / config).model.backbone


def _help_texts() -> list[str]:
    import contextlib
    import io

    from rrid.__main__ import main

    texts = []
    for command in ((), ("train",), ("eval",), ("export",), ("synth",), ("prepare",)):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            main([*command, "--help"])
        texts.append(out.getvalue())
    return texts


def test_every_set_example_of_the_help_works():
    """Each command line in a help text that uses --set is applied to the configs it names (all
    configs when it names none, as in the --set option's own help) and must take effect."""
    import re
    import shlex

    import yaml

    examples = 0
    for text in _help_texts():
        lines = text.replace("\\\n", " ").splitlines()                  # shell line continuations
        commands = [line for line in lines if line.strip().startswith(("python -m rrid", "torchrun"))]
        prose = " ".join(line for line in lines if line not in commands)   # option help, wrapped by argparse
        for line in commands + [prose]:
            sets = [s.rstrip(",)") for s in re.findall(r"--set\s+([a-z0-9_]+\.[a-z0-9_]+=\S+)", line)]  # not KEY=VALUE
            if not sets:
                continue
            words = shlex.split(line) if line in commands else []
            named = [ROOT / w for prev, w in zip(words, words[1:]) if prev == "--config"]
            for config in named or CONFIGS:
                cfg = load_config(config, sets)
                examples += 1
                for item in sets:
                    key, value = item.split("=", 1)
                    section, name = key.split(".")
                    value = yaml.safe_load(value)
                    if key == "model.table2_row":
                        assert cfg.model.feature_dim == TABLE2[value - 1].feature_dim, (config, item)
                    elif key == "model.preset":
                        assert cfg.model == RRIDConfig.preset(value, **{
                            k: getattr(cfg.model, k) for k in ("backbone", "pretrained")}), (config, item)
                    else:
                        got = getattr(getattr(cfg, section), name)
                        assert got == (tuple(value) if isinstance(value, list) else value), (config, item)
    assert examples > len(CONFIGS)                                     # the generic example ran on every config


# ----------------------------------------------------------------------------- early checks

@pytest.mark.parametrize("override, expected", [
    ("optim.backbone_lr=-1e-3", "optim.backbone_lr must be >= 0, got -0.001"),
    ("optim.head_lr=-0.01", "optim.head_lr must be >= 0"),
    ("optim.momentum=-0.9", "optim.momentum must be in [0, 1)"),
    ("optim.momentum=1.0", "optim.momentum must be in [0, 1)"),
    ("optim.weight_decay=-5e-4", "optim.weight_decay must be >= 0"),
    ("optim.gamma=0", "optim.gamma must be > 0"),
    ("optim.gamma=-0.1", "optim.gamma must be > 0"),
    ("data.k=1", "data.k must be >= 2"),
    ("train.device=gpu", "train.device: expected 'auto', 'cpu', 'cuda', 'cuda:N' (N = 0, 1, ...) or 'mps', got 'gpu'"),
    ("train.device=cuda:first", "train.device: expected 'auto'"),
    ("train.device=cuda1", "train.device: expected 'auto'"),
    ("loss.triplet_mode=concatenate", "loss.triplet_mode: expected 'separate' | 'concat', got 'concatenate'"),
    ("loss.label_smoothing=1.0", "loss.label_smoothing must be in [0, 1)"),
    ("loss.label_smoothing=-0.1", "loss.label_smoothing must be in [0, 1)"),
    ("loss.margin=-0.3", "loss.margin must be >= 0"),
    ("data.height=80", "data.height=80 gives a feature map of 5 rows"),       # quick: last stride 1, P6
    ("model.last_stride=2", "data.height=96 gives a feature map of 3 rows"),
])
def test_bad_recipes_are_refused_by_the_config(override, expected):
    cfg = load_config(ROOT / "configs" / "quick" / "ours_f.yaml")
    with pytest.raises(ConfigError) as err:
        apply_overrides(cfg, [override])
    assert expected in str(err.value), str(err.value)
    key = override.split("=")[0] if not override.startswith("model.last_stride") else "data.height"
    assert key in str(err.value)


def test_height_message_gives_the_smallest_height_that_works():
    cfg = load_config(ROOT / "configs" / "quick" / "ours_f.yaml")
    with pytest.raises(ConfigError, match=r"expected data.height >= 81 \(e.g. 96\)"):
        apply_overrides(cfg, ["data.height=80"])
    assert apply_overrides(cfg, ["data.height=81"]).data.height == 81               # ceil(81 / 16) = 6 rows
    assert apply_overrides(cfg, ["model.last_stride=2", "data.height=161"]).data.height == 161   # ceil(161 / 32) = 6
    # row 1 has no stripes (GAP over the whole map): any height gives its one feature
    assert load_config(ROOT / "configs" / "quick" / "row01.yaml", ["data.height=16"]).data.height == 16


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_valid_devices_are_accepted(device):
    assert apply_overrides(ExperimentConfig(), [f"train.device={device}"]).train.device == device


@pytest.mark.parametrize("backbone, heights", [
    ("resnet18", [1, 2, 15, 16, 17, 31, 32, 33, 80, 81, 96, 100, 161]),
    ("resnet50", [33, 100]),                                   # Bottleneck: the stride sits on conv2
])
@pytest.mark.parametrize("last_stride", [1, 2])
def test_feature_map_height_matches_a_forward_pass(backbone, heights, last_stride):
    from rrid.config import feature_map_height
    from rrid.model import resnet_backbone

    net = resnet_backbone(backbone, last_stride=last_stride).eval()
    for h in heights:
        with torch.no_grad():
            rows = net(torch.zeros(1, 3, h, 8)).shape[2]
        assert feature_map_height(h, last_stride) == rows, (h, last_stride)
