"""convert(): any CNN's convs onto the op, BatchNorm folded where it directly follows a conv, checked against the
unconverted torchvision model."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

import cutlass_resnet
from cutlass_resnet.nn import Conv2d


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


# name -> (kwargs, folded norms, ReLUs in an epilogue): the counts follow from each architecture
MODELS = {
    "resnet50": ({}, 53, 33),  # the ReLU after each block's add stays (a ReLU shared within the block)
    "resnext50_32x4d": ({}, 53, 33),
    "regnet_y_400mf": ({}, 53, 49),  # SE blocks' convs have no norm
    "vgg11_bn": ({}, 8, 8),
    "densenet121": ({}, 59, 59),  # a norm before its conv (norm1 -> relu1 -> conv1) is never folded
    "mobilenet_v2": ({}, 52, 0),  # ReLU6 stays a module; depthwise convs run on the reference
    "googlenet": ({"aux_logits": False, "init_weights": True}, 57, 57),
}


@pytest.mark.parametrize("name", MODELS)
def test_converted_models_compute_as_torchvision_s(name):
    kwargs, folded, relus = MODELS[name]
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
    assert (len(report.folded), len(report.relu), report.left, report.found_by) == (folded, relus, {}, "torch.fx")
    assert (
        sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
        == sum(isinstance(m, nn.BatchNorm2d) for m in theirs.modules()) - folded
    )
    with torch.no_grad():
        for model in (plain, fused):
            y = model(x)
            assert (y.double() - expected).abs().max() <= 1e-5 * expected.abs().max(), name


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


# timm name -> (norms folded, ReLUs in an epilogue)
TIMM = {
    "resnet50d": (55, 19),  # its blocks put a DropBlock (Identity here) between BatchNorm and ReLU: kept
    "seresnext26d_32x4d": (31, 11),  # SE convs have no norm
    "regnety_008": (47, 29),  # timm's BatchNormAct2d: folded, its ReLU into the epilogue
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
    assert (len(ours.conversion.folded), len(ours.conversion.relu)) == TIMM[name]
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
        assert ours.conversion.folded == [("stem", "bn"), ("conv", "bn2")] and ours.conversion.relu == ["stem"]
        assert isinstance(ours.circular, Conv2d) and ours.circular.padding_mode == "circular"
        assert (ours(x).double() - expected).abs().max() <= 1e-5 * expected.abs().max()
    with pytest.raises(ValueError, match="Linear has no nn.Conv2d: there is nothing to put on the kernels"):
        cutlass_resnet.convert(nn.Linear(3, 4))
