"""Our ResNets as torchvision's detection and segmentation backbones, fused and unfused, against the same
models built on torchvision's ResNet with the same weights (float64, so any difference is a bug)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.segmentation.deeplabv3 import _deeplabv3_resnet
from torchvision.models.segmentation.fcn import _fcn_resnet
from torchvision.ops.misc import FrozenBatchNorm2d

import cutlass_resnet
from cutlass_resnet.testing import torchvision_model_with_statistics


def backbones(arch: str, fused: bool, **kwargs):
    """(torchvision's, ours) with one set of weights and BatchNorm statistics, float64, eval."""
    reference = torchvision_model_with_statistics(arch, seed=21, image_size=64, **kwargs).double()
    if kwargs.get("norm_layer") is FrozenBatchNorm2d:  # frozen norms take the measured statistics as they are
        measured = torchvision_model_with_statistics(arch, seed=21, image_size=64).double()
        reference.load_state_dict(measured.state_dict(), strict=False)
    ours = getattr(cutlass_resnet, arch)(**kwargs).double().eval()
    cutlass_resnet.load_torchvision_state_dict(ours, reference.state_dict())
    if fused:
        cutlass_resnet.fuse_bn(ours)
    return reference, ours


def same_head(build, backbone):
    torch.manual_seed(0)  # the heads' random init, drawn alike for both
    return build(backbone).double().eval()


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("detector", [FasterRCNN, RetinaNet])
def test_detection_backbone_with_fpn(fused, detector):
    reference, ours = backbones("resnet18", fused, norm_layer=FrozenBatchNorm2d)
    fpn = [same_head(lambda b: _resnet_fpn_extractor(b, trainable_layers=0), b) for b in (reference, ours)]  # noqa: B023
    x = torch.rand(2, 3, 96, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, features = (f(x) for f in fpn)
    assert features.keys() == expected.keys()
    for level in features:
        torch.testing.assert_close(features[level], expected[level], rtol=1e-9, atol=1e-9)
    models = [
        same_head(lambda b: detector(b, num_classes=5, min_size=96, max_size=128), f)  # noqa: B023
        for f in fpn
    ]
    with torch.no_grad():
        (theirs,), (mine,) = (m([x[0]]) for m in models)
    assert theirs.keys() == mine.keys()
    for key in theirs:
        torch.testing.assert_close(mine[key], theirs[key], rtol=1e-7, atol=1e-7, msg=key)


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("build", [_deeplabv3_resnet, _fcn_resnet], ids=["deeplabv3", "fcn"])
def test_segmentation_backbone_with_dilation(fused, build):
    reference, ours = backbones("resnet50", fused, replace_stride_with_dilation=[False, True, True])
    models = [same_head(lambda b: build(b, num_classes=4, aux=True), backbone) for backbone in (reference, ours)]  # noqa: B023
    x = torch.randn(1, 3, 48, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, got = (m(x) for m in models)
    assert got.keys() == expected.keys() == {"out", "aux"}
    for key in got:
        assert got[key].shape == (1, 4, 48, 48)
        torch.testing.assert_close(got[key], expected[key], rtol=1e-9, atol=1e-9, msg=key)


def test_torchvision_checks_its_backbone_arguments_on_ours():
    with pytest.raises(ValueError, match="Trainable layers should be in the range"):
        _resnet_fpn_extractor(cutlass_resnet.resnet18(), trainable_layers=6)
    assert isinstance(torchvision.models.resnet18().maxpool, torch.nn.MaxPool2d)
