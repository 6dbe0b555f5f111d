"""cutlass_resnet.quantize: INT8 accuracy on real data, scales and their wiring, errors."""

from __future__ import annotations

import json

import pytest
import torch

import cutlass_resnet as cr
from cutlass_resnet.nn import Dequantize, QuantizedConv2d, quantized_scales


@pytest.mark.parametrize("method", ["entropy", "percentile", "max"])
def test_int8_accuracy_on_digits_is_within_one_point_of_fp32(digits, method):
    fp32 = digits.accuracy(digits.model)
    assert fp32 >= 0.90
    int8 = digits.accuracy(digits.quantized(method))
    assert abs(int8 - fp32) <= 0.01, (method, fp32, int8)


def test_quantize_leaves_the_model_as_it_was(digits):
    before = {k: v.clone() for k, v in digits.model.state_dict().items()}
    quantized = cr.quantize(digits.model, digits.images[digits.calibration], "max")
    after = digits.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not digits.model.fused and quantized.fused
    assert not cr.models.is_quantized(digits.model) and cr.models.is_quantized(quantized)


def test_every_conv_is_int8_and_reads_the_scale_its_producer_wrote():
    torch.manual_seed(0)
    model = cr.resnet50(num_classes=10).eval()
    quantized = cr.quantize(model, torch.randn(4, 3, 64, 64), "max")
    convs = [m for m in quantized.modules() if isinstance(m, (torch.nn.Conv2d, QuantizedConv2d))]
    assert len(convs) == 53 and all(isinstance(m, QuantizedConv2d) for m in convs)
    scales = quantized_scales(quantized)
    assert scales["layer1.0.conv1"]["input"] == scales["conv1"]["output"]  # through the max-pool
    assert scales["layer1.0.downsample.0"]["input"] == scales["conv1"]["output"]
    assert scales["layer1.0.conv3"]["residual"] == scales["layer1.0.downsample.0"]["output"]
    assert scales["layer1.1.conv3"]["residual"] == scales["layer1.0.conv3"]["output"]
    assert scales["layer2.0.conv1"]["input"] == scales["layer1.2.conv3"]["output"]
    assert scales["layer1.0.conv1"]["residual"] is None and len(scales["conv1"]["weight"]) == 64
    head = quantized.avgpool[0]
    assert isinstance(head, Dequantize) and float(head.scale) == scales["layer4.2.conv3"]["output"]


def test_weights_are_per_channel_symmetric_int8_of_the_folded_weight():
    torch.manual_seed(0)
    model = cr.resnet18(num_classes=10).eval()
    quantized = cr.quantize(model, torch.randn(2, 3, 32, 32), "max")
    folded = cr.fuse_bn(cr.resnet18(num_classes=10).eval())
    folded.load_state_dict(cr.fuse_bn(model.eval()).state_dict())  # the same folding, for the float weights
    conv, float_conv = quantized.layer2[0].conv1, folded.layer2[0].conv1
    w = float_conv.weight.detach().double()
    amax = w.abs().amax((1, 2, 3))
    torch.testing.assert_close(conv.weight_scale.double(), amax / 127, rtol=1e-6, atol=0)
    assert conv.weight.abs().amax((1, 2, 3)).eq(127).all()
    step = (conv.weight.double() * conv.weight_scale.double().view(-1, 1, 1, 1) - w).abs()
    assert (step <= conv.weight_scale.double().view(-1, 1, 1, 1) / 2 + 1e-12).all()


def test_resnext_quantizes_and_stays_close_to_float():
    torch.manual_seed(0)
    model = cr.resnext50_32x4d(num_classes=10).eval()
    x = torch.randn(4, 3, 64, 64)
    quantized = cr.quantize(model, x, "max")
    with torch.no_grad():
        expected, actual = model(x), quantized(x)
    assert (actual - expected).abs().max() < 0.1 * expected.abs().max()


def test_a_quantized_state_dict_loads_into_another_quantized_model(digits):
    a = cr.quantize(digits.model, digits.images[digits.calibration], "max")
    b = cr.quantize(digits.model, digits.images[digits.train[:16]], "max")
    b.load_state_dict(a.state_dict())
    x = digits.images[digits.test[:32]]
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize(
    ("model", "data", "kwargs", "error", "message"),
    [
        (lambda: torch.nn.Conv2d(3, 8, 3), torch.zeros(1, 3, 8, 8), {}, TypeError, "cutlass_resnet ResNet"),
        (lambda: cr.resnet18(), torch.zeros(1, 3, 32, 32), {"method": "mse"}, ValueError, "one of entropy"),
        (lambda: cr.resnet18(), [], {"method": "max"}, ValueError, "gave no images"),
        (lambda: cr.resnet18(), ["a"], {"method": "max"}, TypeError, "image tensors"),
        (lambda: cr.resnet18(), torch.full((1, 3, 32, 32), float("nan")), {"method": "max"}, ValueError, "NaN"),
    ],
)
def test_bad_arguments_say_what_to_do(model, data, kwargs, error, message):
    with pytest.raises(error, match=message):
        cr.quantize(model(), data, **kwargs)


def test_a_quantized_model_is_not_quantized_again():
    quantized = cr.quantize(cr.resnet18().eval(), torch.zeros(1, 3, 32, 32), "max")
    with pytest.raises(ValueError, match="already quantized"):
        cr.quantize(quantized, torch.zeros(1, 3, 32, 32), "max")


def test_casting_a_quantized_model_keeps_its_scales_fp32_and_its_int8_numbers(digits):
    quantized = cr.quantize(digits.model, digits.images[digits.calibration], "max")
    x = digits.images[digits.test[:32]].half()
    with torch.no_grad():
        expected = quantized.forward_features(x.float())
        half = quantized.half()
        conv = half.layer1[0].conv1
        assert conv.weight.dtype == torch.int8 and conv.alpha.dtype == conv.weight_scale.dtype == torch.float32
        assert half.avgpool[0].scale.dtype == torch.float32 and half.avgpool[0].dtype == torch.float16
        features = half.forward_features(x)
        assert features.dtype == torch.int8 and torch.equal(features, expected)
        assert half.forward_head(features, pre_logits=True).dtype == torch.float16


def test_a_quantized_model_saves_and_loads_with_its_scales(digits, tmp_path):
    quantized = cr.quantize(digits.model, digits.images[digits.calibration], "percentile", percentile=99.9)
    folder = cr.save_pretrained(quantized, tmp_path / "int8")
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization"] == {"method": "percentile", "percentile": 99.9} and config["fused"]
    loaded = cr.from_pretrained(folder)
    assert quantized_scales(loaded) == quantized_scales(quantized)
    assert loaded.quantization == quantized.quantization
    x = digits.images[digits.test[:64]]
    with torch.no_grad():
        assert torch.equal(loaded(x), quantized(x))


def test_an_int8_file_exports_as_qdq_onnx_not_as_float_variants(digits, tmp_path):
    from cutlass_resnet.pretrained import export

    folder = cr.save_pretrained(digits.quantized("max"), tmp_path / "q")
    with pytest.raises(ValueError, match="holds an int8 model"):
        export(None, str(folder), tmp_path / "out")
    assert not (tmp_path / "out").exists()
