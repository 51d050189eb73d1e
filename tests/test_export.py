"""rrid.export: the ONNX graph gives the PyTorch embeddings (when onnxruntime is installed)."""

import numpy as np
import pytest
import torch

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
        expected = model(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    assert got.shape == expected.shape == (4, rrid.RRIDConfig(backbone="resnet18").feature_dim)
    np.testing.assert_allclose(got, expected, atol=1e-4)
