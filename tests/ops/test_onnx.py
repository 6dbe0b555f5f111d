"""A plain ``torch.onnx.export`` of our models, with either of torch's exporters: standard ONNX operators only,
computing torchvision's numbers on ONNX Runtime."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torchvision

import cutlass_resnet

STANDARD = {"Add", "Conv", "Flatten", "Gather", "Gemm", "GlobalAveragePool", "Identity", "MaxPool", "ReduceMean"}
STANDARD |= {"Relu", "Reshape", "Shape", "Concat", "Unsqueeze", "Squeeze", "Constant"}


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_plain_torch_onnx_export_writes_standard_onnx(tmp_path, dynamo, fused):
    torch.manual_seed(0)
    theirs = torchvision.models.resnet18(num_classes=10).eval()
    ours = cutlass_resnet.resnet18(num_classes=10).eval()
    ours.load_state_dict(theirs.state_dict())
    if fused:
        ours = cutlass_resnet.fuse_bn(ours)
    x = torch.randn(2, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's
        torch.onnx.export(ours, (x,), str(tmp_path / "m.onnx"), dynamo=dynamo)
    graph = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(graph)
    kinds = {(node.domain or "ai.onnx", node.op_type) for node in graph.graph.node}
    assert {("ai.onnx", k) for k in ("Conv", "Add", "Relu")} <= kinds
    assert {domain for domain, _ in kinds} == {"ai.onnx"} and {k for _, k in kinds} <= STANDARD, kinds
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = theirs.double()(x.double()).numpy()
    assert np.abs(y - expected).max() < 1e-4
