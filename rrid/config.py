"""The experiment configuration: one YAML file per run, loaded into dataclasses.

A run is described by six blocks::

    model:  the architecture (an ``rrid.RRIDConfig``; ``table2_row: N`` or ``preset: ours-f``
            picks a Table 2 row, other keys override its fields)
    data:   which data set, input size, P x K batches, epoch length
    optim:  SGD with two learning-rate groups and a staircase schedule
    loss:   triplet margin, the weight λ of the cross-entropy term
    train:  epochs, seed, AMP, checkpoints, logging, evaluation cadence
    eval:   test-time options (flip averaging, re-ranking, the ranking metric)

The defaults are the paper's recipe (Park & Ham 2020, "Training", and the authors' code):
SGD with momentum 0.9 and weight decay 5e-4, learning rates 1e-3 (backbone) and 1e-2
(heads) divided by 10 at epochs 40 and 60, 80 epochs of the authors' epoch length, batches
of N = N_K x N_M = 16 x 4, loss = triplet (α = 1.2) + λ·CE with λ = 2, input 384 x 128.

A file may start with ``_base_: ../base.yaml`` (a path relative to the file, or a list of
paths) and then only state what differs. Unknown keys are errors that name the key, the file
and the valid keys; values are converted to the declared types (lists become tuples).

Files are plain YAML: at most 1 MiB, nested at most 32 deep, and without anchors and aliases
(``&a`` / ``*a``: an alias repeats a node, so nested ones grow a few hundred bytes into
gigabytes); tags other than YAML's plain types (``!!python/object``) are refused. Every error
is one line naming the file or ``--set`` and the setting; a value it shows is shortened.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import yaml

from rrid.data import synthetic
from rrid.errors import ConfigError, DatasetError, OutputPathError, one_line, short_repr
from rrid.files import atomic_write, read_at_most
from rrid.model import RRIDConfig
from rrid.paths import config_project

__all__ = [
    "DataConfig", "OptimConfig", "LossConfig", "TrainConfig", "EvalConfig", "ExperimentConfig",
    "ConfigError", "load_config", "apply_overrides", "save_config", "config_from_dict", "config_to_dict",
    "config_diff", "check_device", "feature_map_height",
]




@dataclass
class DataConfig:
    dataset: Literal["market1501", "dukemtmc", "cuhk03", "synthetic", "imagelist", "openreid"] = "market1501"
    root: str = "data/market1501"       # folder (or CSV for imagelist); relative = to the project folder
                                        # openreid: the authors' Market-1501 download (rrid.data.OpenReID)
    variant: Literal["labeled", "detected"] = "labeled"   # CUHK03-NP only
    synthetic: dict = field(default_factory=dict)         # keyword arguments of rrid.data.synthetic.ensure
    val_ids: int = 0                    # hold out the last n training identities (rrid.train.hold_out_ids); 0 for
                                        # any data set here, 100 (the authors' code) in configs/base.yaml
    height: int = 384
    width: int = 128
    p: int = 16                         # N_K identities per batch
    k: int = 4                          # N_M images per identity
    epoch_length: Literal["official", "once"] = "official"   # see rrid.data.PKSampler
    erasing: Optional[Literal["official", "zhong"]] = "official"   # random erasing (None: off)
    workers: int = 4
    cache: bool = False                 # keep decoded images in memory
    test_batch_size: int = 128


@dataclass
class OptimConfig:
    backbone_lr: float = 1e-3
    head_lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    milestones: tuple[int, ...] = (40, 60)   # epochs at which both learning rates are multiplied by gamma
    gamma: float = 0.1


@dataclass
class LossConfig:
    margin: float = 1.2                 # α of the batch-hard triplet loss
    ce_weight: float = 2.0              # λ in L = L_triplet + λ L_CE
    label_smoothing: float = 0.0
    triplet_mode: Literal["separate", "concat"] = "separate"   # official: one loss per 256-d q, summed


@dataclass
class TrainConfig:
    epochs: int = 80
    seed: int = 0
    device: str = "auto"                # "auto" (cuda when available, else cpu) | "cpu" | "cuda" | "cuda:N" | "mps"
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"   # auto: bf16 (compute capability >= 8.0) / fp16 on CUDA, off on CPU
    channels_last: Literal["auto", "on", "off"] = "auto"   # auto: on CUDA only
    deterministic: Literal["auto", "on", "off"] = "auto"   # auto: on CPU only
    num_threads: int = 0                # torch CPU threads, 0 = leave torch's default
    sync_bn: bool = False               # SyncBatchNorm under torchrun
    log_every: int = 20                 # steps between metrics.jsonl step lines
    eval_every: int = 10                # epochs between evaluations (and always after the last)
    checkpoint_every_steps: int = 0     # 0 = only at the end of each epoch
    tensorboard: bool = True            # write TensorBoard events when tensorboard is importable
    out_dir: Optional[str] = None       # default run folder when fit() gets none
    mirror: Optional[str] = None        # a second copy of the run (rrid.runs.Mirror), e.g. on Google Drive
    mirror_every: int = 5               # epochs between copies to the mirror (and always after the last)


@dataclass
class EvalConfig:
    flip: bool = True                   # average each block over the image and its mirror
    rerank: bool = False                # k-reciprocal re-ranking (not used in the paper)
    # Ranking metric (rrid.metrics.ranking_metrics): "market" = Market-1501 mAP + CMC (the
    # standard for Market-1501, Duke and the CUHK03-NP 767/700 split); "cuhk03_single_shot" =
    # the same mAP with the legacy single-gallery-shot CMC, what the authors' code reports for
    # CUHK03 (configs/cuhk03_* use it; rank-1 is then not comparable with the standard one).
    metric: Literal["market", "cuhk03_single_shot"] = "market"


@dataclass
class ExperimentConfig:
    model: RRIDConfig = field(default_factory=lambda: RRIDConfig(pretrained=True))
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    name: str = ""                      # defaults to the file name


_SECTIONS = {"model": RRIDConfig, "data": DataConfig, "optim": OptimConfig, "loss": LossConfig,
             "train": TrainConfig, "eval": EvalConfig}
_MODEL_SHORTCUTS = ("table2_row", "preset")
# the fields a Table 2 row or preset decides; an override of table2_row/preset resets them
_ARCHITECTURE = ("scales", "global_pool", "local_pool", "relation")


# ----------------------------------------------------------------------------- reading files

MAX_CONFIG_BYTES = 1 << 20      # the configs here are under 2 KB
MAX_DEPTH = 32                  # nested collections; a config nests 3 deep


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases and with bounded nesting (see the module docstring)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"found the alias *{one_line(event.anchor, 40)}: anchors and aliases are not accepted "
                "in configs (write the values out)", event.start_mark)
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} deep",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _yaml_problem(err: Exception) -> str:
    """A YAML error in one line: ``line L, column C: what``."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return where + one_line(" ".join(filter(None, [err.context, err.problem])), 200)
    return one_line(f"{type(err).__name__}: {err}", 200)


def parse_yaml(text: str):
    """``text`` as YAML through ``_ConfigLoader``; any problem is a ``yaml.YAMLError`` (or
    a ValueError for a number Python refuses, e.g. an integer of over 4,300 digits)."""
    loader = _ConfigLoader(text)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise yaml.YAMLError(f"nested more than {MAX_DEPTH} deep") from None
    finally:
        loader.dispose()


def _read_yaml(path: Path) -> dict:
    data = read_at_most(path, MAX_CONFIG_BYTES, ConfigError, "a YAML config")
    try:
        raw = parse_yaml(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start})") from None
    except (yaml.YAMLError, ValueError) as e:
        raise ConfigError(f"{path} is not a valid YAML config: {_yaml_problem(e)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, data, ...), got {type(raw).__name__}")
    return raw


def _merge(base: dict, top: dict) -> dict:
    """Deep merge: mappings merge key by key, everything else in ``top`` replaces ``base``."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "synthetic":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _load_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The file's mapping with its ``_base_`` files merged underneath it."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: _base_ cycle through {' -> '.join(map(str, seen))}")
    raw = _read_yaml(path)
    bases = raw.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) and b.strip() and "\0" not in b for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths (relative to the file), "
                          f"got {short_repr(bases)}")
    _check_keys(raw, str(path))
    merged: dict = {}
    for base in bases:
        merged = _merge(merged, _load_tree(path.parent / base, seen + (path,)))
    return _merge(merged, raw)


# ----------------------------------------------------------------------------- types

def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` converted to the annotation ``tp``; a ConfigError naming ``where`` otherwise."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    def bad() -> ConfigError:     # formatted only when raised, and shortened: the value may be huge
        return ConfigError(f"{where}: expected {_type_name(tp)}, got {short_repr(value)}")

    if tp is Any:
        return value
    if origin is Literal:
        if isinstance(value, (str, int, float, bool, type(None))) and value in args:
            return value
        raise bad()
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError:
                pass
        raise bad()
    if origin is tuple:
        items = [value] if isinstance(value, (int, float, str)) and not isinstance(value, bool) else value
        if not isinstance(items, (list, tuple)):
            raise bad()
        item_type = args[0] if args else Any
        return tuple(_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(items))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):          # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad() from None
        raise bad()
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad()
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise bad()
    return value


def _unknown_key(key: Any, valid: Sequence[str], where: str, source: str) -> ConfigError:
    if not isinstance(key, str):
        under = where.rstrip(".") or "the top"
        return ConfigError(f"{source}: {short_repr(key)} (a {type(key).__name__}) under {under} is not a key name. "
                           f"Valid keys: {', '.join(sorted(valid))}")
    close = difflib.get_close_matches(key, valid, n=1) if len(key) <= 100 else []
    hint = f" Did you mean {where + close[0]!r}?" if close else ""
    return ConfigError(f"{source}: unknown key {short_repr(where + key)}.{hint} Valid keys: {', '.join(sorted(valid))}")


def _check_keys(raw: dict, source: str) -> None:
    """Every key of one file (or override set) must be a section or a field of its section."""
    valid = list(_SECTIONS) + ["name"]
    for key, value in raw.items():
        if not isinstance(key, str) or key not in valid:
            raise _unknown_key(key, valid, "", source)
        if key in _SECTIONS and isinstance(value, dict):
            names = [f.name for f in dataclasses.fields(_SECTIONS[key])]
            names += list(_MODEL_SHORTCUTS) if key == "model" else []
            for field_name in value:
                if not isinstance(field_name, str) or field_name not in names:
                    raise _unknown_key(field_name, names, f"{key}.", source)


def _build_section(cls, raw: Any, section: str, source: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: section {section!r} must be a mapping, got {short_repr(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    raw = dict(raw)
    start = cls()
    if cls is RRIDConfig:
        row, preset = raw.pop("table2_row", None), raw.pop("preset", None)
        if row is not None and preset is not None:
            raise ConfigError(f"{source}: model sets both table2_row and preset; choose one")
        if row is not None:
            if not isinstance(row, int) or isinstance(row, bool) or not 1 <= row <= 13:
                raise ConfigError(f"{source}: model.table2_row must be an integer 1..13, got {short_repr(row)}")
            start = RRIDConfig.table2(row)
        elif preset is not None:
            if not isinstance(preset, str):
                raise ConfigError(f"{source}: model.preset must be a preset's name, got {short_repr(preset)}")
            try:
                start = RRIDConfig.preset(preset)
            except (KeyError, ValueError) as e:
                raise ConfigError(f"{source}: model.preset {short_repr(preset)}: {one_line(str(e), 300)}") from None
        names = names + list(_MODEL_SHORTCUTS)
    values = {}
    for key, value in raw.items():
        if key not in names:
            raise _unknown_key(key, names, f"{section}.", source)
        values[key] = _convert(value, hints.get(key, Any), f"{source}: {section}.{key}")
    try:
        return dataclasses.replace(start, **values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: section {section!r}: {one_line(str(e), 300)}") from None


def config_from_dict(raw: dict, source: str = "<dict>") -> ExperimentConfig:
    """Build and validate an ExperimentConfig from nested mappings (as read from YAML)."""
    _check_keys(raw, source)
    parts = {s: _build_section(cls, raw.get(s, {}), s, source) for s, cls in _SECTIONS.items()}
    if "model" not in raw or "pretrained" not in raw.get("model", {}):
        parts["model"] = dataclasses.replace(parts["model"], pretrained=ExperimentConfig().model.pretrained)
    name = raw.get("name", "")
    if not isinstance(name, str) or one_line(name, 200) != name:
        raise ConfigError(f"{source}: name must be one line of text (at most 200 characters), got {short_repr(name)}")
    cfg = ExperimentConfig(**parts, name=name)
    _check(cfg, source)
    _check_data_root(cfg, source)
    return cfg


def _check_data_root(cfg: ExperimentConfig, source: str) -> None:
    """An empty ``data.root`` would silently read whatever data set sits in the working directory."""
    if not str(cfg.data.root).strip():
        raise ConfigError(f"{source}: data.root is empty; set it to the data set's folder (or the CSV for "
                          "imagelist), e.g. data/market1501")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(name: str, where: str = "train.device") -> str:
    """``name`` if it is "auto", "cpu", "cuda", "cuda:N" or "mps"; a ConfigError naming ``where`` otherwise."""
    if not isinstance(name, str) or not _DEVICE.match(name):
        raise ConfigError(f"{where}: expected 'auto', 'cpu', 'cuda', 'cuda:N' (N = 0, 1, ...) or 'mps', "
                          f"got {short_repr(name)}")
    return name


def feature_map_height(height: int, last_stride: int = 1) -> int:
    """Rows of the ResNet feature map x for an input ``height`` (torchvision's resnet18/34/50).

    Every stride-2 layer (conv1: 7x7 pad 3, maxpool: 3x3 pad 1, the first 3x3 pad 1 conv and
    the 1x1 downsample of layer2, layer3 and layer4) maps h to floor((h + 2 pad - k) / 2) + 1
    = floor((h - 1) / 2) + 1 = ceil(h / 2). layer4 has stride ``last_stride``, so the map has
    ceil(H / 16) rows with last stride 1 and ceil(H / 32) with last stride 2
    (384 -> 24, 96 -> 6; 100 -> 7).
    """
    h = height
    for _ in range(4 if last_stride == 1 else 5):
        h = (h - 1) // 2 + 1
    return h


def _check(cfg: ExperimentConfig, source: str) -> None:
    """Cross-field checks that single types cannot express."""
    d, o, t, lo, m = cfg.data, cfg.optim, cfg.train, cfg.loss, cfg.model
    _check_ranges(cfg, source)
    if d.p < 2:
        raise ConfigError(f"{source}: data.p must be >= 2 (the triplet loss needs negatives), got {d.p}")
    if d.k < 2:
        raise ConfigError(f"{source}: data.k must be >= 2 (the triplet loss needs a positive: "
                          f"two images per identity), got {d.k}")
    if not 0 <= o.momentum < 1:
        raise ConfigError(f"{source}: optim.momentum must be in [0, 1) (the paper: 0.9), got {o.momentum}")
    if o.nesterov and o.momentum == 0:
        raise ConfigError(f"{source}: optim.nesterov=true needs optim.momentum > 0, got {o.momentum}")
    if not 0 < o.gamma < math.inf:
        raise ConfigError(f"{source}: optim.gamma must be > 0 (the paper: 0.1), got {o.gamma}")
    if list(o.milestones) != sorted(o.milestones):
        raise ConfigError(f"{source}: optim.milestones must increase, got {short_repr(list(o.milestones))}")
    if not 0 <= lo.label_smoothing < 1:
        raise ConfigError(f"{source}: loss.label_smoothing must be in [0, 1), got {lo.label_smoothing}")
    check_device(t.device, f"{source}: train.device")
    _check_paths(cfg, source)
    _check_synthetic(cfg, source)
    if m.local_pool or m.global_pool == "gcp":          # the branches that cut the map into stripes
        rows, n = feature_map_height(d.height, m.last_stride), max(m.scales)
        if rows < n:
            factor = 16 if m.last_stride == 1 else 32
            raise ConfigError(
                f"{source}: data.height={d.height} gives a feature map of {rows} rows (ceil(height / {factor}) "
                f"with model.last_stride={m.last_stride}), fewer than the {n} stripes of model.scales="
                f"{list(m.scales)}; expected data.height >= {(n - 1) * factor + 1} (e.g. {n * factor}) or fewer stripes")


MAX_IMAGE_SIDE = 4096           # data.height, data.width: far above any reID input (384 x 128 in the paper)
MAX_SEED = 2**32 - 1            # numpy's seeds are 0 .. 2**32 - 1


def _check_ranges(cfg: ExperimentConfig, source: str) -> None:
    """Each number within the range the code that reads it (much later) accepts."""
    d, o, t, lo = cfg.data, cfg.optim, cfg.train, cfg.loss
    at_least_one = {"data.height": d.height, "data.width": d.width, "data.p": d.p, "data.k": d.k,
                    "data.test_batch_size": d.test_batch_size, "train.epochs": t.epochs,
                    "train.log_every": t.log_every, "train.eval_every": t.eval_every, "train.mirror_every": t.mirror_every}
    for key, value in at_least_one.items():
        if value < 1:
            raise ConfigError(f"{source}: {key} must be >= 1, got {value}")
    for key, value in {"data.height": d.height, "data.width": d.width}.items():
        if value > MAX_IMAGE_SIDE:
            raise ConfigError(f"{source}: {key} must be at most {MAX_IMAGE_SIDE} pixels, got {value}")
    if not 0 <= t.seed <= MAX_SEED:
        raise ConfigError(f"{source}: train.seed must be in 0..{MAX_SEED} (numpy's seeds), got {short_repr(t.seed)}")
    for key, value in {"data.workers": d.workers, "data.val_ids": d.val_ids, "train.num_threads": t.num_threads,
                       "train.checkpoint_every_steps": t.checkpoint_every_steps,
                       "optim.backbone_lr": o.backbone_lr, "optim.head_lr": o.head_lr,
                       "optim.weight_decay": o.weight_decay, "loss.margin": lo.margin,
                       "loss.ce_weight": lo.ce_weight}.items():
        if not 0 <= value < math.inf:            # also catches NaN
            expected = "finite" if value >= 0 else ">= 0"
            raise ConfigError(f"{source}: {key} must be {expected}, got {value}")


def _check_paths(cfg: ExperimentConfig, source: str) -> None:
    for key, value in {"data.root": cfg.data.root, "train.out_dir": cfg.train.out_dir}.items():
        if value is not None and ("\0" in value or (key == "train.out_dir" and not value.strip())):
            raise ConfigError(f"{source}: {key} must be a path (not empty, no NUL character), got {short_repr(value)}")


def _check_synthetic(cfg: ExperimentConfig, source: str) -> None:
    """``data.synthetic`` by the generator's own check (whatever the data set: a typo shows at
    once); for the synthetic set, P identities per batch must exist in it."""
    d = cfg.data
    try:
        synthetic.check_parameters(d.synthetic, where="data.synthetic.")
    except DatasetError as e:
        raise ConfigError(f"{source}: {e}") from None
    if d.dataset != "synthetic":
        return
    ids = d.synthetic.get("num_train_ids", synthetic.DEFAULTS["num_train_ids"]) - d.val_ids
    if ids < d.p:
        raise ConfigError(f"{source}: data.p={d.p} identities per batch, but the synthetic set trains on {ids} "
                          f"(data.synthetic.num_train_ids minus data.val_ids); expected data.p <= {ids}")


def config_to_dict(cfg: ExperimentConfig) -> dict:
    """Plain nested dict (tuples as lists) that ``config_from_dict`` reads back."""
    def plain(x):
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x
    out = {"name": cfg.name} if cfg.name else {}
    for section in _SECTIONS:
        out[section] = plain(dataclasses.asdict(getattr(cfg, section)))
    return out


def _flat_fields(cfg: ExperimentConfig) -> dict[str, Any]:
    out = {}
    for section, values in config_to_dict(cfg).items():
        if isinstance(values, dict):
            out.update({f"{section}.{k}": v for k, v in values.items()})
        else:
            out[section] = values
    return out


def config_diff(old: ExperimentConfig, new: ExperimentConfig, ignore: Sequence[str] = ()) -> list[str]:
    """The fields that differ, one line each: ``"model.scales: saved [2, 4, 6], now [6]"``
    (``ignore``: keys like "train.epochs" that may differ)."""
    a, b = _flat_fields(old), _flat_fields(new)
    lines = []
    for key in list(a) + [k for k in b if k not in a]:
        if key in ignore or a.get(key) == b.get(key):
            continue
        show = functools.partial(json.dumps, default=str)        # as --set takes them: [2, 4, 6], true, null
        lines.append(f"{key}: saved {show(a.get(key))}, now {show(b.get(key))}")
    return lines


# ----------------------------------------------------------------------------- public API

def _parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.epochs=10"`` -> ``(["train", "epochs"], 10)``: the value as YAML (the same loader
    as files: no aliases), or the text itself where it is not YAML."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"override {short_repr(item)}: expected key=value, for example train.epochs=10")
    key, text = item.split("=", 1)
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"override {short_repr(item)}: the value is longer than {MAX_CONFIG_BYTES:,} characters")
    try:
        value = parse_yaml(text) if text.strip() else ""
    except (yaml.YAMLError, ValueError):
        value = text
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"override {short_repr(item)}: expected key=value with a key like train.epochs")
    if len(path) > 1 and path[0] not in _SECTIONS:
        kind = "a setting" if path[0] == "name" else "not a section"
        raise ConfigError(f"override {short_repr(item)}: {short_repr(path[0])} is {kind}, so it has no "
                          f"{short_repr('.'.join(path[1:]))}; sections: {', '.join(_SECTIONS)}")
    return path, value


def _set(raw: dict, path: list[str], value: Any, item: str) -> None:
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {short_repr(item)}: {short_repr(part)} is not a section")
    node[path[-1]] = value


def _apply_raw(raw: dict, overrides: Sequence[str]) -> dict:
    """``raw`` with the overrides applied in order. ``model.table2_row=N`` and ``model.preset=X``
    are the two ways to name an architecture: an override of one replaces the other (and the
    architecture fields set so far, so that the row decides them again); later overrides still apply."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        path, value = _parse_override(item)
        if path[0] == "model" and len(path) == 2 and path[1] in _MODEL_SHORTCUTS and isinstance(raw.get("model"), dict):
            for key in _MODEL_SHORTCUTS + _ARCHITECTURE:
                raw["model"].pop(key, None)
        _set(raw, path, value, item)
    return raw


def _shown(overrides: Sequence[str]) -> str:
    """The overrides as messages name them: each on one line and shortened."""
    return " ".join(one_line(o, 100) for o in overrides)


def apply_overrides(cfg: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    """A new config with ``["train.epochs=10", "model.table2_row=5", ...]`` applied.

    Values are parsed as YAML (``10`` is an int, ``[2, 4]`` a list, ``true`` a bool) and then
    validated like a file's values.
    """
    if not overrides:
        return cfg
    raw = _apply_raw(config_to_dict(cfg), overrides)
    return config_from_dict(raw, source="--set " + _shown(overrides))


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read ``path`` (following ``_base_``), apply ``overrides`` and validate.

    A relative ``data.root`` is taken relative to the project folder (the one holding
    ``configs/``), so runs started from any working directory find the same data.
    """
    path = Path(path)
    raw = _load_tree(path)
    raw = _apply_raw(raw, overrides)
    source = str(path) + (f" (with --set {_shown(overrides)})" if overrides else "")
    raw.setdefault("name", path.stem)
    cfg = config_from_dict(raw, source=source)
    root = Path(os.path.expanduser(cfg.data.root))
    if not root.is_absolute():
        cfg.data.root = str(config_project(path) / root)
    return cfg


def save_config(cfg: ExperimentConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (atomically: temp file in the same folder, then rename)."""
    try:
        with atomic_write(path) as f:
            yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)
    except OutputPathError:                       # a full disk, a read-only folder: names the file already
        raise
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    return Path(path)
