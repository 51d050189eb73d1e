"""rrid.export: the ONNX graph gives the PyTorch embeddings (when onnxruntime is installed)."""

import copy

import pytest
import torch

from numerics import RESNET18_RRID, float32_tolerance, max_abs_diff
from rrid.export import export_onnx

ort = pytest.importorskip("onnxruntime", reason="onnxruntime (the 'onnx' extra) is not installed")


def test_onnx_parity_with_dynamic_batch(tmp_path):
    import rrid
    torch.manual_seed(0)
    model = rrid.RRID(rrid.RRIDConfig(backbone="resnet18", pretrained=False), num_classes=5).train()
    path = export_onnx(model, tmp_path / "sub" / "m.onnx", input_size=(96, 32))
    assert path.exists() and model.training
    assert [p.name for p in path.parent.iterdir()] == ["m.onnx"]  # no temp file left
    x = torch.randn(4, 3, 96, 32)  # another batch size than the export's
    model.eval()
    with torch.inference_mode():
        reference = copy.deepcopy(model).double()(x.double())  # float64: the reference
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    assert got.shape == tuple(reference.shape) == (4, rrid.RRIDConfig(backbone="resnet18").feature_dim)
    # float32 through ResNet-18 and the heads: see tests/numerics.py for the bound
    assert max_abs_diff(got, reference) <= float32_tolerance(reference, **RESNET18_RRID)


def test_export_check_catches_a_graph_that_differs(tmp_path):
    """The parity check inside export_onnx (within 1e-4 of max|embedding|) fires on a real
    difference: the exported graph against the same model with one ReLU removed."""
    import rrid
    from rrid.export import ExportError, _check_parity

    torch.manual_seed(0)
    model = rrid.RRID(rrid.RRIDConfig(backbone="resnet18", pretrained=False), num_classes=5).eval()
    path = export_onnx(model, tmp_path / "m.onnx", input_size=(96, 32))  # passes its own check
    broken = copy.deepcopy(model)
    broken.heads["P6"].local.R_p[0].relu = torch.nn.Identity()
    with pytest.raises(ExportError, match=r"m\.onnx: onnxruntime differs from PyTorch by .* max\|embedding\|"):
        _check_parity(broken, path, 96, 32)
