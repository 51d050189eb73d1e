"""ONNX export of the eval-mode embedding network (what trackers consume).

    python -m rrid export --checkpoint CKPT --config FILE --out model.onnx [--height H --width W]

The exported graph maps a (N, 3, H, W) ImageNet-normalised batch to the (N, feature_dim)
embedding of ``model.eval()`` (no flip averaging, no L2 normalisation: do both outside,
as :func:`rrid.extract_features` does).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from rrid.errors import ExportError
from rrid.files import atomic_path

__all__ = ["export_onnx", "require_onnx", "ExportError"]


def export_onnx(model: torch.nn.Module, path, input_size=(384, 128), opset: int = 17, check: bool = True,
                batch_dynamic: bool = True) -> Path:
    """Export ``model`` in eval mode to ONNX at ``path`` (written to a temp file, then renamed).

    ``input_size`` is (H, W). With ``check`` and onnxruntime installed, the ONNX and PyTorch
    embeddings of a random batch must agree to 1e-4 of the embedding's largest magnitude, else
    an ExportError gives the difference. Without the ``onnx`` package: an ExportError that says
    what to install.
    """
    require_onnx()
    path = Path(path)
    height, width = input_size
    model = copy.deepcopy(model).cpu().float().eval()
    x = torch.randn(2, 3, height, width)
    dynamic = {"images": {0: "batch"}, "embeddings": {0: "batch"}} if batch_dynamic else None
    with atomic_path(path) as tmp:
        torch.onnx.export(model, (x,), str(tmp), input_names=["images"], output_names=["embeddings"],
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)
        if check:
            _check_parity(model, tmp, height, width)
    return path


def _check_parity(model, onnx_path, height, width, rtol=1e-4):
    """onnxruntime vs PyTorch on a random batch, within ``rtol`` x max|embedding|.

    Relative to the output's magnitude because float32 rounding is: through a ResNet-50 and the
    heads the two runtimes differ by ~1e-6 of max|embedding| (their kernels add in different
    orders), while a wrong operator moves the embedding by 1e-2 of it or more.
    """
    try:
        import onnxruntime as ort   # optional (the onnx extra): without it the check is skipped
    except ImportError:
        return
    x = torch.randn(3, 3, height, width)
    with torch.inference_mode():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    if got.shape != expected.shape:
        raise ExportError(f"ONNX export {onnx_path}: onnxruntime gives shape {got.shape}, PyTorch {expected.shape}")
    diff, scale = float(abs(got - expected).max()), float(abs(expected).max())
    if diff > rtol * scale:
        raise ExportError(f"ONNX export {onnx_path}: onnxruntime differs from PyTorch by {diff:.2e}; "
                          f"expected at most {rtol} x max|embedding| = {rtol * scale:.2e}")


def require_onnx() -> None:
    """An ExportError saying what to install when the ``onnx`` package is missing."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export writes the graph with it)
    except ImportError:
        raise ExportError("exporting to ONNX needs the onnx package, which is not installed: "
                          "pip install 'rrid[onnx]' (or pip install onnx onnxruntime)") from None
