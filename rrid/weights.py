"""ImageNet weights of the ResNet backbone: found, verified, then loaded without running code.

torchvision's weights API unpickles ``$TORCH_HOME/hub/checkpoints/<file>.pth`` with
``weights_only=False`` and checks its hash only while downloading, so a file planted in that
cache would run code. ``rrid`` reads the same file (the same cache, so a download made by
torchvision is reused) but:

1. verifies it first: the SHA-256 of the file must start with the 8 hex digits that
   torchvision writes into its name (``resnet50-0676ba61.pth``: ``0676ba61``), and equal the
   full digest where :data:`IMAGENET_WEIGHTS` records one;
2. loads it with ``torch.load(weights_only=True)`` (tensors only, no code);
3. loads the state dict strictly (every key of the architecture, nothing else).

A missing file is downloaded (when allowed) to a temp name, checked against the same hash
during the download, and renamed into the cache.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Optional

import torch
import torchvision

from rrid.errors import WeightsError, state_dict_mismatch
from rrid.files import atomic_path, file_hash

__all__ = ["IMAGENET_WEIGHTS", "WeightsError", "weights_file", "imagenet_state_dict", "load_imagenet"]

# name -> (URL, full SHA-256 or None). The URLs are torchvision's IMAGENET1K_V1 weights
# (``torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url``); their file names carry the first
# 8 hex digits of the file's SHA-256. The full digests are not published by torchvision, so
# the name's prefix is what is checked (record a full digest here to pin the exact file).
IMAGENET_WEIGHTS: dict[str, tuple[str, Optional[str]]] = {
    name: (torchvision.models.get_model_weights(name).IMAGENET1K_V1.url, None)
    for name in ("resnet18", "resnet34", "resnet50")
}
DOWNLOAD_TIMEOUT = 60.0      # seconds without data before a download gives up


def weights_file(name: str) -> Path:
    """Where torch's cache keeps the ImageNet weights of ``name``:
    ``torch.hub.get_dir()/checkpoints/<the URL's file name>``."""
    url, _ = IMAGENET_WEIGHTS[name]
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _expected(name: str) -> tuple[str, Optional[str]]:
    """(hash prefix from the file name, full digest or None)."""
    url, full = IMAGENET_WEIGHTS[name]
    match = torch.hub.HASH_REGEX.search(url.rsplit("/", 1)[-1])
    prefix = match.group(1) if match else ""
    if not prefix and not full:
        raise WeightsError(f"no checksum is known for the {name} weights ({url}); refusing to load them unverified")
    return prefix, full


def _verify(path: Path, name: str) -> None:
    prefix, full = _expected(name)
    digest = file_hash(path)
    expected = full or prefix
    if (full and digest != full) or not digest.startswith(prefix):
        what = f"SHA-256 {expected}" if full else f"a SHA-256 starting with {prefix} (the hash in its name)"
        raise WeightsError(
            f"ImageNet weights {path} failed their checksum: expected {what}, got {digest}. "
            f"The file is corrupted or was replaced; delete it and download {IMAGENET_WEIGHTS[name][0]} again, "
            "or set model.pretrained=false")


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download(name: str, path: Path, progress: bool) -> None:
    url, _ = IMAGENET_WEIGHTS[name]
    prefix, _ = _expected(name)
    try:
        with atomic_path(path) as tmp, _socket_timeout(DOWNLOAD_TIMEOUT):
            torch.hub.download_url_to_file(url, str(tmp), hash_prefix=prefix or None, progress=progress)
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WeightsError(
            f"could not download the ImageNet weights of {name} from {url} ({reason}). Without internet, "
            f"copy {path.name} from that address into {path.parent}/ (it is verified against its SHA-256 "
            "before use), or set model.pretrained=false") from None


def imagenet_state_dict(name: str, download: bool = True, progress: bool = True) -> dict[str, torch.Tensor]:
    """The verified ImageNet state dict of torchvision's ``name`` (keys "conv1.weight", ..., "fc.bias")."""
    if name not in IMAGENET_WEIGHTS:
        raise WeightsError(f"no ImageNet weights for backbone {name!r}: expected one of {list(IMAGENET_WEIGHTS)}")
    path = weights_file(name)
    if not path.is_file():
        if not download:
            raise WeightsError(
                f"the ImageNet weights of {name} are not in torch's cache ({path}); copy {path.name} from "
                f"{IMAGENET_WEIGHTS[name][0]} there (it is verified against its SHA-256 before use), "
                "or set model.pretrained=false")
        _download(name, path, progress)
    _verify(path, name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise WeightsError(f"ImageNet weights {path} passed their checksum but cannot be read as tensors only "
                           f"({type(err).__name__}: {first}); refusing to load them. Delete the file") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"ImageNet weights {path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def load_imagenet(resnet: torch.nn.Module, name: str, download: bool = True) -> torch.nn.Module:
    """Copy the verified ImageNet weights of ``name`` into torchvision's ``resnet`` (strictly)."""
    state = imagenet_state_dict(name, download)
    try:
        resnet.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise WeightsError(f"ImageNet weights {weights_file(name)} do not fit torchvision's {name}: "
                           f"{state_dict_mismatch(err)}") from None
    return resnet
