"""ONNX export of the eval-mode embedding network (what trackers consume).

    python -m rrid export --checkpoint CKPT --config FILE --out model.onnx [--height H --width W]

The exported graph maps a (N, 3, H, W) ImageNet-normalised batch to the (N, feature_dim)
embedding of ``model.eval()`` (no flip averaging, no L2 normalisation: do both outside,
as :func:`rrid.extract_features` does).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from rrid.errors import ExportError
from rrid.files import atomic_path

__all__ = ["export_onnx", "ExportError", "cli"]


def export_onnx(model: torch.nn.Module, path, input_size=(384, 128), opset: int = 17, check: bool = True,
                batch_dynamic: bool = True) -> Path:
    """Export ``model`` in eval mode to ONNX at ``path`` (written to a temp file, then renamed).

    ``input_size`` is (H, W). With ``check`` and onnxruntime installed, the ONNX and PyTorch
    embeddings of a random batch must agree to 1e-4 of the embedding's largest magnitude, else
    an ExportError gives the difference. Without the ``onnx`` package: an ExportError that says
    what to install.
    """
    _require_onnx()
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
        import onnxruntime as ort
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


def _num_classes(state: dict) -> int:
    for key, value in state.items():
        if "classif" in key and key.endswith("weight") and value.ndim == 2:
            return value.shape[0]
    return 751




def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401  (torch.onnx.export writes the graph with it)
    except ImportError:
        raise ExportError("exporting to ONNX needs the onnx package, which is not installed: "
                          "pip install 'rrid[onnx]' (or pip install onnx onnxruntime)") from None


def cli(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rrid export", description="Export a trained RRID to ONNX (needs the onnx package).",
        epilog="example:\n  python -m rrid export --config configs/quick/ours_f.yaml "
               "--checkpoint runs/quick/best.pt --out model.onnx\n\n"
               "The checkpoint must be one `rrid train` wrote with this config (its tensors are checked "
               "against the checksums stored with them); the weights come from it, so no ImageNet "
               "download is needed.", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by rrid.fit (last.pt / best.pt)")
    parser.add_argument("--config", required=True, help="the experiment YAML the model was trained with")
    parser.add_argument("--out", default="model.onnx", help="where to write the .onnx file")
    parser.add_argument("--height", type=int, default=None, help="input height (default: the config's)")
    parser.add_argument("--width", type=int, default=None, help="input width (default: the config's)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    args = parser.parse_args(argv)

    from rrid.config import load_config
    from rrid.model import RRID
    from rrid.checkpoint import load_checkpoint, load_weights

    cfg = load_config(args.config)
    _require_onnx()
    ckpt = load_checkpoint(args.checkpoint)
    cfg.model.pretrained = False                  # the checkpoint holds the weights
    model = RRID(cfg.model, num_classes=ckpt.get("num_classes") or _num_classes(ckpt["model"]))
    load_weights(model, ckpt["model"], args.checkpoint, f"the model of {args.config}")
    height = args.height or cfg.data.height
    width = args.width or cfg.data.width
    out = export_onnx(model, args.out, input_size=(height, width), opset=args.opset, check=not args.no_check)
    print(f"wrote {out} (input 3 x {height} x {width})")
    return 0
