"""rrid.weights: ImageNet weights are verified against their hash, then read without running code.

Every file here is made locally (a random resnet18 saved with torch.save, a crafted pickle);
the hub cache is a temp folder and downloads are faked: nothing is fetched.
"""

import hashlib
from pathlib import Path

import pytest
import torch
import torchvision

import rrid.weights as weights
from rrid.model import RRID, RRIDConfig, resnet_backbone
from rrid.weights import WeightsError


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache; any real download fails the test."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def no_download(*args, **kwargs):
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    return tmp_path / "hub" / "checkpoints"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def random_resnet18_file(folder: Path) -> tuple[Path, dict]:
    """A randomly initialised torchvision resnet18 saved as torchvision names its files:
    resnet18-<first 8 hex digits of the file's SHA-256>.pth."""
    torch.manual_seed(3)
    state = torchvision.models.resnet18().state_dict()
    tmp = folder / "unnamed.pth"
    torch.save(state, tmp)
    path = folder / f"resnet18-{sha256(tmp)[:8]}.pth"
    tmp.rename(path)
    return path, state


def expect(monkeypatch, path: Path, full: str | None = None) -> None:
    """Make ``path``'s name (and optionally a full digest) the expected resnet18 weights."""
    monkeypatch.setitem(weights.IMAGENET_WEIGHTS, "resnet18", (f"https://example.invalid/models/{path.name}", full))


class Payload:
    """Unpickling this creates ``marker`` (what a planted cache file could do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_pickle_payload_never_runs(hub, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    real_name = weights.weights_file("resnet18")           # resnet18-f37072fd.pth, torchvision's name
    assert real_name.parent == hub and real_name.name == "resnet18-f37072fd.pth"
    torch.save({"conv1.weight": Payload(marker)}, real_name)

    # 1. under the real name the hash does not match: refused before it is unpickled
    with pytest.raises(WeightsError, match="failed their checksum") as err:
        resnet_backbone("resnet18", pretrained=True)
    assert str(real_name) in str(err.value) and "f37072fd" in str(err.value) and "delete it" in str(err.value)
    assert not marker.exists()

    # 2. even a payload whose hash were expected is read with weights_only=True: refused, nothing runs
    forged = hub / f"resnet18-{sha256(real_name)[:8]}.pth"
    real_name.rename(forged)
    expect(monkeypatch, forged, full=sha256(forged))
    with pytest.raises(WeightsError, match="cannot be read as tensors only") as err:
        RRID(RRIDConfig(backbone="resnet18", pretrained=True), num_classes=3)
    assert str(forged) in str(err.value)
    assert not marker.exists()

    # the payload is real: the unsafe loader torchvision uses would have run it
    torch.load(forged, weights_only=False)
    assert marker.exists()


def test_a_file_with_the_wrong_hash_is_refused(hub, monkeypatch):
    path, _ = random_resnet18_file(hub)
    wrong = hub / "resnet18-00000000.pth"
    path.rename(wrong)
    expect(monkeypatch, wrong)
    with pytest.raises(WeightsError) as err:
        resnet_backbone("resnet18", pretrained=True)
    msg = str(err.value)
    assert str(wrong) in msg and "starting with 00000000" in msg and sha256(wrong) in msg

    # a recorded full digest is checked too: a file that only shares the 8-digit prefix is refused
    path = wrong.rename(hub / f"resnet18-{sha256(wrong)[:8]}.pth")
    expect(monkeypatch, path, full=sha256(path)[:8] + "0" * 56)
    with pytest.raises(WeightsError, match="failed their checksum"):
        resnet_backbone("resnet18", pretrained=True)


def test_a_verified_file_loads_strictly_and_equals(hub, monkeypatch):
    path, state = random_resnet18_file(hub)
    expect(monkeypatch, path, full=sha256(path))
    model = RRID(RRIDConfig(backbone="resnet18", pretrained=True), num_classes=3)
    loaded = model.backbone.state_dict()
    assert set(loaded) == set(state) - {"fc.weight", "fc.bias"}
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key

    # strict: a state dict that lacks a key of the architecture is refused, with the file named
    del state["layer4.1.bn2.bias"]
    torch.save(state, hub / "tmp.pth")
    short = hub / f"resnet18-{sha256(hub / 'tmp.pth')[:8]}.pth"
    (hub / "tmp.pth").rename(short)
    expect(monkeypatch, short)
    with pytest.raises(WeightsError, match="do not fit torchvision's resnet18") as err:
        resnet_backbone("resnet18", pretrained=True)
    assert str(short) in str(err.value) and "layer4.1.bn2.bias" in str(err.value)


def test_a_missing_file_is_downloaded_with_its_hash_checked(hub, tmp_path, monkeypatch):
    source, state = random_resnet18_file(tmp_path)
    expect(monkeypatch, source)
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):       # torch.hub's, without the network
        calls.append((url, Path(dst).name, hash_prefix))
        Path(dst).write_bytes(source.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model = resnet_backbone("resnet18", pretrained=True)
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    (url, dst_name, prefix), = calls
    assert url.endswith(source.name) and prefix == source.name[9:17]
    assert dst_name != source.name and dst_name.endswith(".tmp")      # a temp name, renamed once complete
    assert sorted(p.name for p in hub.iterdir()) == [source.name]      # no temp file left

    # a server that sends another file: the download may not check, the verification does
    (hub / source.name).unlink()
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dst, **kw: Path(dst).write_bytes(b"junk"))
    with pytest.raises(WeightsError, match="failed their checksum"):
        resnet_backbone("resnet18", pretrained=True)


def test_offline_message_says_the_copied_file_is_verified(hub, monkeypatch):
    with pytest.raises(WeightsError) as err:
        weights.imagenet_state_dict("resnet50", download=False)
    msg = str(err.value)
    assert "resnet50-0676ba61.pth" in msg and str(hub) in msg and "verified" in msg and "pretrained=false" in msg
