"""convert(): any CNN's convs onto the op, BatchNorm folded where it directly follows a conv, checked against the
unconverted torchvision model."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torchvision
from conftest import assert_within_twice_aten
from torch import fx, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.ops.misc import FrozenBatchNorm2d

import cutlass_resnet
from cutlass_resnet.nn import Conv2d
from cutlass_resnet.ops import dispatch


def with_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode with non-trivial BatchNorm statistics, so that folding is exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            n = m.running_mean.numel()
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


# name -> (kwargs, folded norms, ReLUs in an epilogue, residual adds in an epilogue): from each architecture
MODELS = {
    "resnet50": ({}, 53, 49, 16),
    "resnext50_32x4d": ({}, 53, 49, 16),
    "regnet_y_400mf": ({}, 53, 65, 16),  # SE blocks' convs have no norm: their ReLU is fused all the same
    "vgg11_bn": ({}, 8, 8, 0),
    "densenet121": ({}, 59, 59, 0),  # a norm before its conv (norm1 -> relu1 -> conv1) is never folded
    "mobilenet_v2": ({}, 52, 0, 10),  # ReLU6 stays a module; depthwise convs run on the reference
    "googlenet": ({"aux_logits": False, "init_weights": True}, 57, 57, 0),
}


@pytest.mark.parametrize("name", MODELS)
def test_converted_models_compute_as_torchvision_s(name):
    kwargs, folded, relus, residuals = MODELS[name]
    torch.manual_seed(0)
    theirs = with_statistics(getattr(torchvision.models, name)(**kwargs))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = theirs.double()(x.double())
    theirs.float()
    convs = sum(isinstance(m, nn.Conv2d) for m in theirs.modules())

    plain = cutlass_resnet.convert(theirs, fuse_bn=False)
    assert plain.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in plain.state_dict().items())
    assert sum(isinstance(m, Conv2d) for m in plain.modules()) == convs == len(plain.conversion.converted)
    assert not any(isinstance(m, Conv2d) for m in theirs.modules())  # a copy was converted

    fused = cutlass_resnet.convert(theirs)
    report = fused.conversion
    assert (len(report.folded), len(report.relu), len(report.residual)) == (folded, relus, residuals)
    assert (report.left, report.found_by) == ({}, "torch.fx")
    assert (
        sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
        == sum(isinstance(m, nn.BatchNorm2d) for m in theirs.modules()) - folded
    )
    with torch.no_grad():
        for model in (plain, fused):
            y = model(x)
            assert (y.double() - expected).abs().max() <= 1e-5 * expected.abs().max(), name
        # bf16 on the reference (what a kernel computes: one rounding), within twice aten's own bf16 error
        aten = copy.deepcopy(theirs).bfloat16()(x.bfloat16())
        assert_within_twice_aten(cutlass_resnet.convert(theirs, dtype=torch.bfloat16)(x.bfloat16()), aten, expected)


def test_the_converted_model_loads_the_original_s_checkpoints_both_ways():
    theirs = torchvision.models.resnet18().eval()
    ours = cutlass_resnet.convert(theirs, fuse_bn=False)
    other = torchvision.models.resnet18().eval()
    ours.load_state_dict(other.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), other(x), rtol=1e-5, atol=1e-5)


class Untraceable(nn.Module):
    """Control flow on a tensor's value: torch.fx cannot trace it, but its submodules trace."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.body(x)
        return self.head(y) if y.sum() > 0 else -self.head(y)


class Standardized(nn.Conv2d):
    """A conv with its own forward (weight standardisation, as timm's StdConv2d)."""

    def forward(self, x):
        w = (self.weight - self.weight.mean((1, 2, 3), keepdim=True)) / self.weight.std((1, 2, 3), keepdim=True)
        return self._conv_forward(x, w, self.bias)


def test_an_untraceable_model_is_fused_per_submodule_and_custom_convs_are_left():
    torch.manual_seed(0)
    model = with_statistics(Untraceable())
    model.head = Standardized(8, 4, 1)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
        ours = cutlass_resnet.convert(model)
        torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-5)
    report = ours.conversion
    assert report.found_by == "torch.fx, per submodule where the module above did not trace: Untraceable (TraceError)"
    assert report.folded == [("body.0", "body.1")] and report.relu == ["body.0"]
    assert report.left == {"head": "Standardized has its own forward"} and isinstance(ours.head, Standardized)
    assert isinstance(ours.body[1], nn.Identity) and isinstance(ours.body[2], nn.Identity)


def test_fusing_needs_eval_mode_and_the_dtype_rounds_once():
    model = torchvision.models.resnet18()
    with pytest.raises(ValueError, match=r"call model.eval\(\) first, or fuse_bn=False"):
        cutlass_resnet.convert(model)
    model = with_statistics(model)
    half = cutlass_resnet.convert(model, dtype=torch.float16)
    w, b = cutlass_resnet.nn.fold_bn(model.conv1.weight, None, *[getattr(model.bn1, k) for k in (
        "running_mean", "running_var", "eps", "weight", "bias")])  # fmt: skip
    assert torch.equal(half.conv1.weight, w.half()) and torch.equal(half.conv1.bias, b.half())


def test_detection_and_segmentation_models_convert():
    """Faster R-CNN does not trace as a whole: its backbone (frozen BatchNorm) and FPN do, and are fused; DeepLabV3
    traces whole. Each computes as before (the detector's backbone features, the segmenter's logits)."""
    torch.manual_seed(0)
    detector = with_statistics(
        torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    )
    ours = cutlass_resnet.convert(detector)
    assert len(ours.conversion.folded) == 53 and "FasterRCNN (TraceError)" in ours.conversion.found_by
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        expected, features = detector.backbone(x), ours.backbone(x)
        for key in expected:
            scale = expected[key].abs().max()
            assert (features[key] - expected[key]).abs().max() <= 1e-5 * scale, key
        assert ours([x[0]])[0]["boxes"].shape[1] == 4
    segmenter = with_statistics(torchvision.models.segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None))
    ours = cutlass_resnet.convert(segmenter)
    assert ours.conversion.found_by == "torch.fx" and len(ours.conversion.folded) == 60
    with torch.no_grad():
        expected, y = segmenter(x)["out"], ours(x)["out"]
    assert (y - expected).abs().max() <= 1e-5 * expected.abs().max()


# timm name -> (norms folded, ReLUs in an epilogue, residual adds in an epilogue)
TIMM = {
    "resnet50d": (55, 51, 16),  # the DropBlock between BatchNorm and ReLU returns its input in eval mode
    "seresnext26d_32x4d": (31, 31, 4),  # SE convs have no norm; SE between conv and add: the shortcut conv's add
    "regnety_008": (47, 57, 14),  # timm's BatchNormAct2d: folded, its ReLU into the epilogue
}


@pytest.mark.parametrize("name", TIMM)
def test_timm_models_convert(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    theirs = with_statistics(timm.create_model(name, pretrained=False))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = theirs.double()(x.double())
    theirs.float()
    ours = cutlass_resnet.convert(theirs)
    report = ours.conversion
    assert (len(report.folded), len(report.relu), len(report.residual)) == TIMM[name]
    with torch.no_grad():
        y = ours(x)
    assert (y.double() - expected).abs().max() <= 1e-5 * expected.abs().max()


class Residual(nn.Module):
    """A hand-written CNN: conv-BN-ReLU, a block with a residual add, a circular-padded conv, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.circular = nn.Conv2d(16, 8, 3, padding=1, padding_mode="circular")
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(self.bn2(self.conv(x)) + x)
        return self.fc(self.circular(x).mean((2, 3)))


def test_a_hand_written_residual_cnn_and_bad_input():
    torch.manual_seed(0)
    theirs = with_statistics(Residual())
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        expected = theirs.double()(x.double())
        theirs.float()
        ours = cutlass_resnet.convert(theirs)
        report = ours.conversion
        assert report.folded == [("stem", "bn"), ("conv", "bn2")] and report.relu == ["stem", "conv"]
        assert report.residual == ["conv"] and report.unfused == {"circular": "followed by mean"}
        assert isinstance(ours, fx.GraphModule) and type(ours).__name__ == "Residual"  # its forward does the add
        assert isinstance(ours.circular, Conv2d) and ours.circular.padding_mode == "circular"
        assert (ours(x).double() - expected).abs().max() <= 1e-5 * expected.abs().max()
        same = cutlass_resnet.convert(copy.deepcopy(theirs), inplace=True)  # the model stays what it was
        assert type(same) is Residual and same.conversion.residual == []
        assert same.conversion.unfused["conv"] == (
            "not given the residual add after it: the add is in the model's own forward: "
            "convert(inplace=False) fuses it"
        )
        assert (same(x).double() - expected).abs().max() <= 1e-5 * expected.abs().max()
    with pytest.raises(ValueError, match="Linear has no nn.Conv2d: there is nothing to put on the kernels"):
        cutlass_resnet.convert(nn.Linear(3, 4))


class OpCounter(TorchDispatchMode):
    """How many times each op runs."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        self.ops[name] = self.ops.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def resnet50d():
    return pytest.importorskip("timm").create_model("resnet50d", pretrained=False)


@pytest.mark.parametrize("build", [torchvision.models.resnet50, resnet50d], ids=["resnet50", "timm:resnet50d"])
def test_every_conv_bn_relu_and_conv_bn_add_relu_is_one_conv_call(build):
    """Nothing but the op runs between the stem and the pooling: no norm, add or ReLU of its own."""
    torch.manual_seed(0)
    theirs = with_statistics(build())
    ours = cutlass_resnet.convert(theirs)
    convs = sum(isinstance(m, nn.Conv2d) for m in theirs.modules())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), OpCounter() as counter:
        ours(x)
    assert counter.ops["cutlass_resnet.conv2d_fprop"] == convs
    elementwise = {op for op in counter.ops if any(k in op for k in ("relu", "add", "norm"))}
    assert elementwise == {"aten.addmm"}  # the classifier's Linear
    assert len(ours.conversion.residual) == 16 and not ours.conversion.unfused
    block = ours.layer1[0]
    assert isinstance(block, fx.GraphModule) and type(block).__name__ == "Bottleneck"
    assert block.conv3.relu and "conv3" in block.code and "residual" not in block.code


def test_what_is_not_fused_is_said_conv_by_conv():
    torch.manual_seed(0)
    theirs = with_statistics(torchvision.models.densenet121())
    ours = cutlass_resnet.convert(theirs)
    unfused = ours.conversion.unfused
    assert unfused["features.denseblock1.denselayer1.conv2"] == "its output has several users"  # every later cat
    assert unfused["features.denseblock4.denselayer16.conv2"] == "followed by cat"
    assert unfused["features.transition1.conv"] == "followed by AvgPool2d 'features.transition1.pool'"
    convs = sum(isinstance(m, nn.Conv2d) for m in theirs.modules())
    assert len(unfused) == convs - len(ours.conversion.folded)  # all but the stem: their norm comes first


def test_a_converted_model_works_with_torch_s_tools(tmp_path):
    """torch.compile, torch.export, a plain ONNX export (standard operators, on ONNX Runtime), FX feature
    extraction, pickling and state dicts to and from a fresh conversion, all on a fused model with fused blocks."""
    onnx, onnxruntime = pytest.importorskip("onnx"), pytest.importorskip("onnxruntime")
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    theirs = with_statistics(torchvision.models.resnet18(num_classes=10))
    ours = cutlass_resnet.convert(theirs)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = theirs.double()(x.double())
        theirs.float()
        y = ours(x)
        assert (y.double() - expected).abs().max() <= 1e-5 * expected.abs().max()

        torch._dynamo.reset()
        assert torch.equal(torch.compile(ours, fullgraph=True, backend="aot_eager")(x), y)

        program = torch.export.export(ours, (x,))
        targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
        assert targets.count("cutlass_resnet.conv2d_fprop.default") == 20
        assert not [t for t in targets if "batch_norm" in t or "relu" in t or t.startswith("aten.add")]
        assert torch.equal(program.module()(x), y)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's
            torch.onnx.export(ours, (x,), str(tmp_path / "m.onnx"), dynamo=False)
        nodes = onnx.load(str(tmp_path / "m.onnx")).graph.node
        assert {n.domain for n in nodes} <= {"", "ai.onnx"} and {"Conv", "Add", "Relu"} <= {n.op_type for n in nodes}
        session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        assert abs(logits - expected.numpy()).max() <= 1e-4 * expected.abs().max().item()

        features = create_feature_extractor(ours, {"layer3": "c4", "layer4": "c5"})(x)
        reference = create_feature_extractor(theirs, {"layer3": "c4", "layer4": "c5"})(x)
        for key in reference:
            assert (features[key] - reference[key]).abs().max() <= 1e-5 * reference[key].abs().max(), key

        torch.save(ours, tmp_path / "model.pt")
        assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=False)(x), y)
        fresh = cutlass_resnet.convert(with_statistics(torchvision.models.resnet18(num_classes=10), seed=1))
        assert fresh.state_dict().keys() == ours.state_dict().keys()
        assert not torch.equal(fresh(x), y)
        fresh.load_state_dict(ours.state_dict())
        assert torch.equal(fresh(x), y)


@pytest.mark.parametrize(
    "build,capability,dtype",
    [(torchvision.models.resnet50, "8.0", torch.float16), (resnet50d, "9.0", torch.bfloat16)],
    ids=["resnet50-8.0-f16", "timm:resnet50d-9.0-bf16"],
)
def test_converted_models_on_the_emulated_gpu(launches, build, capability, dtype):
    """Every conv of the converted model on a kernel (strict: none falls back), each launch computed by CUTLASS's
    host reference; within twice aten's error at the same precision, against float64."""
    torch.manual_seed(0)
    theirs = with_statistics(build())
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        expected = copy.deepcopy(theirs).double()(x.double())
        aten = copy.deepcopy(theirs).to(dtype)(x.to(dtype))
    ours = cutlass_resnet.convert(theirs, dtype=dtype).to(memory_format=torch.channels_last)
    with torch.no_grad(), dispatch.emulate(capability):
        y = ours(x.to(dtype))
    assert_within_twice_aten(y, aten, expected)
    assert any(k.startswith("sm90") for k in launches) == (capability == "9.0")
    assert any("stem" in k for k in launches)


class GlobalContext(nn.Module):
    """GCNet's add: a conv of the pooled input (N, C, 1, 1) added to the input, broadcast over its pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Conv2d(8, 8, 1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        x = self.conv(x)
        return torch.relu(x + self.bn(self.fc(x.mean((2, 3), keepdim=True))))


def test_an_add_that_broadcasts_is_computed_after_the_conv():
    """The epilogue adds a residual of the output's shape: a broadcast one is added after the conv instead."""
    torch.manual_seed(0)
    theirs = with_statistics(GlobalContext())
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        expected = theirs.double()(x.double())
        ours = cutlass_resnet.convert(theirs.float())
        assert ours.conversion.residual == ["fc"] and ours.fc.relu
        assert (ours(x).double() - expected).abs().max() <= 1e-5 * expected.abs().max()
