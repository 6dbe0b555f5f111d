"""Exports of torchvision's weights (served locally) to safetensors folders with model cards; models to ONNX,
checked by onnx's checker and run on ONNX Runtime."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch
import torchvision
from conftest import assert_within_twice_aten, max_error

import cutlass_resnet
from cutlass_resnet import from_pretrained
from cutlass_resnet.pretrained import export
from cutlass_resnet.testing import torchvision_model_with_statistics


def test_export_writes_every_variant_with_its_card(pointed, tv_resnet18, tmp_path):
    folders = export("resnet18", "IMAGENET1K_V1", tmp_path, progress=False)
    assert [f.name for f in folders] == [
        "resnet18.tv_in1k",
        "resnet18.tv_in1k.fused-fp16",
        "resnet18.tv_in1k.fused-bf16",
    ]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = copy.deepcopy(tv_resnet18).double()(x.double())
    forms = [(False, torch.float32), (True, torch.float16), (True, torch.bfloat16)]
    for folder, (fused, dtype) in zip(folders, forms, strict=True):
        config = json.loads((folder / "config.json").read_text())
        assert (config["fused"], config["dtype"], config["source"]) == (fused, str(dtype)[6:], str(pointed))
        card = (folder / "README.md").read_text()
        assert hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest() in card
        assert "acc@1 69.758" in card and f"--variant {folder.name.split('.')[-1].replace('tv_in1k', 'fp32')}" in card
        model = from_pretrained(folder)
        assert model.fused is fused and model.fc.weight.dtype == dtype
        with torch.no_grad():
            ours = model(x.to(dtype))
        if dtype == torch.float32:
            assert max_error(ours, expected) < 1e-4
        else:  # torchvision's own computation at this precision sets the bar
            aten = copy.deepcopy(tv_resnet18).to(dtype)(x.to(dtype))
            assert_within_twice_aten(ours, aten, expected)


def _onnx():
    if os.environ.get("CI") == "true":  # the test extra installs them: their absence is a failure there
        import onnx
        import onnxruntime
    else:
        onnx, onnxruntime = pytest.importorskip("onnx"), pytest.importorskip("onnxruntime")
    return onnx, onnxruntime


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("arch", ["resnet18", "resnext50_32x4d"])
def test_onnx_export_is_standard_and_matches_on_onnx_runtime(tmp_path, fused, arch):
    onnx, ort = _onnx()
    reference = torchvision_model_with_statistics(arch, seed=31, image_size=64)
    model = getattr(cutlass_resnet, arch)().eval()
    cutlass_resnet.load_torchvision_state_dict(model, reference.state_dict())
    if fused:
        cutlass_resnet.fuse_bn(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = cutlass_resnet.export_onnx(model, tmp_path / "model.onnx", image_size=64)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and model.fused == fused
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    ops = {node.op_type for node in graph.graph.node}
    assert ops <= {"Conv", "Add", "Relu", "MaxPool", "GlobalAveragePool", "Flatten", "Gemm", "Identity"}, ops
    assert {"Conv", "Add", "Relu", "MaxPool", "GlobalAveragePool", "Gemm"} <= ops
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # one graph, any batch
        x = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
        (logits,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            expected = reference.double()(x.double())
            ours = model(x)
            fp32 = reference.float()(x)
        onnx_error = (torch.from_numpy(logits).double() - expected).abs().max().item()
        assert onnx_error <= 2 * (fp32.double() - expected).abs().max().item() + 1e-5
        assert (ours.double() - expected).abs().max().item() <= 2 * (fp32.double() - expected).abs().max().item() + 1e-5


def test_onnx_export_through_torch_export(tmp_path):
    onnx, ort = _onnx()
    model = cutlass_resnet.fuse_bn(cutlass_resnet.resnet18(num_classes=10).eval())
    path = cutlass_resnet.export_onnx(model, tmp_path / "model.onnx", image_size=64, dynamo=True)
    onnx.checker.check_model(onnx.load(str(path)))
    x = torch.randn(3, 3, 64, 64)
    (logits,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), model(x), rtol=1e-4, atol=1e-4)


def test_onnx_export_from_the_command_line(tmp_path):
    onnx, _ = _onnx()
    model = torchvision.models.resnet18().eval()
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    proc = subprocess.run(
        [sys.executable, "-m", "cutlass_resnet", "export", "--arch", "resnet18",
         "--weights", str(tmp_path / "weights.pth"), "--onnx", str(tmp_path / "r18.onnx"), "--image-size", "64"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "r18.onnx")
    onnx.checker.check_model(onnx.load(str(tmp_path / "r18.onnx")))
    bad = subprocess.run(
        [sys.executable, "-m", "cutlass_resnet", "export", "--arch", "resnet18", "--onnx", "/nonexistent/x.onnx"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert bad.returncode == 2 and "the folder /nonexistent does not exist" in bad.stderr


@pytest.mark.parametrize("method", ["entropy", "percentile", "max"])
def test_quantized_onnx_export_is_qdq_and_matches_the_int8_model_on_onnx_runtime(digits, tmp_path, method):
    onnx, ort = _onnx()
    quantized = digits.quantized(method)
    path = cutlass_resnet.export_onnx(quantized, tmp_path / "int8.onnx", image_size=32)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    producers = {out: node for node in graph.graph.node for out in node.output}
    convs = [node for node in graph.graph.node if node.op_type == "Conv"]
    assert len(convs) == 20
    for conv in convs:  # input and weight both dequantized: TensorRT's explicit-quantization form
        assert [producers[name].op_type for name in conv.input[:2]] == ["DequantizeLinear"] * 2
    x = digits.images[digits.test]
    (logits,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    with torch.no_grad():
        ours = quantized(x)
    # one quantization step on every pooled feature moves a logit by at most sum|fc row| * the last scale
    one_step = (quantized.fc.weight.abs().sum(1).max() * quantized.avgpool[0].scale).item()
    assert (torch.from_numpy(logits) - ours).abs().max().item() <= one_step
    flipped = (torch.from_numpy(logits).argmax(1) != ours.argmax(1)).nonzero().flatten()
    if method == "entropy":
        assert len(flipped) == 0
    else:  # the float Conv's rounding may flip a near tie of the int8 model, nothing else
        top2 = ours[flipped].topk(2, dim=1).values
        assert len(flipped) <= 1 and ((top2[:, 0] - top2[:, 1]) < one_step).all()


def test_quantized_models_export_with_the_torchscript_exporter_only(digits, tmp_path):
    with pytest.raises(ValueError, match="dynamo=False"):
        cutlass_resnet.export_onnx(digits.quantized("max"), tmp_path / "int8.onnx", dynamo=True)
    assert not (tmp_path / "int8.onnx").exists()


def test_export_onnx_names_what_it_takes(tmp_path):
    with pytest.raises(TypeError, match="cutlass_resnet ResNet"):
        cutlass_resnet.export_onnx(None, tmp_path / "x.onnx", dynamo=True)
