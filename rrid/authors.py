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
   anything is called. Every size the file declares is bounded before anything of that size is
   allocated (the file is untrusted): the pickles (``MAX_PICKLE_BYTES``, read by the pure-Python
   unpickler, which never allocates a declared length before reading it), the zip directory
   (``MAX_ZIP_DIRECTORY_BYTES``), each storage (its declared count against what the file or zip
   record really holds) and each tensor (within its storage: offset + sum((size_i - 1) stride_i)
   + 1 <= the storage's count; no negative size, stride or offset), and all of them together:
   the storages and the tensors built on them (counted at what a copy of each would take; they
   are views) may take at most ``max_bytes`` (``MAX_BYTES``, 1 GiB; the released model counts
   about 400 MB). A zip record is decompressed in chunks, only up to the size of its storage.
2. ``module_tensors(obj)`` walks ``_modules`` and collects ``_parameters`` and ``_buffers`` in
   the authors' names; a plain state dict (``torch.save(model.state_dict())``, read by the same
   reader) is taken as is.
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
   reductions, loads the tensors and returns the model in eval mode. The model those sizes
   describe is first built without memory (on the ``meta`` device) and must fit ``MAX_BYTES``.
   ``import_authors(path, out)`` (``python -m rrid import-authors WEIGHTS --out CKPT``) writes
   it as an ordinary rrid checkpoint for ``rrid.checkpoint.load_model`` and ``python -m rrid eval``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
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
from rrid.errors import CheckpointError, listing, one_line, short_repr
from rrid.files import atomic_write, file_problem
from rrid.model import RRID, RRIDConfig

__all__ = [
    "WEIGHTS_DRIVE_ID", "MARKET1501_DRIVE_ID", "ALLOWED_GLOBALS", "AuthorsCheckpointError", "UnsafeCheckpointError",
    "SafeUnpickler", "read_pickled_model", "MAX_BYTES", "MAX_PICKLE_BYTES", "module_tensors", "authors_state_dict",
    "to_rrid_key", "to_authors_key",
    "convert_state_dict", "load_checkpoint", "import_authors", "standin_modules", "make_standin", "save_standin",
]

# Google Drive file ids in the README of github.com/cvlab-yonsei/RRID (commit 7b003a3):
# "Pre-trained model" (pretrained_weights.pth) and "Datasets: Market1501" (open-reid layout).
WEIGHTS_DRIVE_ID = "1x7Hqb3MY8kPJhhWFHiI-fvwJ8MKS5muy"
MARKET1501_DRIVE_ID = "1XE_FJyAyvhtknjIzTgj4bLPGXDF9EQRz"

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C      # torch/serialization.py, the legacy format's first pickle
PROTOCOL_VERSION = 1001
SCALES = (6, 4, 2)

# Bounds on what an untrusted file may make this reader allocate (the released model: a 200 MB
# file, 165 KB of pickle, 729 zip records, 200 MB of storages and as much again of tensors)
MAX_BYTES = 1 << 30                 # storages + tensors of one file, and the file itself
MAX_PICKLE_BYTES = 4 << 20          # the pickled object (its objects may take ~70x its bytes)
MAX_ZIP_DIRECTORY_BYTES = 4 << 20   # the zip's central directory (zipfile keeps ~400 B per entry)
MAX_DEPTH = 64                      # nesting of the pickled object (the model nests 8 deep)
MAX_DIMS = 16                       # dimensions of one tensor


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

    def materialize(self, budget: "_Budget", where: str) -> torch.Tensor:
        """The tensor, once its storage is read: a view of the storage (as ``torch.load`` gives;
        nothing is copied). Its extent (offset + sum((size_i - 1) stride_i) + 1, 0 when a size is
        0) must lie in the storage (or storage view), and its bytes (numel x element size, what a
        copy of it would take) count against ``budget``."""
        s, offset, bound = self.storage, self.offset, self.storage.numel
        if isinstance(s, StorageView):
            s, offset, bound = s.root, offset + s.offset, s.offset + s.numel
        what = f"tensor {where} (size {short_repr(self.size)}, stride {short_repr(self.stride)}) on storage {s.key}"
        if self.offset < 0 or any(n < 0 for n in self.size) or any(st < 0 for st in self.stride):
            raise AuthorsCheckpointError(f"{budget.source}: {what} has a negative offset, size or stride")
        numel = math.prod(self.size)
        extent = 0 if numel == 0 else offset + sum((n - 1) * st for n, st in zip(self.size, self.stride)) + 1
        if extent > bound:
            raise AuthorsCheckpointError(f"{budget.source}: {what} reaches past the end of its storage "
                                         f"({extent:,} elements needed, {bound:,} there)")
        budget.take(numel * s.data.element_size(), what)
        return torch.as_strided(s.data, self.size, self.stride, offset)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, (Storage, StorageView)):
        raise AuthorsCheckpointError(f"_rebuild_tensor_v2 got {type(storage).__name__}, expected a storage")
    shaped = isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list))
    if not shaped or len(size) != len(stride) or len(size) > MAX_DIMS or not all(
            isinstance(v, int) for v in (storage_offset, *size, *stride)):
        raise AuthorsCheckpointError(f"_rebuild_tensor_v2 got offset {short_repr(storage_offset)}, size "
                                     f"{short_repr(size)}, stride {short_repr(stride)}; expected integers, at most "
                                     f"{MAX_DIMS} dimensions")
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
_STORAGES = {"FloatStorage": torch.float32, "LongStorage": torch.int64, "DoubleStorage": torch.float64,
             "HalfStorage": torch.float16}
_NUMPY = {torch.float32: "f4", torch.int64: "i8", torch.float64: "f8", torch.float16: "f2"}

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


class SafeUnpickler(pickle._Unpickler):
    """An unpickler that knows only ``ALLOWED_GLOBALS`` and resolves torch's persistent ids
    (storages, and in legacy files module classes) to the inert objects above.

    ``storages`` collects every storage the pickle names, by key, for the caller to fill in.
    It is the standard library's pure-Python unpickler (``pickle._Unpickler``): it asks the file
    for a declared length before it allocates it, where the C one first allocates the length a
    BINBYTES8 or BINUNICODE8 opcode declares; the pickles here are small (165 KB), so its speed
    does not matter.
    """

    def __init__(self, file, source: str, storages: dict[str, Storage] | None = None):
        super().__init__(file)
        self.source, self.storages = source, storages if storages is not None else {}
        self.stand_ins: dict[tuple[str, str], Any] = {}

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafeCheckpointError(
                f"{self.source} names the global {one_line(f'{module}.{name}', 120)}, which a pickled RelationModel "
                "does not hold and which could run code when loaded: refused, nothing from the file was executed")
        if (module, name) not in self.stand_ins:
            self.stand_ins[(module, name)] = _fresh(ALLOWED_GLOBALS[(module, name)])
        return self.stand_ins[(module, name)]

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise AuthorsCheckpointError(f"{self.source}: unexpected persistent id {short_repr(pid)}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module" and len(pid) == 4 and isinstance(pid[1], type) and issubclass(pid[1], PickledModule):
            return pid[1]                                      # legacy: (module, class, source file, source)
        if kind == "storage" and len(pid) in (5, 6):          # zip: 5 entries, legacy: + view metadata
            storage_type, key, location, numel = pid[1:5]
            view = pid[5] if len(pid) == 6 else None
            if not (isinstance(storage_type, StorageType) and isinstance(numel, int) and numel >= 0
                    and isinstance(key, (str, bytes, int)) and len(str(key)) <= 64):
                raise AuthorsCheckpointError(f"{self.source}: unexpected storage id {short_repr(pid[:5])}")
            key = key.decode("ascii") if isinstance(key, bytes) else str(key)
            storage = self.storages.setdefault(key, Storage(key, storage_type.dtype, numel, one_line(location, 40)))
            if storage.dtype != storage_type.dtype or storage.numel != numel:
                raise AuthorsCheckpointError(f"{self.source}: storage {key} is declared twice, with different "
                                             "dtypes or sizes")
            if view is None:
                return storage
            _, offset, size = view
            if not (isinstance(offset, int) and isinstance(size, int) and 0 <= offset and offset + size <= numel):
                raise AuthorsCheckpointError(f"{self.source}: storage view {short_repr(view)} outside storage {key}")
            return StorageView(storage, offset, size)
        raise AuthorsCheckpointError(f"{self.source}: unexpected persistent id {short_repr(pid)}")


# ----------------------------------------------------------------------------- the two file formats

CHUNK = 1 << 20


class _Budget:
    """The bytes this load may still allocate for storages and tensors (``max_bytes`` in all)."""

    def __init__(self, max_bytes: int, source: str):
        self.max_bytes, self.used, self.source = max_bytes, 0, source

    def take(self, nbytes: int, what: str) -> None:
        if self.used + nbytes > self.max_bytes:
            raise AuthorsCheckpointError(
                f"{self.source}: {what} needs {nbytes:,} bytes, beyond the {self.max_bytes:,} bytes this reader "
                f"allows a file ({self.used:,} taken before; the authors' model needs about 400 MB): refused")
        self.used += nbytes


class _BoundedPickle:
    """The file as the unpickler reads it: at most ``limit`` bytes in all (``MAX_PICKLE_BYTES``)."""

    def __init__(self, f, limit: int, source: str):
        self.f, self.left, self.source = f, limit, source

    def _refuse(self, n) -> AuthorsCheckpointError:
        return AuthorsCheckpointError(f"{self.source}: the pickled object asks for {n:,} more bytes, beyond the "
                                      f"{MAX_PICKLE_BYTES:,} bytes of pickle this reader accepts (the authors' "
                                      "model has 165 KB): refused")

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self.left:
            raise self._refuse(n if n is not None and n >= 0 else self.left + 1)
        data = self.f.read(n)
        self.left -= len(data)
        return data

    def readline(self) -> bytes:
        data = self.f.readline(self.left + 1)
        self.left -= len(data)
        if self.left < 0:
            raise self._refuse(len(data))
        return data


def _read_storage(f, s: Storage, nbytes: int, order: str = "little") -> None:
    """Fill ``s.data`` with its ``nbytes`` bytes from ``f``, read in chunks into one array."""
    np_dtype = np.dtype(("<" if order == "little" else ">") + _NUMPY[s.dtype])
    array = np.empty(s.numel, dtype=np_dtype)
    view, done = memoryview(array).cast("B"), 0
    while done < nbytes:
        n = f.readinto(view[done: done + CHUNK])
        if not n:
            raise AuthorsCheckpointError(f"storage {s.key} is truncated ({done:,} of {nbytes:,} bytes)")
        done += n
    if not np_dtype.isnative:
        array = array.astype(np_dtype.newbyteorder("="))
    s.data = torch.from_numpy(array)


def _check_zip_directory(f, size: int, source: str) -> None:
    """Refuse a zip whose central directory (which ``zipfile`` reads whole, keeping ~400 bytes per
    entry) is larger than ``MAX_ZIP_DIRECTORY_BYTES``, from its end records, before it is parsed."""
    tail_size = min(size, 22 + 0xFFFF)
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    end = tail.rfind(b"PK\x05\x06")
    if end < 0 or end + 22 > len(tail):
        return                                    # not a zip after all: zipfile says so
    sizes = [struct.unpack("<I", tail[end + 12: end + 16])[0]]
    if end >= 76 and tail[end - 20: end - 16] == b"PK\x06\x07":      # the zip64 locator
        record = tail[end - 76: end - 20]        # the zip64 end record, which zipfile then reads instead
        if record[:4] == b"PK\x06\x06":
            sizes.append(struct.unpack("<Q", record[40:48])[0])
    if max(sizes) > MAX_ZIP_DIRECTORY_BYTES:
        raise AuthorsCheckpointError(f"{source}: its zip directory declares {max(sizes):,} bytes, beyond the "
                                     f"{MAX_ZIP_DIRECTORY_BYTES:,} this reader accepts (torch.save writes about "
                                     "100 bytes per tensor): refused")


def _read_zip(f, size: int, source: str, budget: _Budget) -> tuple[Any, dict[str, Storage]]:
    _check_zip_directory(f, size, source)
    f.seek(0)
    with zipfile.ZipFile(f) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        pickles = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise AuthorsCheckpointError(f"{source} is a zip archive but not one written by torch.save (no <name>/data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        with zf.open(infos[pickles[0]]) as r:
            data = r.read(MAX_PICKLE_BYTES + 1)
        storages: dict[str, Storage] = {}
        obj = SafeUnpickler(_BoundedPickle(io.BytesIO(data), MAX_PICKLE_BYTES, source), source, storages).load()
        order = "little"
        if prefix + "byteorder" in infos:
            with zf.open(infos[prefix + "byteorder"]) as r:
                order = r.read(16).decode("ascii", "replace").strip()
        if order not in ("little", "big"):
            raise AuthorsCheckpointError(f"{source}: byteorder {short_repr(order)}, expected 'little' or 'big'")
        nbytes = {key: s.numel * _element_size(s.dtype) for key, s in storages.items()}
        budget.take(sum(nbytes.values()), f"its {len(storages)} storages")
        for key, s in storages.items():
            record = f"{prefix}data/{key}"
            if record not in infos:
                raise AuthorsCheckpointError(f"{source}: storage record {record} is missing")
            info = infos[record]
            if info.file_size < nbytes[key]:
                raise AuthorsCheckpointError(f"{source}: storage record {record} holds {info.file_size} bytes, "
                                             f"expected {nbytes[key]}")
            with zf.open(info) as r:           # decompressed in chunks, up to the storage's size only
                try:
                    _read_storage(r, s, nbytes[key], order)
                except AuthorsCheckpointError as e:
                    raise AuthorsCheckpointError(f"{source}: record {record}: {e}") from None
                if info.file_size == nbytes[key]:
                    r.read(1)                  # the end of the record: zipfile checks its CRC there
    return obj, storages


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _read_legacy(f, size: int, source: str, budget: _Budget) -> tuple[Any, dict[str, Storage]]:
    stream = _BoundedPickle(f, MAX_PICKLE_BYTES, source)

    def load(storages=None):
        return SafeUnpickler(stream, source, storages).load()

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
        raise AuthorsCheckpointError(f"{source}: legacy torch.save protocol {short_repr(protocol)}, "
                                     f"expected {PROTOCOL_VERSION}")
    storages: dict[str, Storage] = {}
    obj = load(storages)
    keys = load()
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages):
        raise AuthorsCheckpointError(f"{source}: the list of storage keys does not match the storages the pickle names")
    nbytes = {key: s.numel * _element_size(s.dtype) for key, s in storages.items()}
    budget.take(sum(nbytes.values()), f"its {len(storages)} storages")
    for key in map(str, keys):        # each: int64 element count, then the elements, little-endian
        s = storages[key]
        header = f.read(8)
        count = struct.unpack("<q", header)[0] if len(header) == 8 else None
        if count != s.numel and len(header) == 8:   # PyTorch 0.4.1 wrote the count in the machine's byte order
            count = struct.unpack(">q", header)[0]
        if count != s.numel:
            raise AuthorsCheckpointError(f"{source}: storage {key} is truncated or its size header is wrong")
        if nbytes[key] > size - f.tell():
            raise AuthorsCheckpointError(f"{source}: storage {key} is truncated ({size - f.tell():,} of "
                                         f"{nbytes[key]:,} bytes)")
        _read_storage(f, s, nbytes[key])
    return obj, storages


def read_pickled_model(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> Any:
    """The object ``torch.save`` wrote to ``path``, rebuilt from inert stand-ins: modules are
    ``PickledModule`` records, tensors CPU ``torch.Tensor`` s. Either file format; nothing runs.

    ``max_bytes`` bounds the file and, together, its storages and tensors (see the module's
    docstring); a file beyond a bound is refused before anything of that size is allocated.
    """
    path = Path(path)
    problem = file_problem(path)
    if problem == "missing":
        raise AuthorsCheckpointError(f"authors' weights {path} do not exist")
    if problem is not None:
        raise AuthorsCheckpointError(f"authors' weights {path} are not a regular file ({problem})")
    source, budget = str(path), _Budget(max_bytes, str(path))
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise AuthorsCheckpointError(f"{path} has {size:,} bytes, more than the {max_bytes:,} this reader "
                                             "allows (the authors' model has about 200 MB): refused")
            zipped = f.read(4) == b"PK\x03\x04"
            f.seek(0)
            obj, _ = (_read_zip if zipped else _read_legacy)(f, size, source, budget)
        return _materialize(obj, {}, budget)
    except AuthorsCheckpointError:
        raise
    except Exception as e:     # a truncated or corrupted file: say so, in one line
        raise AuthorsCheckpointError(f"{path} cannot be read; it is truncated or corrupted "
                                     f"({type(e).__name__}: {one_line(str(e), 160)})") from None


_HIDDEN = {"_modules", "_parameters", "_buffers", "state"}    # left out of a tensor's name in messages


def _materialize(obj, memo: dict, budget: _Budget, where: str = "", depth: int = 0):
    """Replace every TensorRef by its tensor (in place in dicts and module states)."""
    if id(obj) in memo:
        return memo[id(obj)]
    if depth > MAX_DEPTH:
        raise AuthorsCheckpointError(f"{budget.source}: the pickled object nests deeper than {MAX_DEPTH} "
                                     f"(at {one_line(where, 80)}); the authors' model nests 8 deep")
    if isinstance(obj, TensorRef):
        memo[id(obj)] = out = obj.materialize(budget, one_line(where or "<top>", 100))
        return out
    memo[id(obj)] = obj

    def inner(v, key):
        name = where if key in _HIDDEN else f"{where}.{key}" if where else str(key)
        return _materialize(v, memo, budget, name, depth + 1)

    if isinstance(obj, PickledModule):
        if isinstance(getattr(obj, "state", None), dict):
            inner(obj.state, "state")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            obj[k] = inner(v, k if isinstance(k, str) else short_repr(k, 40))
    elif isinstance(obj, list):
        obj[:] = [inner(v, i) for i, v in enumerate(obj)]
    elif isinstance(obj, tuple):
        memo[id(obj)] = out = tuple(inner(v, i) for i, v in enumerate(obj))
        return out
    return obj


# ----------------------------------------------------------------------------- tensors by name

def module_tensors(module: PickledModule, prefix: str = "", depth: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """The parameters and persistent buffers of a pickled module tree, by dotted name (what
    ``state_dict()`` gives): ``_parameters`` and ``_buffers`` of each module, then ``_modules``."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    state = getattr(module, "state", None)
    where = one_line(prefix or "<top>", 100)
    if depth > MAX_DEPTH:
        raise AuthorsCheckpointError(f"pickled modules nest deeper than {MAX_DEPTH} at {where}")
    if not isinstance(state, dict):
        raise AuthorsCheckpointError(f"pickled module {module.kind} at {where} has no state dict")
    skip = state.get("_non_persistent_buffers_set") or set()
    for part in ("_parameters", "_buffers"):
        entries = state.get(part, {})
        if not isinstance(entries, dict):
            raise AuthorsCheckpointError(f"{module.kind}.{part} at {where} is not a dict")
        for name, t in entries.items():
            if isinstance(name, str) and (t is None or name in skip):
                continue
            if not isinstance(name, str) or not isinstance(t, torch.Tensor):
                raise AuthorsCheckpointError(f"{one_line(prefix + str(name), 100)} is a {type(t).__name__}, "
                                             "expected a tensor named by a string")
            out[prefix + name] = t
    children = state.get("_modules", {})
    if not isinstance(children, dict):
        raise AuthorsCheckpointError(f"{module.kind}._modules at {where} is not a dict")
    for name, child in children.items():
        if child is None:
            continue
        if not isinstance(name, str) or not isinstance(child, PickledModule):
            raise AuthorsCheckpointError(f"{one_line(prefix + str(name), 100)} is a {type(child).__name__}, "
                                         "expected a module")
        out.update(module_tensors(child, f"{prefix}{name}.", depth + 1))
    return out


def _strip_module_prefix(sd: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    if sd and all(k.startswith("module.") for k in sd):
        return OrderedDict((k[len("module."):], v) for k, v in sd.items())
    return OrderedDict(sd)


def authors_state_dict(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> "OrderedDict[str, torch.Tensor]":
    """The tensors of the authors' file in their names, without the DataParallel ``module.``.

    The whole pickled model and a plain state dict (``torch.save(model.state_dict())``) are both
    read by ``read_pickled_model`` (``SafeUnpickler``, which refuses unexpected globals and bounds
    every size the file declares; ``max_bytes``).
    """
    path = Path(path)
    obj = read_pickled_model(path, max_bytes)
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
    if isinstance(obj, Mapping) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
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
        problems.append(f"missing tensors ({listing((to_authors_key(k) or k for k in missing), 12, sort=True)})")
    if unexpected:
        problems.append(f"unexpected tensors ({listing(unexpected, 12, sort=True)})")
    if misshapen:
        problems.append(f"tensors of the wrong shape ({listing(misshapen, 12, sort=True)})")
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
    num_classes, reduced_dim = int(fc.shape[0]), int(fc.shape[1])
    if num_classes < 1 or reduced_dim < 1:
        raise AuthorsCheckpointError(f"{source}: fc_global_6_list.0.weight is {num_classes} x {reduced_dim}, "
                                     "expected K classes x c >= 1")
    return num_classes, reduced_dim


def _model_bytes(num_classes: int, reduced_dim: int) -> int:
    """The bytes of Ours-F with K classes and width c, counted on the ``meta`` device (nothing allocated)."""
    with torch.device("meta"):
        model = RRID(RRIDConfig.preset("ours-f", reduced_dim=reduced_dim), num_classes)
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def load_checkpoint(path: str | os.PathLike, device: Any = "cpu") -> "torch.nn.Module":
    """The authors' trained model as an ``rrid.RRID`` (Ours-F, ResNet-50), in eval mode.

    K (the classes) and c (256 in the paper) are read from the classifier weights: 751 when
    the authors trained on all of Market-1501's training identities, 651 with their default
    hold-out of 100. Refuses files with unexpected globals or unexpected tensors, and sizes
    that describe a model larger than ``MAX_BYTES`` (checked before the model is built).
    """
    theirs = authors_state_dict(path)
    num_classes, reduced_dim = _infer_sizes(theirs, str(path))
    needed = _model_bytes(num_classes, reduced_dim)
    if needed > MAX_BYTES:
        raise AuthorsCheckpointError(f"{path}: its classifier fc_global_6_list.0.weight ({num_classes} x "
                                     f"{reduced_dim}) describes a model of {needed:,} bytes, beyond the {MAX_BYTES:,} "
                                     "this reader allows (the authors' model: 751 x 256, about 200 MB): refused")
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
