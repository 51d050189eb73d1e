"""rrid.authors: the authors' pickled model, read without running it, equals rrid.RRID.

The stand-in (rrid/authors_standin) has the authors' module, class and attribute names. Files
are written three ways: ``torch.save`` (zip), ``torch.save(..., _use_new_zipfile_serialization=False)``
(legacy), and ``save_like_pytorch_041`` below, which writes the legacy stream the way PyTorch
0.4.1 did for the authors (storages tagged ``torch.cuda.FloatStorage`` on ``cuda:0``,
Parameters pickled as ``torch.nn.parameter.Parameter(tensor, requires_grad)``, every module's
``_backend`` as a call of ``torch.nn.backends.thnn._get_thnn_function_backend``, BatchNorm with
or without ``num_batches_tracked``, module classes as persistent ids with their source). Real
``torch.load`` reads those files too (``test_emulated_041_file_is_a_real_torch_file``).
"""

import copyreg
import importlib.util
import inspect
import os
import pickle
import struct
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rrid import authors
from rrid.__main__ import main
from rrid.authors import AuthorsCheckpointError, UnsafeCheckpointError

SMALL = dict(num_classes=10, reduced_dim=16)      # ResNet-50 backbone, narrow head: a 94 MB file
H, W = 192, 32                                    # a 12 x 2 map: P6, P4, P2 stripes are exact slices


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def standin():
    return authors.make_standin(**SMALL)


@pytest.fixture(scope="module")
def files(standin, tmp_path_factory):
    folder = tmp_path_factory.mktemp("authors")
    return {"zip": authors.save_standin(standin, folder / "zip.pth"),
            "legacy": authors.save_standin(standin, folder / "legacy.pth", legacy=True)}


def their_tensors(standin):
    """The stand-in's tensors in rrid's names (bitwise what the import must give)."""
    return {authors.to_rrid_key(k): v for k, v in standin.module.state_dict().items()}


def assert_same_tensors(model, standin):
    theirs, ours = their_tensors(standin), model.state_dict()
    assert set(theirs) == set(ours) and len(ours) == 723
    different = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not different, different[:5]


def assert_same_embeddings(model, standin, n=2, seed=0):
    """Eval embeddings in float64: the same weights through two implementations of the same
    equations; only the order of floating-point sums may differ, so the gap must be at the level
    of float64 rounding (1e-10 of the largest value, far below float32's 1e-7)."""
    x = torch.randn(n, 3, H, W, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ref = standin.module
    try:
        with torch.no_grad():
            expected = torch.cat(ref.double().eval()(x)[0], 1)
            got = model.double().eval()(x)
    finally:
        ref.float()
        model.float()
    assert got.shape == expected.shape == (n, model.config.feature_dim)
    assert (got - expected).abs().max() <= 1e-10 * expected.abs().max()


def assert_standin_not_importable():
    assert not set(authors.STANDIN_MODULES) & set(sys.modules)
    assert not any(p.endswith("authors_standin") for p in sys.path)
    assert all(importlib.util.find_spec(name) is None for name in authors.STANDIN_MODULES)


# ----------------------------------------------------------------------------- a PyTorch 0.4.1 file

_BACKEND = object()    # stands for 0.4.1's thnn backend object in every module's __dict__


def save_like_pytorch_041(obj, path, storage_module="torch.cuda", location="cuda:0", parameter="class",
                          num_batches_tracked=True, src_device=False):
    """Write ``obj`` in the legacy stream of torch.save, shaped like a PyTorch 0.4.1 file.

    magic number, protocol version, sys_info; the object (persistent ids: module classes as
    ("module", cls, source file, source), storages as ("storage", type, key, location, numel,
    None)); the sorted storage keys; each storage as an int64 count and little-endian bytes.
    """
    import torch.nn.backends.thnn as thnn

    storage_types = {torch.float32: "FloatStorage", torch.int64: "LongStorage"}
    storages, seen_classes = {}, set()

    class Pickler(pickle.Pickler):
        def persistent_id(self, x):
            if isinstance(x, type) and issubclass(x, nn.Module) and x not in seen_classes:
                seen_classes.add(x)
                try:
                    lines, _ = inspect.getsourcelines(x)
                    return ("module", x, inspect.getsourcefile(x), "".join(lines))
                except (OSError, TypeError):
                    return ("module", x, None, None)
            if isinstance(x, torch.storage.TypedStorage):
                key = str(x._untyped_storage._cdata)
                storages[key] = x
                cls = getattr(sys.modules[storage_module], storage_types[x.dtype])
                return ("storage", cls, key, location, x._size(), None)
            return None

        def reducer_override(self, x):
            if x is _BACKEND:
                return thnn._get_thnn_function_backend, ()
            if isinstance(x, nn.Parameter):
                plain = x.detach()
                if parameter == "class":             # 0.4: Parameter, (super(Parameter, self), requires_grad)
                    return nn.Parameter, (plain, x.requires_grad)
                return torch._utils._rebuild_parameter, (plain, x.requires_grad, OrderedDict())
            if isinstance(x, torch.Tensor):
                storage = torch.storage.TypedStorage(wrap_storage=x.untyped_storage(), dtype=x.dtype, _internal=True)
                return torch._utils._rebuild_tensor_v2, (storage, x.storage_offset(), tuple(x.size()), x.stride(),
                                                         x.requires_grad, OrderedDict())
            if isinstance(x, nn.Module):
                buffers = OrderedDict((k, v) for k, v in x._buffers.items()
                                      if num_batches_tracked or k != "num_batches_tracked")
                state = {"_backend": _BACKEND, "_parameters": OrderedDict(x._parameters), "_buffers": buffers,
                         "_backward_hooks": OrderedDict(), "_forward_hooks": OrderedDict(),
                         "_forward_pre_hooks": OrderedDict(), "_modules": OrderedDict(x._modules),
                         "training": x.training}
                state.update({k: v for k, v in vars(x).items() if not k.startswith("_") and k != "training"})
                if isinstance(x, nn.DataParallel):
                    state.update(device_ids=[0, 1], output_device=0, dim=0)
                    if src_device:
                        state["src_device_obj"] = torch.device("cuda", 0)
                return copyreg.__newobj__, (type(x),), state
            return NotImplemented

    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    with authors.standin_modules(), open(path, "wb") as f:
        for header in (authors.MAGIC_NUMBER, authors.PROTOCOL_VERSION, sys_info):
            pickle.dump(header, f, protocol=2)
        Pickler(f, protocol=2).dump(obj)
        keys = sorted(storages)
        pickle.dump(keys, f, protocol=2)
        for key in keys:
            s = storages[key]
            data = torch.empty(0, dtype=s.dtype).set_(s._untyped_storage).numpy()
            f.write(struct.pack("<q", data.size))
            f.write(data.astype(data.dtype.newbyteorder("<")).tobytes())
    return Path(path)


# ----------------------------------------------------------------------------- the stand-in and both formats

def test_standin_has_the_authors_names_and_maps_one_to_one(standin):
    from rrid.model import RRID, RRIDConfig

    assert type(standin).__module__ == "torch.nn.parallel.data_parallel"
    inner = standin.module
    assert (type(inner).__module__, type(inner).__name__) == ("Relation_final_ver_last_multi_scale_large_losses",
                                                             "RelationModel")
    assert (type(inner.base).__module__, type(inner.base).__name__) == ("resnet", "ResNet")
    assert type(inner.base.layer4[0]).__name__ == "Bottleneck"
    theirs = inner.state_dict()
    mapped = [authors.to_rrid_key(k) for k in theirs]
    ours = RRID(RRIDConfig.preset("ours-f", reduced_dim=SMALL["reduced_dim"]), SMALL["num_classes"]).state_dict()
    assert len(theirs) == len(set(mapped)) == len(ours) == 723            # a bijection
    assert set(mapped) == set(ours)
    assert all(authors.to_authors_key(authors.to_rrid_key(k)) == k for k in theirs)
    assert all(ours[authors.to_rrid_key(k)].shape == v.shape for k, v in theirs.items())
    assert_standin_not_importable()


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_import_equals_the_standin(files, standin, fmt):
    path = files[fmt]
    assert (path.read_bytes()[:4] == b"PK\x03\x04") == (fmt == "zip")
    assert_standin_not_importable()
    model = authors.load_checkpoint(path)
    assert not model.training and model.num_classes == SMALL["num_classes"]
    assert model.config.reduced_dim == SMALL["reduced_dim"] and model.config.scales == (2, 4, 6)
    assert_same_tensors(model, standin)
    assert_same_embeddings(model, standin)
    assert_standin_not_importable()


@pytest.mark.slow
def test_real_size_041_file(tmp_path):
    """The released model's size (ResNet-50, c = 256, 751 classes, about 200 MB), in the stream
    PyTorch 0.4.1 wrote: 3,840-d embeddings equal to the stand-in's."""
    big = authors.make_standin(num_classes=751, reduced_dim=256, seed=1)
    path = save_like_pytorch_041(big, tmp_path / "pretrained_weights.pth")
    assert path.stat().st_size > 199e6
    model = authors.load_checkpoint(path)
    assert model.num_classes == 751 and model.config.feature_dim == 3840
    assert_same_tensors(model, big)
    assert_same_embeddings(model, big, n=1)
