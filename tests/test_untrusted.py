"""Files a user hands rrid that lie: every size they declare is bounded before it is allocated,
nothing they name as an image blocks, and every refusal is one line naming the file.

The memory cases run in a child process whose address space is capped (``RLIMIT_AS``) a fixed
amount above what the interpreter with torch takes at its start: a reader that allocates what
the file declares dies there with a MemoryError at once (instead of swapping), and the test
fails on the message. The crafted files are a few hundred bytes to about a megabyte.
"""

import json
import os
import pickle
import struct
import subprocess
import sys
import warnings
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rrid import authors
from rrid.authors import AuthorsCheckpointError, UnsafeCheckpointError
from rrid.config import ConfigError, apply_overrides, load_config
from rrid.data import CUHK03NP, DukeMTMCReID, ImageList, Market1501, OpenReID
from rrid.data.datasets import check_image
from rrid.data.loaders import load_image
from rrid.errors import DatasetError, UserError

ROOT = Path(__file__).resolve().parents[1]
GB = 1 << 30
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux only")

# ----------------------------------------------------------------------------- a child with capped memory

CHILD = r"""
import json, resource, sys
import torch
torch.set_num_threads(1)
import rrid.authors, rrid.config, rrid.errors


def vm_size():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))


limit = vm_size() + int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    exec(sys.argv[2])
    out = {"error": None}
except BaseException as e:
    out = {"error": type(e).__name__, "user_error": isinstance(e, rrid.errors.UserError), "message": str(e)}
print(json.dumps(out))
"""


def capped(code: str, headroom: int) -> dict:
    """Run ``code`` in a fresh interpreter that may take ``headroom`` bytes beyond its start
    (torch imported); return ``{"error": class name or None, "user_error": ..., "message": ...}``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(headroom), code], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_refused(out: dict, *parts: str) -> None:
    """A one-line user error containing ``parts`` (and no MemoryError disguised as one)."""
    assert out["error"] is not None and out["user_error"], out
    message = out["message"]
    assert "\n" not in message and "MemoryError" not in message, message
    assert all(p in message for p in parts), message


# ----------------------------------------------------------------------------- crafted torch.save files

class Storage:
    """A storage of a crafted file: ``numel`` float32 elements under ``key``; ``data`` its bytes."""

    def __init__(self, key: str, numel: int, data: bytes = b""):
        self.key, self.numel, self.data = key, numel, data


class Tensor:
    """A tensor of a crafted file: pickled as torch._utils._rebuild_tensor_v2 over ``storage``."""

    def __init__(self, storage: Storage, size, stride, offset: int = 0):
        self.storage, self.size, self.stride, self.offset = storage, tuple(size), tuple(stride), offset


def pickled(obj, legacy: bool) -> bytes:
    """``obj`` pickled as torch.save pickles it (protocol 2; storages as persistent ids)."""
    import io

    class Pickler(pickle.Pickler):
        def persistent_id(self, x):
            if isinstance(x, Storage):
                pid = ("storage", torch.FloatStorage, x.key, "cpu", x.numel)
                return pid + (None,) if legacy else pid
            return None

        def reducer_override(self, x):
            if isinstance(x, Tensor):
                return torch._utils._rebuild_tensor_v2, (x.storage, x.offset, x.size, x.stride, False, OrderedDict())
            return NotImplemented

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def legacy_file(path: Path, obj, storages: list[Storage]) -> Path:
    """The legacy torch.save stream: magic, protocol, sys_info, the object, the storage keys, each
    storage as an int64 count and its bytes."""
    header = b"".join(pickle.dumps(h, protocol=2) for h in (
        authors.MAGIC_NUMBER, authors.PROTOCOL_VERSION, {"protocol_version": 1001, "little_endian": True}))
    body = pickled(obj, legacy=True) + pickle.dumps([s.key for s in storages], protocol=2)
    path.write_bytes(header + body + b"".join(struct.pack("<q", s.numel) + s.data for s in storages))
    return path


def zip_file(path: Path, records: dict) -> Path:
    """A zip of ``records`` {name: bytes, or (deflate stream, size, crc32)}, written by hand so
    that a record can be a precomputed deflate bomb."""
    local, central = bytearray(), bytearray()
    for name, record in records.items():
        method, payload, size, crc = (0, record, len(record), zlib.crc32(record)) if isinstance(record, bytes) \
            else (8, *record)
        n = name.encode()
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 33, crc, len(payload), size,
                               len(n), 0, 0, 0, 0, 0, len(local)) + n
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 33, crc, len(payload), size, len(n), 0)
        local += n + payload
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(records), len(records), len(central), len(local), 0)
    path.write_bytes(bytes(local + central + end))
    return path


def torch_zip(path: Path, obj, records: dict) -> Path:
    return zip_file(path, {"archive/data.pkl": pickled(obj, legacy=False), "archive/byteorder": b"little",
                           "archive/version": b"3\n", **records})


@pytest.fixture(scope="module")
def zeros_bomb():
    """A deflate stream of 1.2 GB of zeros in about 1.2 MB, with its size and crc32: 4 MB blocks
    ended by full flushes (so one compressed block serves them all), then the final block."""
    block = bytes(4 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    one = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    n, crc = 300, 0
    for _ in range(n):
        crc = zlib.crc32(block, crc)
    stream = one * n + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    assert zlib.decompressobj(-15).decompress(stream[: 3 * len(one)]) == bytes(3 * len(block))
    return stream, n * len(block), crc


def test_the_crafted_formats_are_read_as_torch_reads_them(tmp_path):
    """The builders above write files torch.load itself reads (so the bombs below are real files)."""
    data = np.arange(6, dtype="<f4").tobytes()
    s = Storage("0", 6, data)
    obj = {"w": Tensor(s, (2, 3), (3, 1)), "t": Tensor(s, (3,), (2,), offset=1)}
    for path in (legacy_file(tmp_path / "l.pth", obj, [s]), torch_zip(tmp_path / "z.pth", obj, {"archive/data/0": data})):
        theirs = torch.load(path, weights_only=True)
        ours = authors.read_pickled_model(path)
        assert torch.equal(theirs["w"], ours["w"]) and torch.equal(theirs["t"], ours["t"])
        assert ours["t"].tolist() == [1.0, 3.0, 5.0]


def test_a_402_byte_tensor_of_40000_x_40000_is_refused_before_it_is_built(tmp_path):
    """stride (0, 0) over one element: in the storage (extent 1), but 6.4 GB as a tensor."""
    one = Storage("0", 1, bytes(4))       # "step": not a plain state dict, as a pickled module is not either
    path = legacy_file(tmp_path / "strided.pth", {"fc.weight": Tensor(one, (40000, 40000), (0, 0)), "step": 1}, [one])
    assert path.stat().st_size < 500
    out = capped(f"rrid.authors.load_checkpoint({str(path)!r})", 2 * GB)
    assert out["error"] == "AuthorsCheckpointError"
    assert_refused(out, str(path), "tensor fc.weight", "(40000, 40000)", "6,400,000,000 bytes", "beyond the")


def test_a_deflate_bomb_storage_is_refused_by_its_declared_size(tmp_path, zeros_bomb):
    """A 1.2 MB zip whose storage declares 300 M floats and whose record inflates to them."""
    stream, size, crc = zeros_bomb
    big = Storage("0", size // 4)
    path = torch_zip(tmp_path / "bomb.pth", {"w": Tensor(big, (size // 4,), (1,)), "step": 1},
                     {"archive/data/0": (stream, size, crc)})
    assert path.stat().st_size < 2 << 20
    out = capped(f"rrid.authors.load_checkpoint({str(path)!r})", 2 * GB)
    assert_refused(out, str(path), "its 1 storages needs 1,258,291,200 bytes", "beyond the 1,073,741,824")


def test_a_deflate_bomb_record_is_read_only_as_far_as_its_storage(tmp_path, zeros_bomb):
    """A 4-element storage whose record inflates to 1.2 GB: 16 bytes are decompressed, not 1.2 GB."""
    stream, size, crc = zeros_bomb
    small = Storage("0", 4)
    path = torch_zip(tmp_path / "bomb.pth", {"w": Tensor(small, (2, 2), (2, 1))}, {"archive/data/0": (stream, size, crc)})
    code = f"w = rrid.authors.read_pickled_model({str(path)!r})['w']\nassert w.tolist() == [[0.0, 0.0], [0.0, 0.0]]"
    assert capped(code, GB // 2) == {"error": None}


def test_a_storage_larger_than_the_file_is_refused_before_it_is_read(tmp_path):
    for numel in (10**12, 1000):          # beyond the budget; within it but beyond the bytes the file holds
        s = Storage("0", numel, bytes(16))
        legacy = legacy_file(tmp_path / "l.pth", {"w": Tensor(s, (2,), (1,))}, [s])
        zipped = torch_zip(tmp_path / "z.pth", {"w": Tensor(s, (2,), (1,))}, {"archive/data/0": bytes(16)})
        for path in (legacy, zipped):
            with pytest.raises(AuthorsCheckpointError) as err:
                authors.read_pickled_model(path)
            message = str(err.value)
            assert str(path) in message and "\n" not in message
            expected = "beyond the" if numel > 10**9 else ("truncated" if path == legacy else "holds 16 bytes")
            assert expected in message, message


@pytest.mark.parametrize("size, stride, offset, expected", [
    ((4,), (1,), 1, "reaches past the end of its storage (5 elements needed, 4 there)"),
    ((2, 2), (3, 1), 0, "reaches past the end of its storage (5 elements needed, 4 there)"),
    ((2,), (-1,), 3, "negative offset, size or stride"),
    ((-2, 3), (1, 1), 0, "negative offset, size or stride"),
    ((2,), (1,), -1, "negative offset, size or stride"),
])
def test_tensors_must_lie_in_their_storage(tmp_path, size, stride, offset, expected):
    s = Storage("7", 4, bytes(16))
    path = legacy_file(tmp_path / "t.pth", {"x": Tensor(s, size, stride, offset)}, [s])
    with pytest.raises(AuthorsCheckpointError, match=None) as err:
        authors.read_pickled_model(path)
    assert expected in str(err.value) and "tensor x" in str(err.value) and "storage 7" in str(err.value)


def test_an_empty_tensor_anywhere_is_fine(tmp_path):
    s = Storage("0", 1, bytes(4))
    path = legacy_file(tmp_path / "t.pth", {"x": Tensor(s, (0, 5), (100, 100), 0)}, [s])
    assert authors.read_pickled_model(path)["x"].shape == (0, 5)


def test_a_classifier_that_describes_a_huge_model_is_refused_before_the_model_is_built(tmp_path):
    """fc_global_6_list.0.weight of 1,000,000 x 256 (1 GB as a tensor, within the budget) would
    make Ours-F 46 GB: the model's size is counted on the meta device first."""
    one = Storage("0", 1, bytes(4))
    path = legacy_file(tmp_path / "k.pth", {"fc_global_6_list.0.weight": Tensor(one, (10**6, 256), (0, 0))}, [one])
    out = capped(f"rrid.authors.load_checkpoint({str(path)!r})", 2 * GB)
    assert_refused(out, str(path), "1000000 x 256", "describes a model of", "beyond the")


def test_a_pickle_that_declares_a_terabyte_string_is_refused_without_allocating_it(tmp_path):
    """BINBYTES8 with a length of 2**40: the C unpickler allocates the length first."""
    evil = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"xyz"
    path = zip_file(tmp_path / "z.pth", {"archive/data.pkl": evil, "archive/byteorder": b"little"})
    out = capped(f"rrid.authors.read_pickled_model({str(path)!r})", GB // 2)
    assert_refused(out, str(path), "the pickled object asks for 1,099,511,627,776 more bytes")
    legacy = tmp_path / "l.pth"
    legacy.write_bytes(pickle.dumps(authors.MAGIC_NUMBER, protocol=2) + pickle.dumps(1001, protocol=2) + evil)
    assert_refused(capped(f"rrid.authors.read_pickled_model({str(legacy)!r})", GB // 2), str(legacy), "asks for")


def test_a_zip_directory_of_millions_of_entries_is_refused_before_it_is_parsed(tmp_path):
    path = torch_zip(tmp_path / "z.pth", {}, {})
    data = bytearray(path.read_bytes())
    data[-10:-6] = struct.pack("<L", 200 << 20)          # the end record's size of the central directory
    path.write_bytes(bytes(data))
    with pytest.raises(AuthorsCheckpointError, match=r"its zip directory declares 209,715,200 bytes, beyond"):
        authors.read_pickled_model(path)


def test_deep_nesting_and_a_file_over_the_budget_are_one_line(tmp_path):
    deep = [1]
    for _ in range(200):
        deep = [deep]
    path = torch_zip(tmp_path / "deep.pth", deep, {})
    with pytest.raises(AuthorsCheckpointError, match=r"nests deeper than 64"):
        authors.read_pickled_model(path)
    with pytest.raises(AuthorsCheckpointError, match=rf"{path} has [\d,]+ bytes, more than the 100 this reader allows"):
        authors.read_pickled_model(path, max_bytes=100)


def test_names_from_the_file_are_shown_in_one_line(tmp_path):
    """A global whose name holds a newline (protocol 4's STACK_GLOBAL takes any string), and
    tensor names with newlines and 10,000 characters in the lists of unexpected tensors."""
    evil = b"\x80\x04\x8c\x02os\x8c\x07sys\ntem\x93."
    path = zip_file(tmp_path / "g.pth", {"archive/data.pkl": evil, "archive/byteorder": b"little"})
    with pytest.raises(UnsafeCheckpointError) as err:
        authors.read_pickled_model(path)
    assert "\n" not in str(err.value) and "os.sys\\ntem" in str(err.value)
    s = Storage("0", 1, bytes(4))
    names = {"bad\nname": Tensor(s, (1,), (1,)), "x" * 10_000: Tensor(s, (1,), (1,))}
    path = legacy_file(tmp_path / "n.pth", {"fc_global_6_list.0.weight": Tensor(s, (2, 3), (0, 0)), **names}, [s])
    with pytest.raises(AuthorsCheckpointError) as err:
        authors.load_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message and "bad\\nname" in message and len(message) < 3000


def test_not_a_regular_file_is_named(tmp_path):
    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    with pytest.raises(AuthorsCheckpointError, match=rf"{fifo} are not a regular file"):
        authors.load_checkpoint(fifo)


# ----------------------------------------------------------------------------- YAML configs

def laughs() -> str:
    """Nested aliases in one flow list: 9**9 = 387 million strings once expanded, in 400 bytes."""
    items = ["&a [" + ", ".join(["x"] * 9) + "]"]
    items += [f"&{c} [" + ", ".join([f"*{p}"] * 9) + "]" for p, c in zip("abcdefgh", "bcdefghi")]
    return "[" + ", ".join(items) + "]"


@pytest.mark.parametrize("key", ["name", "train.seed", "model.preset", "data.synthetic"])
def test_a_billion_laughs_config_is_refused_in_one_line(tmp_path, key):
    """Under any key: the loader refused aliases, and no value is formatted before its type is checked."""
    section, _, field = key.partition(".")
    path = tmp_path / "laughs.yaml"
    path.write_text(f"{section}:\n  {field}: {laughs()}\n" if field else f"{section}: {laughs()}\n")
    assert len(path.read_bytes()) < 470
    out = capped(f"rrid.config.load_config({str(path)!r})", 2 * GB)
    assert out["error"] == "ConfigError"
    assert_refused(out, str(path), "found the alias *a: anchors and aliases are not accepted in configs")


def test_yaml_aliases_in_an_override_are_not_expanded():
    """--set takes YAML too: an alias there is not YAML for rrid, so the text is taken as it is."""
    cfg = load_config(ROOT / "configs" / "quick" / "ours_f.yaml")
    laughs = "[&a [x, x, x, x, x, x, x, x, x], [*a, *a, *a, *a, *a, *a, *a, *a, *a]]"
    with pytest.raises(ConfigError) as err:
        apply_overrides(cfg, [f"train.seed={laughs}"])
    assert "train.seed: expected int, got '[&a [x, x, x" in str(err.value) and len(str(err.value)) < 300
    assert apply_overrides(cfg, ["data.root=*weird"]).data.root.endswith("*weird")


@pytest.mark.parametrize("text, expected", [
    ("train: !!python/object/apply:os.system [echo hi]\n",
     "line 1, column 8: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
    ("train: {epochs: 3\n", "line 2, column 1: while parsing a flow mapping expected ',' or '}', but got '<stream end>'"),
    ("a: b: c\n", "line 1, column 5: mapping values are not allowed here"),
    ("train:\n  epochs: " + "9" * 5000 + "\n", "Exceeds the limit (4300 digits) for integer string conversion"),
    ("x: " + "[" * 100 + "]" * 100 + "\n", "nested more than 32 deep"),
    ("1: 2\n", "1 (a int) under the top is not a key name. Valid keys: data, eval"),
    ("train: {[1, 2]: 3}\n", "line 1, column 9: while constructing a mapping found unhashable key"),
    ("train: {null: 3}\n", "None (a NoneType) under train is not a key name"),
    ("_base_: 5\n", "_base_ must be a path or a list of paths (relative to the file), got 5"),
    ("_base_: [../x.yaml, [1]]\n", "_base_ must be a path or a list of paths"),
    ("name: [1, 2]\n", "name must be one line of text (at most 200 characters), got [1, 2]"),
    ("name: \"two\\nlines\"\n", "name must be one line of text (at most 200 characters), got 'two\\nlines'"),
    ("train: " + "x" * 5000 + "\n", "section 'train' must be a mapping, got 'xxxxxxxxxxxx"),
])
def test_config_files_that_are_not_configs_are_one_line(tmp_path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message and len(message) < 600, message
    assert str(path) in message and expected in message, message


def test_a_config_file_that_is_huge_or_not_text_is_refused_before_it_is_parsed(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * (1 << 20) + b"\n")
    with pytest.raises(ConfigError, match=rf"cannot read {big}: it is larger than 1,048,576 bytes; expected a YAML config"):
        load_config(big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"train:\n  epochs: \xff\xfe\n")
    with pytest.raises(ConfigError, match=rf"config file {binary} is not UTF-8 text \(byte 17\)"):
        load_config(binary)


# ----------------------------------------------------------------------------- data folders

def _jpeg(path: Path, size=(64, 128)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path, quality=90)
    return path


def _market(root: Path) -> Path:
    """A minimal Market-style tree: 2 train ids, 2 test ids seen by 2 cameras."""
    for pid in (1, 2):
        for cam in (1, 2):
            _jpeg(root / "bounding_box_train" / f"{pid:04d}_c{cam}s1_000001_01.jpg")
    for pid in (3, 4):
        _jpeg(root / "query" / f"{pid:04d}_c1s1_000001_01.jpg")
        _jpeg(root / "bounding_box_test" / f"{pid:04d}_c2s1_000001_01.jpg")
    return root


def _special(path: Path, kind: str) -> None:
    """Put a named pipe, socket, folder or broken link at ``path``."""
    import socket

    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":                     # bound by a relative name: AF_UNIX paths are short
        cwd, sock = os.getcwd(), socket.socket(socket.AF_UNIX)
        os.chdir(path.parent)
        try:
            sock.bind(path.name)
        finally:
            os.chdir(cwd)
            sock.close()
    elif kind == "folder":
        path.mkdir()
    else:
        path.symlink_to(path.parent / "nowhere.jpg")


KINDS = {"fifo": "a named pipe (FIFO)", "socket": "a socket", "folder": "a folder", "dangling": "a broken symbolic link"}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("make, layout", [
    (Market1501, ""), (DukeMTMCReID, "DukeMTMC-reID/"), (lambda root: CUHK03NP(root), "cuhk03-np/labeled/"),
])
def test_a_special_file_named_like_an_image_is_named_not_opened(tmp_path, kind, make, layout):
    """A named pipe would block Image.open forever: it is refused by name before anything opens it."""
    root = _market(tmp_path / "data" / layout) if layout else _market(tmp_path / "data")
    victim = root / "query" / "0009_c1s1_000009_01.jpg"
    _special(victim, kind)
    with pytest.raises(DatasetError) as err:
        make(tmp_path / "data")
    message = str(err.value)
    assert "\n" not in message
    assert f"entries of {root / 'query'} named like images that are not regular files " \
           f"(1: 0009_c1s1_000009_01.jpg ({KINDS[kind]}))" in message


def test_image_readers_refuse_special_files_without_blocking(tmp_path):
    fifo, device = tmp_path / "pipe.jpg", Path("/dev/zero")
    os.mkfifo(fifo)
    for read in (load_image, check_image):
        with pytest.raises(DatasetError, match=rf"^image {fifo} is a named pipe \(FIFO\), not a regular file"):
            read(str(fifo))
        with pytest.raises(DatasetError, match=r"^image /dev/zero is a character device, not a regular file"):
            read(str(device))
        with pytest.raises(DatasetError, match=rf"^image {tmp_path} is a folder"):
            read(str(tmp_path))
        with pytest.raises(DatasetError, match=r"^cannot read image .*absent.jpg: No such file or directory"):
            read(str(tmp_path / "absent.jpg"))


def test_an_image_list_row_that_is_not_a_regular_file_is_named(tmp_path):
    _jpeg(tmp_path / "a.jpg")
    os.mkfifo(tmp_path / "b.jpg")
    rows = ["path,pid,camid,split", "a.jpg,1,0,train", "b.jpg,2,0,train", "a.jpg,3,0,query"]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetError) as err:
        ImageList(tmp_path / "list.csv")
    assert str(err.value) == (f"{tmp_path / 'list.csv'}: rows whose image is not a regular file "
                              f"(1: line 3: {tmp_path / 'b.jpg'} (a named pipe (FIFO)))")
    os.mkfifo(tmp_path / "pipe.csv")
    with pytest.raises(DatasetError, match=r"image list .*pipe.csv is a named pipe \(FIFO\), not a regular file"):
        ImageList(tmp_path / "pipe.csv")


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` pixels and holds one row: what PIL's open reads."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (3 * width + 1)))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [10_000, 100_000])     # 1e8 px: PIL warns; 1e10 px: PIL refuses
def test_an_image_of_too_many_pixels_is_a_dataset_error(tmp_path, side):
    path = _png_header_only(tmp_path / "bomb.png", side, side)
    assert path.stat().st_size < 100_000 + 200
    for read in (load_image, check_image):
        with warnings.catch_warnings():
            warnings.simplefilter("error")        # the warning must not leak either
            with pytest.raises(DatasetError) as err:
                read(str(path))
        message = str(err.value)
        assert message.startswith(f"image {path} has too many pixels (") and "\n" not in message
        assert f"at most {Image.MAX_IMAGE_PIXELS:,} are read" in message


# ----------------------------------------------------------------------------- open-reid JSON

def _openreid(root: Path) -> Path:
    images = root / "images"
    names = {}
    for pid in range(4):
        names[pid] = [[f"{pid:08d}_{cam:02d}_0000.jpg"] for cam in range(2)]
        for cam in range(2):
            _jpeg(images / f"{pid:08d}_{cam:02d}_0000.jpg")
    (root / "meta.json").write_text(json.dumps({"identities": [names[p] for p in range(4)]}))
    (root / "splits.json").write_text(json.dumps([{"trainval": [0, 1], "query": [2, 3], "gallery": [2, 3]}]))
    query = [[names[p][0][0], p, 0] for p in (2, 3)]
    gallery = [[names[p][1][0], p, 1] for p in (2, 3)]
    (root / "test.json").write_text(json.dumps([{"query": query, "gallery": gallery}]))
    return root


def test_openreid_json_that_nests_too_deep_or_is_too_big_is_one_line(tmp_path, monkeypatch):
    root = _openreid(tmp_path / "o")
    assert len(OpenReID(root).train) == 4
    (root / "test.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DatasetError, match=rf"^cannot read {root / 'test.json'}: its JSON nests too deep"):
        OpenReID(root)
    from rrid.data import openreid

    monkeypatch.setattr(openreid, "MAX_JSON_BYTES", 1000)
    (root / "test.json").write_text(json.dumps([{"query": [], "gallery": [["x" * 2000, 1, 1]]}]))
    with pytest.raises(DatasetError, match=rf"^cannot read {root / 'test.json'}: it is larger than 1,000 bytes"):
        OpenReID(root)


def test_openreid_entries_are_shown_short_and_special_files_named(tmp_path):
    root = _openreid(tmp_path / "o")
    huge = [[f"{3:08d}_01_0000.jpg", 3, 1], [list(range(100_000)), 1, 1]]
    (root / "test.json").write_text(json.dumps([{"query": [[f"{2:08d}_00_0000.jpg", 2, 0]], "gallery": huge}]))
    with pytest.raises(DatasetError) as err:
        OpenReID(root)
    assert len(str(err.value)) < 400 and "test.json gallery [[0, 1, 2, 3, ...], 1, 1]" in str(err.value)
    _openreid(root)
    victim = root / "images" / f"{3:08d}_01_0000.jpg"
    victim.unlink()
    os.mkfifo(victim)
    with pytest.raises(DatasetError, match=rf"entries of {root / 'images'} named in the JSON files that are not "
                                           rf"regular files \(1: {victim.name} \(a named pipe \(FIFO\)\)\)"):
        OpenReID(root)


def test_user_errors_are_user_errors():
    assert issubclass(AuthorsCheckpointError, UserError) and issubclass(ConfigError, UserError)
    assert issubclass(DatasetError, UserError)


# ----------------------------------------------------------------------------- more names and files from users

def test_a_synthetic_manifest_that_is_a_pipe_is_not_read(tmp_path):
    from rrid.data import synthetic

    out = tmp_path / "s"
    (out / "query").mkdir(parents=True)
    os.mkfifo(out / synthetic.PARAMS_FILE)
    assert synthetic.read_manifest(out) is None                     # it would block a read forever


def test_archive_member_names_and_folder_entries_are_shortened(tmp_path):
    import zipfile

    from rrid.data import download as dl

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("/" + "x" * 10_000 + "/evil.txt", b"x")
    with pytest.raises(dl.UnsafeArchiveError) as err:
        dl.extract(archive, tmp_path / "out")
    assert "has an absolute path" in str(err.value) and len(str(err.value)) < 600
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "two\nlines.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError) as err:
        dl.extract(archive, tmp_path / "full")
    assert "the folder exists and is not empty (two\\nlines.jpg)" in str(err.value) and "\n" not in str(err.value)


def test_an_image_list_header_is_shortened(tmp_path):
    (tmp_path / "list.csv").write_text(",".join(f"column{i}" for i in range(5000)) + "\n")
    with pytest.raises(DatasetError) as err:
        ImageList(tmp_path / "list.csv")
    assert "header must name the columns path,pid,camid,split, got ['column0', 'column1'" in str(err.value)
    assert len(str(err.value)) < 500


def test_a_data_file_name_with_a_newline_is_shown_in_one_line(tmp_path):
    root = _market(tmp_path / "data")
    _jpeg(root / "query" / "bad\nname.jpg")
    with pytest.raises(DatasetError) as err:
        Market1501(root)
    assert "(1: bad\\nname.jpg)" in str(err.value) and "\n" not in str(err.value)
