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

from rrid.files import atomic_path

__all__ = ["export_onnx", "cli"]


def export_onnx(model: torch.nn.Module, path, input_size=(384, 128), opset: int = 17, check: bool = True,
                batch_dynamic: bool = True) -> Path:
    """Export ``model`` in eval mode to ONNX at ``path`` (written to a temp file, then renamed).

    ``input_size`` is (H, W). With ``check`` and onnxruntime installed, the ONNX and PyTorch
    embeddings of a random batch must agree to 1e-4 of the embedding's largest magnitude, else
    a RuntimeError gives the difference.
    """
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
        raise RuntimeError(f"ONNX export {onnx_path}: onnxruntime gives shape {got.shape}, PyTorch {expected.shape}")
    diff, scale = float(abs(got - expected).max()), float(abs(expected).max())
    if diff > rtol * scale:
        raise RuntimeError(f"ONNX export {onnx_path}: onnxruntime differs from PyTorch by {diff:.2e}; "
                           f"expected at most {rtol} x max|embedding| = {rtol * scale:.2e}")


def _num_classes(state: dict) -> int:
    for key, value in state.items():
        if "classif" in key and key.endswith("weight") and value.ndim == 2:
            return value.shape[0]
    return 751


def cli(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rrid export", description="Export a trained RRID to ONNX.")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by rrid.fit (dict with 'model')")
    parser.add_argument("--config", required=True, help="the experiment YAML the model was trained with")
    parser.add_argument("--out", default="model.onnx", help="where to write the .onnx file")
    parser.add_argument("--height", type=int, default=None, help="input height (default: the config's)")
    parser.add_argument("--width", type=int, default=None, help="input width (default: the config's)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    args = parser.parse_args(argv)

    from rrid.config import load_config
    from rrid.model import RRID

    cfg = load_config(args.config)
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise SystemExit(f"{args.checkpoint}: expected a checkpoint dict with a 'model' state_dict")
    model = RRID(cfg.model, num_classes=_num_classes(ckpt["model"]))
    model.load_state_dict(ckpt["model"])
    height = args.height or getattr(cfg.data, "height", 384)
    width = args.width or getattr(cfg.data, "width", 128)
    out = export_onnx(model, args.out, input_size=(height, width), opset=args.opset, check=not args.no_check)
    print(f"wrote {out} (input 3 x {height} x {width})")
    return 0
