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

import pytest
import torch
from torch import nn

from rrid import authors
from rrid.__main__ import main
from rrid.authors import AuthorsCheckpointError, UnsafeCheckpointError

SMALL = dict(num_classes=10, reduced_dim=16)      # ResNet-50 backbone, narrow head: a 94 MB file
H, W = 192, 32                                    # a 12 x 2 map: P6, P4, P2 stripes are exact slices


pytestmark = pytest.mark.usefixtures("one_thread")     # conftest.py: one torch thread


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


# ----------------------------------------------------------------------------- PyTorch 0.4.1 variants

VARIANTS = {   # name: (save_like_pytorch_041 options, byte strings the file must contain)
    "cuda storages, Parameter class, num_batches_tracked": (
        dict(), [b"ctorch.cuda\nFloatStorage\n", b"ctorch.cuda\nLongStorage\n", b"ctorch.nn.parameter\nParameter\n",
                 b"_get_thnn_function_backend", b"cuda:0", b"num_batches_tracked"]),
    "cuda storages, Parameter class, no num_batches_tracked": (
        dict(num_batches_tracked=False), [b"ctorch.cuda\nFloatStorage\n", b"ctorch.nn.parameter\nParameter\n"]),
    "cpu storages, _rebuild_parameter, torch.device": (
        dict(storage_module="torch", location="cpu", parameter="rebuild", src_device=True),
        [b"ctorch\nFloatStorage\n", b"ctorch._utils\n_rebuild_parameter\n", b"ctorch\ndevice\n"]),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant_file(request, standin, tmp_path_factory):
    options, marks = VARIANTS[request.param]
    path = save_like_pytorch_041(standin, tmp_path_factory.mktemp("v041") / "weights.pth", **options)
    return path, options, marks


def test_041_variants_import_exactly(variant_file, standin):
    path, options, marks = variant_file
    data = path.read_bytes()
    assert all(m in data for m in marks)                                   # the variant is really in the file
    assert (b"num_batches_tracked" in data) == options.get("num_batches_tracked", True)
    model = authors.load_checkpoint(path)
    ours, theirs = model.state_dict(), their_tensors(standin)
    tracked = [k for k in ours if k.endswith("num_batches_tracked")]
    assert len(tracked) == 98
    if options.get("num_batches_tracked", True):
        assert_same_tensors(model, standin)
    else:                       # absent from the file: rrid's own value (0), everything else from the file
        assert all(ours[k] == 0 for k in tracked)
        assert all(torch.equal(ours[k], theirs[k]) for k in ours if k not in tracked)


def test_emulated_041_file_is_a_real_torch_file(variant_file, standin):
    """The emulation is faithful enough for torch itself: with the stand-in modules importable,
    torch.load (which runs the pickle) rebuilds the same module tree and tensors."""
    path, options, _ = variant_file
    with authors.standin_modules():
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    assert type(loaded) is type(standin) and type(loaded.module) is type(standin.module)
    got, expected = loaded.module.state_dict(), standin.module.state_dict()
    if not options.get("num_batches_tracked", True):
        expected = {k: v for k, v in expected.items() if not k.endswith("num_batches_tracked")}
    assert list(got) == list(expected)
    assert all(torch.equal(got[k], expected[k]) for k in got)
    assert_standin_not_importable()


def test_parameter_with_python_state(tmp_path, standin):
    """Modern torch pickles a Parameter that carries attributes with _rebuild_parameter_with_state."""
    weight = standin.module.base.conv1.weight
    weight.note = "tagged"
    try:
        path = authors.save_standin(standin, tmp_path / "w.pth")
    finally:
        del weight.note
    assert b"_rebuild_parameter_with_state" in path.read_bytes()
    assert_same_tensors(authors.load_checkpoint(path), standin)


# ----------------------------------------------------------------------------- files that would run code

class Payload:
    """Pickles as a call of ``func(*args)``: what a malicious checkpoint hides."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def pickled_name(func) -> str:
    """How protocol 2 names ``func`` (Python 2 names: posix.system, __builtin__.eval, commands.Popen)."""
    import pickletools

    (arg,) = [arg for op, arg, _ in pickletools.genops(pickle.dumps(func, protocol=2)) if op.name == "GLOBAL"]
    return arg.replace(" ", ".")


def payloads(marker: Path):
    return {
        "os.system": Payload(os.system, f"touch {marker}"),
        "builtins.eval": Payload(eval, f"open({str(marker)!r}, 'w')"),
        "subprocess.Popen": Payload(subprocess.Popen, ["touch", str(marker)]),
    }


def test_the_payload_is_live(tmp_path):
    """Without the allow-list the file runs its payload (so the refusals below mean something)."""
    marker = tmp_path / "marker"
    payload = payloads(marker)["os.system"]
    torch.save(payload, tmp_path / "evil.pth")
    torch.load(tmp_path / "evil.pth", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("where", ["top level", "inside the model's __dict__"])
@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "subprocess.Popen"])
def test_code_in_the_file_is_refused_and_never_runs(tmp_path, standin, fmt, where, name):
    marker = tmp_path / "marker"
    payload = payloads(marker)[name]
    global_name = pickled_name(payload.func)
    path = tmp_path / "evil.pth"
    if where == "top level":
        torch.save(payload, path, _use_new_zipfile_serialization=fmt == "zip")
    else:
        standin.module.extra = payload
        try:
            authors.save_standin(standin, path, legacy=fmt == "legacy")
        finally:
            del standin.module.extra
    module, _, attr = global_name.rpartition(".")
    assert f"c{module}\n{attr}\n".encode() in path.read_bytes()          # the GLOBAL opcode is in the file
    with pytest.raises(UnsafeCheckpointError) as err:
        authors.load_checkpoint(path)
    assert f"the global {global_name}," in str(err.value) and str(path) in str(err.value)
    out = tmp_path / "imported.pt"
    assert main(["import-authors", str(path), "--out", str(out)]) == 2
    assert not marker.exists() and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pth"]       # no trace at all


def test_unexpected_global_in_an_otherwise_fine_041_file_is_refused(tmp_path, standin):
    path = save_like_pytorch_041(standin, tmp_path / "w.pth")
    data = path.read_bytes().replace(b"ctorch.nn.modules.activation\nReLU\n", b"ctorch.nn.modules.activation\nGELU\n")
    path.write_bytes(data)
    with pytest.raises(UnsafeCheckpointError, match=r"names the global torch\.nn\.modules\.activation\.GELU"):
        authors.load_checkpoint(path)


def test_a_file_cannot_change_how_the_next_one_is_read(tmp_path, files, standin):
    """BUILD can set attributes on what find_class returned (here the dtype of torch.FloatStorage);
    each load gets its own stand-ins, so the next file is read as before."""
    import io

    evil = b"\x80\x02ctorch\nFloatStorage\nN}X\x05\x00\x00\x00dtypeNs\x86b."   # FloatStorage.dtype = None
    assert authors.SafeUnpickler(io.BytesIO(evil), "evil").load().dtype is None
    assert authors.ALLOWED_GLOBALS[("torch", "FloatStorage")].dtype == torch.float32
    (tmp_path / "evil.pth").write_bytes(evil)
    with pytest.raises(AuthorsCheckpointError, match="neither a zip archive nor"):
        authors.load_checkpoint(tmp_path / "evil.pth")
    assert_same_tensors(authors.load_checkpoint(files["zip"]), standin)


# ----------------------------------------------------------------------------- plain state dicts, bad tensors

@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("prefix", [True, False])
def test_plain_state_dict_with_or_without_module_prefix(tmp_path, standin, prefix, fmt):
    sd = standin.state_dict() if prefix else standin.module.state_dict()
    assert all(k.startswith("module.") for k in sd) == prefix
    torch.save(sd, tmp_path / "sd.pth", _use_new_zipfile_serialization=fmt == "zip")
    model = authors.load_checkpoint(tmp_path / "sd.pth")
    assert_same_tensors(model, standin)


def test_missing_and_extra_tensors_are_listed(tmp_path, standin):
    sd = standin.module.state_dict()
    del sd["local_6_conv_list.2.1.running_var"], sd["fc_rest_4_list.3.bias"]
    sd["base.fc.weight"] = torch.zeros(3, 2048)
    sd["local_6_conv_list.6.0.weight"] = torch.zeros(16, 2048, 1, 1)        # a seventh stripe of P6
    torch.save(sd, tmp_path / "sd.pth")
    with pytest.raises(AuthorsCheckpointError) as err:
        authors.load_checkpoint(tmp_path / "sd.pth")
    msg = str(err.value)
    assert "missing tensors (2: fc_rest_4_list.3.bias, local_6_conv_list.2.1.running_var)" in msg
    assert "unexpected tensors (2: base.fc.weight, local_6_conv_list.6.0.weight)" in msg


def test_wrong_shapes_are_listed(tmp_path, standin):
    sd = standin.module.state_dict()
    sd["relation_2_conv_list.1.0.weight"] = torch.zeros(16, 33, 1, 1)
    torch.save(sd, tmp_path / "sd.pth")
    with pytest.raises(AuthorsCheckpointError, match=r"wrong shape \(1: relation_2_conv_list\.1\.0\.weight "
                                                     r"\(16, 33, 1, 1\) \(expected \(16, 32, 1, 1\)\)"):
        authors.load_checkpoint(tmp_path / "sd.pth")


def test_number_of_classes_comes_from_the_classifiers(tmp_path):
    """The authors' default run trains on 651 identities (100 held out); K is read, not assumed."""
    sd = authors.make_standin(num_classes=651, reduced_dim=8).module.state_dict()
    torch.save(sd, tmp_path / "sd.pth")
    model = authors.load_checkpoint(tmp_path / "sd.pth")
    assert model.num_classes == 651 and model.heads.P2.classifiers.q0.out_features == 651


@pytest.mark.parametrize("content, message", [
    (b"", "neither a zip archive nor"),
    (b"not a checkpoint at all", "neither a zip archive nor"),
])
def test_files_that_are_not_checkpoints(tmp_path, content, message):
    (tmp_path / "x.pth").write_bytes(content)
    with pytest.raises(AuthorsCheckpointError, match=message):
        authors.load_checkpoint(tmp_path / "x.pth")


def test_truncated_files_are_named(files, tmp_path):
    for fmt, path in files.items():
        cut = tmp_path / f"cut_{fmt}.pth"
        cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(AuthorsCheckpointError, match=str(cut)):
            authors.load_checkpoint(cut)
    with pytest.raises(AuthorsCheckpointError, match="do not exist"):
        authors.load_checkpoint(tmp_path / "absent.pth")


# ----------------------------------------------------------------------------- CLI and rrid checkpoints

def test_cli_writes_a_checkpoint_that_load_model_reads(files, standin, tmp_path, capsys):
    out = tmp_path / "authors.pt"
    assert main(["import-authors", str(files["legacy"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "10 classes, 723 tensors, 240-d embedding" in printed
    from rrid.checkpoint import load_checkpoint, load_model

    ckpt = load_checkpoint(out)
    assert ckpt["num_classes"] == 10 and ckpt["config"]["model"]["reduced_dim"] == 16
    model = load_model(out)
    assert_same_tensors(model, standin)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["authors.pt"]      # written atomically, no temp left


def test_cli_help_of_import_authors(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["import-authors", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0
    assert "without running any code" in out and "--out" in out and "data.dataset=openreid" in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "import-authors" in capsys.readouterr().out
