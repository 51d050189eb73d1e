"""The authors' released Market-1501 model, read safely and turned into an ``rrid.RRID``.

Park & Ham released ``pretrained_weights.pth`` (Google Drive, linked from the README of
github.com/cvlab-yonsei/RRID): ``torch.save`` of a whole ``DataParallel(RelationModel(...))``
object, written with PyTorch 0.4.1 and loaded by their ``Evaluate.py`` with
``torch.load(path)``. Loading a pickled object runs whatever the pickle names, needs their
source files, and in their README PyTorch 0.4.1 and two GPUs. Here nothing from the file runs:

1. ``read_pickled_model(path)`` parses both file formats of ``torch.save``: the zip archive of
   PyTorch >= 1.6 (``<name>/data.pkl`` and one ``<name>/data/<key>`` record per storage) and
   the legacy stream of PyTorch 0.4.1 (pickled magic number, protocol version and sys_info,
   then the pickled object, whose persistent ids name the storages, then the pickled list of
   storage keys and each storage's raw bytes: an int64 element count and the little-endian
   data). The pickles are read by ``SafeUnpickler``, whose ``find_class`` knows exactly the
   globals such a file holds (``ALLOWED_GLOBALS``): module classes become inert records of
   their ``__dict__``, tensors are rebuilt from storages read here (dtype from the storage
   type, CPU whatever the device they were saved from). Any other global (``os.system``,
   ``builtins.eval``, ...) stops the load with ``UnsafeCheckpointError`` naming it, before
   anything is called.
2. ``module_tensors(obj)`` walks ``_modules`` and collects ``_parameters`` and ``_buffers`` in
   the authors' names; a plain state dict (``torch.load(weights_only=True)``) is taken as is.
3. ``to_rrid_key`` maps each name onto ``rrid.RRID``'s (723 tensors on each side, a bijection;
   ``module.`` is the DataParallel prefix):

   ==================================================  =========================================
   authors                                             rrid.RRID (i from 0; {0,1} = conv, BN)
   ==================================================  =========================================
   ``base.<name>``                                     ``backbone.<name>``
   ``local_{n}_conv_list.{i}.{0,1}``                   ``heads.P{n}.local.p_layers.{i}.{conv,bn}``
   ``rest_{n}_conv_list.{i}.{0,1}``                    ``heads.P{n}.local.r_layers.{i}.{conv,bn}``
   ``relation_{n}_conv_list.{i}.{0,1}``                ``heads.P{n}.local.R_p.{i}.{conv,bn}``
   ``global_{n}_max_conv_list.0.{0,1}``                ``heads.P{n}.glob.max_layer.{conv,bn}``
   ``global_{n}_rest_conv_list.0.{0,1}``               ``heads.P{n}.glob.cont_layer.{conv,bn}``
   ``global_{n}_pooling_conv_list.0.{0,1}``            ``heads.P{n}.glob.R_g.{conv,bn}``
   ``fc_local_rest_{n}_list.{i}``                      ``heads.P{n}.classifiers.q{i+1}``
   ``fc_local_{n}_list.{i}``, ``fc_rest_{n}_list.{i}`` ``heads.P{n}.classifiers.p_bar{i+1}``, ``r_bar{i+1}``
   ``fc_global{,_max,_rest}_{n}_list.0``               ``heads.P{n}.classifiers.q0``, ``p_bar_max``, ``p_bar_cont``
   ==================================================  =========================================

4. ``load_checkpoint(path)`` builds Ours-F (``RRIDConfig.preset("ours-f")``) with the number of
   classes K read from the classifiers' weight shape (their Market-1501 run trains on 651
   identities unless ``--combine_trainval`` was given, 751 with it) and the width c from the
   reductions, loads the tensors and returns the model in eval mode.
   ``import_authors(path, out)`` (``python -m rrid import-authors WEIGHTS --out CKPT``) writes
   it as an ordinary rrid checkpoint for ``rrid.checkpoint.load_model`` and ``python -m rrid eval``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import pickle
import re
import struct
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from rrid.checkpoint import model_payload, save_checkpoint
from rrid.config import ExperimentConfig
from rrid.errors import CheckpointError
from rrid.files import atomic_write
from rrid.model import RRID, RRIDConfig

__all__ = [
    "WEIGHTS_DRIVE_ID", "MARKET1501_DRIVE_ID", "ALLOWED_GLOBALS", "AuthorsCheckpointError", "UnsafeCheckpointError",
    "SafeUnpickler", "read_pickled_model", "module_tensors", "authors_state_dict", "to_rrid_key", "to_authors_key",
    "convert_state_dict", "load_checkpoint", "import_authors", "standin_modules", "make_standin", "save_standin",
]

# Google Drive file ids in the README of github.com/cvlab-yonsei/RRID (commit 7b003a3):
# "Pre-trained model" (pretrained_weights.pth) and "Datasets: Market1501" (open-reid layout).
WEIGHTS_DRIVE_ID = "1x7Hqb3MY8kPJhhWFHiI-fvwJ8MKS5muy"
MARKET1501_DRIVE_ID = "1XE_FJyAyvhtknjIzTgj4bLPGXDF9EQRz"

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C      # torch/serialization.py, the legacy format's first pickle
PROTOCOL_VERSION = 1001
SCALES = (6, 4, 2)


class AuthorsCheckpointError(CheckpointError):
    """A file that is not (or not all of) the authors' model."""


class UnsafeCheckpointError(AuthorsCheckpointError):
    """The file names a global outside ``ALLOWED_GLOBALS``; nothing from it was run."""


# ----------------------------------------------------------------------------- inert stand-ins

class PickledModule:
    """What a pickled ``nn.Module`` becomes: ``kind`` (its class, "module.Class") and ``state``
    (its ``__dict__``: ``_parameters``, ``_buffers``, ``_modules``, ``training``, ...). Pickle
    rebuilds a module as ``cls.__new__(cls)`` then ``__setstate__(state)``; here both only record."""

    kind = "?"

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"PickledModule({self.kind})"


class StorageType:
    """``torch.FloatStorage`` and friends: only the dtype matters."""

    def __init__(self, name: str, dtype: torch.dtype):
        self.name, self.dtype = name, dtype


class Storage:
    """One storage of the file: ``numel`` elements of ``dtype`` under ``key``; ``data`` is filled in
    (a 1-D CPU tensor) once the bytes are read."""

    def __init__(self, key: str, dtype: torch.dtype, numel: int, location: str):
        self.key, self.dtype, self.numel, self.location = key, dtype, numel, location
        self.data: torch.Tensor | None = None


class StorageView:
    """``numel`` elements of ``root`` from ``offset`` on (legacy files could pickle storage views)."""

    def __init__(self, root: Storage, offset: int, numel: int):
        self.root, self.offset, self.numel = root, offset, numel


class TensorRef:
    """A tensor of the file before its storage bytes are read: storage, offset, size, stride."""

    def __init__(self, storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialize(self) -> torch.Tensor:
        s, offset = self.storage, self.offset
        if isinstance(s, StorageView):
            s, offset = s.root, offset + s.offset
        extent = offset + sum((n - 1) * st for n, st in zip(self.size, self.stride)) + 1
        if any(n == 0 for n in self.size):
            extent = 0
        if offset < 0 or any(st < 0 for st in self.stride) or extent > s.numel:
            raise AuthorsCheckpointError(f"a tensor of size {self.size} reaches past the end of storage {s.key}")
        return torch.as_strided(s.data, self.size, self.stride, offset).clone()


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, (Storage, StorageView)):
        raise AuthorsCheckpointError(f"_rebuild_tensor_v2 got {type(storage).__name__}, expected a storage")
    ints = all(isinstance(v, int) for v in (storage_offset, *size, *stride))
    if not ints or len(size) != len(stride):
        raise AuthorsCheckpointError(f"_rebuild_tensor_v2 got size {size!r}, stride {stride!r}")
    return TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None, state=None):
    """``torch._utils._rebuild_parameter(_with_state)`` and PyTorch 0.4's ``Parameter(data, requires_grad)``."""
    if not isinstance(data, TensorRef):
        raise AuthorsCheckpointError(f"a Parameter wraps {type(data).__name__}, expected a tensor")
    return data


def _thnn_backend():
    """PyTorch <= 1.0 pickled ``Module._backend`` as a call of this function (no arguments)."""
    return None


class _Device:
    """``torch.device("cuda", 0)``: modern DataParallel keeps one (``src_device_obj``)."""

    def __init__(self, *args):
        self.args = args


def _module_class(qualified: str) -> type:
    return type(qualified.rsplit(".", 1)[1], (PickledModule,), {"kind": qualified})


_MODULES = [
    "Relation_final_ver_last_multi_scale_large_losses.RelationModel", "resnet.ResNet", "resnet.Bottleneck",
    "torch.nn.parallel.data_parallel.DataParallel", "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.batchnorm.BatchNorm2d", "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.pooling.MaxPool2d", "torch.nn.modules.linear.Linear",
    "torch.nn.modules.container.Sequential", "torch.nn.modules.container.ModuleList",
]
_STORAGES = {"FloatStorage": torch.float32, "LongStorage": torch.int64}

#: (module, name) as written in the pickle -> what the file gets instead of the real object.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{tuple(q.rsplit(".", 1)): _module_class(q) for q in _MODULES},
    **{(m, n): StorageType(f"{m}.{n}", dt) for n, dt in _STORAGES.items() for m in ("torch", "torch.cuda")},
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.nn.parameter", "Parameter"): _rebuild_parameter,            # PyTorch 0.4's Parameter.__reduce_ex__
    ("collections", "OrderedDict"): OrderedDict,
    ("__builtin__", "set"): set,                                         # protocol 2 writes Python 2 names
    ("builtins", "set"): set,
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _thnn_backend,  # Module._backend in PyTorch 0.4
    ("torch", "device"): _Device,                                        # DataParallel.src_device_obj (GPU saves)
}


def _fresh(template):
    """A copy of an ``ALLOWED_GLOBALS`` entry for one load: a pickle may set attributes on what
    ``find_class`` returns (BUILD), and that must not change how the next file is read."""
    if isinstance(template, type) and issubclass(template, (PickledModule, _Device)):
        return type(template.__name__, (template,), {})
    if isinstance(template, StorageType):
        return StorageType(template.name, template.dtype)
    if template in (OrderedDict, set):           # built-in types: their attributes cannot be set
        return template
    return lambda *args, **kwargs: template(*args, **kwargs)


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that knows only ``ALLOWED_GLOBALS`` and resolves torch's persistent ids
    (storages, and in legacy files module classes) to the inert objects above.

    ``storages`` collects every storage the pickle names, by key, for the caller to fill in.
    """

    def __init__(self, file, source: str, storages: dict[str, Storage] | None = None):
        super().__init__(file)
        self.source, self.storages = source, storages if storages is not None else {}
        self.stand_ins: dict[tuple[str, str], Any] = {}

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafeCheckpointError(
                f"{self.source} names the global {module}.{name}, which a pickled RelationModel does not hold "
                "and which could run code when loaded: refused, nothing from the file was executed")
        if (module, name) not in self.stand_ins:
            self.stand_ins[(module, name)] = _fresh(ALLOWED_GLOBALS[(module, name)])
        return self.stand_ins[(module, name)]

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise AuthorsCheckpointError(f"{self.source}: unexpected persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module" and len(pid) == 4 and isinstance(pid[1], type) and issubclass(pid[1], PickledModule):
            return pid[1]                                      # legacy: (module, class, source file, source)
        if kind == "storage" and len(pid) in (5, 6):          # zip: 5 entries, legacy: + view metadata
            storage_type, key, location, numel = pid[1:5]
            view = pid[5] if len(pid) == 6 else None
            if not isinstance(storage_type, StorageType) or not isinstance(numel, int) or numel < 0:
                raise AuthorsCheckpointError(f"{self.source}: unexpected storage id {pid[:5]!r}")
            key = key.decode("ascii") if isinstance(key, bytes) else str(key)
            storage = self.storages.setdefault(key, Storage(key, storage_type.dtype, numel, str(location)))
            if storage.dtype != storage_type.dtype:
                raise AuthorsCheckpointError(f"{self.source}: storage {key} is read as two dtypes")
            if view is None:
                return storage
            _, offset, size = view
            if not (isinstance(offset, int) and isinstance(size, int) and 0 <= offset and offset + size <= numel):
                raise AuthorsCheckpointError(f"{self.source}: storage view {view!r} outside storage {key}")
            return StorageView(storage, offset, size)
        raise AuthorsCheckpointError(f"{self.source}: unexpected persistent id {str(pid)[:80]}")


# ----------------------------------------------------------------------------- the two file formats

def _little_endian_tensor(raw: bytes | memoryview, dtype: torch.dtype, numel: int) -> torch.Tensor:
    np_dtype = np.dtype({torch.float32: "<f4", torch.int64: "<i8"}[dtype])
    array = np.frombuffer(raw, dtype=np_dtype, count=numel).astype(np_dtype.newbyteorder("="))
    return torch.from_numpy(array)


def _read_zip(data: bytes, source: str) -> tuple[Any, dict[str, Storage]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise AuthorsCheckpointError(f"{source} is a zip archive but not one written by torch.save (no <name>/data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        storages: dict[str, Storage] = {}
        obj = SafeUnpickler(io.BytesIO(zf.read(pickles[0])), source, storages).load()
        order = zf.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
        for key, s in storages.items():
            record = f"{prefix}data/{key}"
            if record not in names:
                raise AuthorsCheckpointError(f"{source}: storage record {record} is missing")
            raw = zf.read(record)
            nbytes = s.numel * torch.empty((), dtype=s.dtype).element_size()
            if len(raw) < nbytes:
                raise AuthorsCheckpointError(f"{source}: storage record {record} holds {len(raw)} bytes, expected {nbytes}")
            if order == "big":
                np_dtype = np.dtype({torch.float32: ">f4", torch.int64: ">i8"}[s.dtype])
                s.data = torch.from_numpy(np.frombuffer(raw, np_dtype, s.numel).astype(np_dtype.newbyteorder("=")))
            else:
                s.data = _little_endian_tensor(raw, s.dtype, s.numel)
    return obj, storages


def _read_legacy(data: bytes, source: str) -> tuple[Any, dict[str, Storage]]:
    f = io.BytesIO(data)

    def load(storages=None):
        return SafeUnpickler(f, source, storages).load()

    try:
        magic = load()
    except AuthorsCheckpointError:
        raise
    except Exception:
        magic = None
    if magic != MAGIC_NUMBER:
        raise AuthorsCheckpointError(f"{source} is not a file written by torch.save (neither a zip archive nor "
                                     "the legacy format that starts with torch's magic number)")
    protocol, sys_info = load(), load()
    if protocol != PROTOCOL_VERSION or not isinstance(sys_info, dict):
        raise AuthorsCheckpointError(f"{source}: legacy torch.save protocol {protocol!r}, expected {PROTOCOL_VERSION}")
    storages: dict[str, Storage] = {}
    obj = load(storages)
    keys = load()
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages):
        raise AuthorsCheckpointError(f"{source}: the list of storage keys does not match the storages the pickle names")
    for key in keys:           # each: int64 element count, then the elements, little-endian
        s = storages[str(key)]
        element = torch.empty((), dtype=s.dtype).element_size()
        header = f.read(8)
        size = struct.unpack("<q", header)[0] if len(header) == 8 else None
        if size != s.numel and len(header) == 8:   # PyTorch 0.4.1 wrote the count in the machine's byte order
            size = struct.unpack(">q", header)[0]
        if size != s.numel:
            raise AuthorsCheckpointError(f"{source}: storage {key} is truncated or its size header is wrong")
        raw = f.read(size * element)
        if len(raw) != size * element:
            raise AuthorsCheckpointError(f"{source}: storage {key} is truncated ({len(raw)} of {size * element} bytes)")
        s.data = _little_endian_tensor(raw, s.dtype, size)
    return obj, storages


def read_pickled_model(path: str | os.PathLike) -> Any:
    """The object ``torch.save`` wrote to ``path``, rebuilt from inert stand-ins: modules are
    ``PickledModule`` records, tensors CPU ``torch.Tensor`` s. Either file format; nothing runs."""
    path = Path(path)
    if not path.is_file():
        raise AuthorsCheckpointError(f"authors' weights {path} do not exist")
    data = path.read_bytes()
    try:
        obj, _ = (_read_zip if data[:4] == b"PK\x03\x04" else _read_legacy)(data, str(path))
        return _materialize(obj, {})
    except AuthorsCheckpointError:
        raise
    except Exception as e:     # a truncated or corrupted file: say so, in one line
        raise AuthorsCheckpointError(f"{path} cannot be read; it is truncated or corrupted "
                                     f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def _materialize(obj, memo: dict):
    """Replace every TensorRef by its tensor (in place in dicts and module states)."""
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, TensorRef):
        memo[id(obj)] = out = obj.materialize()
        return out
    memo[id(obj)] = obj
    if isinstance(obj, PickledModule):
        if isinstance(getattr(obj, "state", None), dict):
            _materialize(obj.state, memo)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            obj[k] = _materialize(v, memo)
    elif isinstance(obj, list):
        obj[:] = [_materialize(v, memo) for v in obj]
    elif isinstance(obj, tuple):
        memo[id(obj)] = out = tuple(_materialize(v, memo) for v in obj)
        return out
    return obj


# ----------------------------------------------------------------------------- tensors by name

def module_tensors(module: PickledModule, prefix: str = "") -> "OrderedDict[str, torch.Tensor]":
    """The parameters and persistent buffers of a pickled module tree, by dotted name (what
    ``state_dict()`` gives): ``_parameters`` and ``_buffers`` of each module, then ``_modules``."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    state = getattr(module, "state", None)
    if not isinstance(state, dict):
        raise AuthorsCheckpointError(f"pickled module {module.kind} at {prefix or '<top>'!r} has no state dict")
    skip = state.get("_non_persistent_buffers_set") or set()
    for part in ("_parameters", "_buffers"):
        entries = state.get(part, {})
        if not isinstance(entries, dict):
            raise AuthorsCheckpointError(f"{module.kind}.{part} at {prefix or '<top>'!r} is not a dict")
        for name, t in entries.items():
            if t is None or name in skip:
                continue
            if not isinstance(t, torch.Tensor):
                raise AuthorsCheckpointError(f"{prefix}{name} is a {type(t).__name__}, expected a tensor")
            out[prefix + name] = t
    children = state.get("_modules", {})
    if not isinstance(children, dict):
        raise AuthorsCheckpointError(f"{module.kind}._modules at {prefix or '<top>'!r} is not a dict")
    for name, child in children.items():
        if child is None:
            continue
        if not isinstance(child, PickledModule):
            raise AuthorsCheckpointError(f"{prefix}{name} is a {type(child).__name__}, expected a module")
        out.update(module_tensors(child, f"{prefix}{name}."))
    return out


def _strip_module_prefix(sd: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    if sd and all(k.startswith("module.") for k in sd):
        return OrderedDict((k[len("module."):], v) for k, v in sd.items())
    return OrderedDict(sd)


def authors_state_dict(path: str | os.PathLike) -> "OrderedDict[str, torch.Tensor]":
    """The tensors of the authors' file in their names, without the DataParallel ``module.``.

    A plain state dict is read with ``torch.load(weights_only=True)``; anything else (the whole
    pickled model) with ``SafeUnpickler``, which refuses unexpected globals.
    """
    path = Path(path)
    if not path.is_file():
        raise AuthorsCheckpointError(f"authors' weights {path} do not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:          # not a plain state dict (or not readable): the restricted reader decides
        obj = None
    if isinstance(obj, Mapping) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return _strip_module_prefix(obj)
    obj = read_pickled_model(path)
    if isinstance(obj, PickledModule) and obj.kind.endswith(".DataParallel"):
        inner = obj.state.get("_modules", {}).get("module") if isinstance(getattr(obj, "state", None), dict) else None
        if not isinstance(inner, PickledModule):
            raise AuthorsCheckpointError(f"{path}: the pickled DataParallel holds no module")
        obj = inner
    if isinstance(obj, PickledModule):
        if not obj.kind.endswith(".RelationModel"):
            raise AuthorsCheckpointError(f"{path} holds a pickled {obj.kind}, expected the authors' RelationModel "
                                         "(inside DataParallel)")
        return module_tensors(obj)
    if isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _strip_module_prefix(obj)
    raise AuthorsCheckpointError(f"{path} holds a {type(obj).__name__}, expected the authors' pickled "
                                 "DataParallel(RelationModel) or a state dict in their names")


# ----------------------------------------------------------------------------- names

_LAYER = re.compile(r"(local|rest|relation)_(\d+)_conv_list\.(\d+)\.([01])\.(\w+)")
_GLOBAL = re.compile(r"global_(\d+)_(max|rest|pooling)_conv_list\.0\.([01])\.(\w+)")
_FC_LOCAL = re.compile(r"fc_(local_rest|local|rest)_(\d+)_list\.(\d+)\.(weight|bias)")
_FC_GLOBAL = re.compile(r"fc_(global|global_max|global_rest)_(\d+)_list\.0\.(weight|bias)")
_LOCAL_NAMES = {"local": "p_layers", "rest": "r_layers", "relation": "R_p"}
_GLOBAL_NAMES = {"max": "max_layer", "rest": "cont_layer", "pooling": "R_g"}
_FC_LOCAL_NAMES = {"local_rest": "q", "local": "p_bar", "rest": "r_bar"}
_FC_GLOBAL_NAMES = {"global": "q0", "global_max": "p_bar_max", "global_rest": "p_bar_cont"}
_CONV_BN = ("conv", "bn")


def to_rrid_key(key: str) -> str | None:
    """The ``rrid.RRID`` name of one of the authors' tensor names (no ``module.``), or None."""
    if key.startswith("base."):
        return "backbone." + key[len("base."):]
    if m := _LAYER.fullmatch(key):
        kind, n, i, j, t = m.groups()
        return f"heads.P{n}.local.{_LOCAL_NAMES[kind]}.{i}.{_CONV_BN[int(j)]}.{t}"
    if m := _GLOBAL.fullmatch(key):
        n, kind, j, t = m.groups()
        return f"heads.P{n}.glob.{_GLOBAL_NAMES[kind]}.{_CONV_BN[int(j)]}.{t}"
    if m := _FC_LOCAL.fullmatch(key):
        kind, n, i, t = m.groups()
        return f"heads.P{n}.classifiers.{_FC_LOCAL_NAMES[kind]}{int(i) + 1}.{t}"
    if m := _FC_GLOBAL.fullmatch(key):
        kind, n, t = m.groups()
        return f"heads.P{n}.classifiers.{_FC_GLOBAL_NAMES[kind]}.{t}"
    return None


_R_LOCAL = re.compile(r"heads\.P(\d+)\.local\.(p_layers|r_layers|R_p)\.(\d+)\.(conv|bn)\.(\w+)")
_R_GLOBAL = re.compile(r"heads\.P(\d+)\.glob\.(max_layer|cont_layer|R_g)\.(conv|bn)\.(\w+)")
_R_FC_LOCAL = re.compile(r"heads\.P(\d+)\.classifiers\.(q|p_bar|r_bar)([1-9]\d*)\.(weight|bias)")
_R_FC_GLOBAL = re.compile(r"heads\.P(\d+)\.classifiers\.(q0|p_bar_max|p_bar_cont)\.(weight|bias)")


def _inverse(names: dict) -> dict:
    return {v: k for k, v in names.items()}


def to_authors_key(key: str) -> str | None:
    """The inverse of ``to_rrid_key``: the authors' name of an ``rrid.RRID`` tensor, or None."""
    if key.startswith("backbone."):
        return "base." + key[len("backbone."):]
    if m := _R_LOCAL.fullmatch(key):
        n, kind, i, layer, t = m.groups()
        return f"{_inverse(_LOCAL_NAMES)[kind]}_{n}_conv_list.{i}.{_CONV_BN.index(layer)}.{t}"
    if m := _R_GLOBAL.fullmatch(key):
        n, kind, layer, t = m.groups()
        return f"global_{n}_{_inverse(_GLOBAL_NAMES)[kind]}_conv_list.0.{_CONV_BN.index(layer)}.{t}"
    if m := _R_FC_LOCAL.fullmatch(key):
        n, kind, i, t = m.groups()
        return f"fc_{_inverse(_FC_LOCAL_NAMES)[kind]}_{n}_list.{int(i) - 1}.{t}"
    if m := _R_FC_GLOBAL.fullmatch(key):
        n, kind, t = m.groups()
        return f"fc_{_inverse(_FC_GLOBAL_NAMES)[kind]}_{n}_list.0.{t}"
    return None


def _listing(names, limit: int = 12) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{len(names)}: {', '.join(names[:limit])}{more}"


def convert_state_dict(theirs: Mapping[str, torch.Tensor], model: torch.nn.Module,
                       source: str = "the authors' state dict") -> "OrderedDict[str, torch.Tensor]":
    """``model``'s state dict filled from ``theirs`` (the authors' names, no ``module.``).

    Every tensor of ``model`` must come from exactly one of theirs and every one of theirs must
    be used (a BatchNorm's ``num_batches_tracked``, absent from some PyTorch 0.4 files, is then
    kept from ``model``); an error lists the missing, unexpected and misshapen tensors.
    """
    ours = model.state_dict()
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    unexpected = []
    for key, value in theirs.items():
        target = to_rrid_key(key)
        if target is None or target not in ours:
            unexpected.append(key)
        else:
            out[target] = value
    missing = [k for k in ours if k not in out and not k.endswith("num_batches_tracked")]
    misshapen = [f"{to_authors_key(k)} {tuple(v.shape)} (expected {tuple(ours[k].shape)})"
                 for k, v in out.items() if v.shape != ours[k].shape]
    problems = []
    if missing:
        problems.append(f"missing tensors ({_listing(to_authors_key(k) or k for k in missing)})")
    if unexpected:
        problems.append(f"unexpected tensors ({_listing(unexpected)})")
    if misshapen:
        problems.append(f"tensors of the wrong shape ({_listing(misshapen)})")
    if problems:
        raise AuthorsCheckpointError(f"{source} does not fit the authors' Ours-F model: " + "; ".join(problems))
    for k in ours:
        out.setdefault(k, ours[k])          # num_batches_tracked the file did not have
    return OrderedDict((k, out[k].to(ours[k].dtype)) for k in ours)


def _infer_sizes(theirs: Mapping[str, torch.Tensor], source: str) -> tuple[int, int]:
    """(K, c): classes from the classifier ``fc_global_6_list.0.weight`` (K x c), width from it."""
    fc = theirs.get(f"fc_global_{SCALES[0]}_list.0.weight")
    if fc is None or fc.dim() != 2:
        raise AuthorsCheckpointError(f"{source}: no classifier fc_global_6_list.0.weight (K x c) to read the "
                                     "number of classes from; is this the authors' multi-scale model?")
    return int(fc.shape[0]), int(fc.shape[1])


def load_checkpoint(path: str | os.PathLike, device: Any = "cpu") -> "torch.nn.Module":
    """The authors' trained model as an ``rrid.RRID`` (Ours-F, ResNet-50), in eval mode.

    K (the classes) and c (256 in the paper) are read from the classifier weights: 751 when
    the authors trained on all of Market-1501's training identities, 651 with their default
    hold-out of 100. Refuses files with unexpected globals or unexpected tensors.
    """
    theirs = authors_state_dict(path)
    num_classes, reduced_dim = _infer_sizes(theirs, str(path))
    model = RRID(RRIDConfig.preset("ours-f", reduced_dim=reduced_dim), num_classes)
    model.load_state_dict(convert_state_dict(theirs, model, str(path)))
    return model.to(device).eval()


def import_authors(weights: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the authors' model as an rrid checkpoint (``rrid.checkpoint.model_payload``, written
    atomically by ``rrid.checkpoint.save_checkpoint``). Returns ``out``."""
    model = load_checkpoint(weights)
    cfg = ExperimentConfig(model=model.config, name="authors_ours_f")
    payload = model_payload(model, cfg)
    payload["source"] = f"rrid.authors.import_authors({Path(weights).name})"
    return save_checkpoint(payload, out)


# ----------------------------------------------------------------------------- the stand-in

STANDIN_MODULES = ("resnet", "Relation_final_ver_last_multi_scale_large_losses")
_standin_cache: dict[str, Any] = {}


@contextlib.contextmanager
def standin_modules():
    """Make the stand-in modules importable under the authors' names for the duration of the
    block, and only then (``sys.modules`` and ``sys.path`` are as before afterwards).

    Yields the ``Relation_final_ver_last_multi_scale_large_losses`` stand-in. The module objects
    are created once and reused, so that objects built in one block pickle in a later one.
    """
    saved = {name: sys.modules.pop(name) for name in STANDIN_MODULES if name in sys.modules}
    try:
        if not _standin_cache:
            folder = str(Path(__file__).with_name("authors_standin"))
            sys.path.insert(0, folder)
            try:
                for name in STANDIN_MODULES:
                    _standin_cache[name] = importlib.import_module(name)
            finally:
                sys.path.remove(folder)
        sys.modules.update(_standin_cache)
        yield _standin_cache[STANDIN_MODULES[1]]
    finally:
        for name in STANDIN_MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def make_standin(num_classes: int = 751, reduced_dim: int = 256, seed: int = 0) -> "torch.nn.Module":
    """``DataParallel(RelationModel(num_classes, reduced_dim))`` from the stand-in modules, with
    random weights and random BatchNorm statistics (so that eval mode uses them), in eval mode.

    ``model.module(images)`` returns (15 features, 45 logits); ``torch.cat(features, 1)`` is the
    3,840-d embedding that ``rrid.RRID`` computes in eval mode.
    """
    with standin_modules() as their:
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = their.RelationModel(num_classes=num_classes, reduced_dim=reduced_dim)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    n = m.num_features
                    m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                    m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                    m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                    m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                    m.num_batches_tracked.fill_(int(torch.randint(1, 10**6, (), generator=gen)))
        return torch.nn.DataParallel(model).cpu().eval()


def save_standin(model: "torch.nn.Module", path: str | os.PathLike, legacy: bool = False) -> Path:
    """``torch.save`` the whole stand-in object, as the authors saved theirs: the zip format, or
    with ``legacy=True`` the pre-1.6 format that PyTorch 0.4.1 wrote."""
    with standin_modules(), atomic_write(path, "wb") as f:
        torch.save(model, f, _use_new_zipfile_serialization=not legacy)
    return Path(path)
