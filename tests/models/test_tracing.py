"""The models where torchvision's go: FX (torchvision's feature extractor), TorchScript, torchvision's registry."""

from __future__ import annotations

import inspect

import pytest
import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor

import cutlass_resnet
from cutlass_resnet.testing import ARCHS, torchvision_model_with_statistics

NODES = {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5", "avgpool": "pool"}


@pytest.fixture(scope="module", params=ARCHS)
def pair(request):
    """(torchvision's model, ours with its weights, unfused), float64, eval."""
    reference = torchvision_model_with_statistics(request.param, seed=11, image_size=32).double()
    ours = getattr(cutlass_resnet, request.param)().double().eval()
    cutlass_resnet.load_torchvision_state_dict(ours, reference.state_dict())
    return reference, ours


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_torchvision_s_feature_extractor_traces_every_model(pair, fused):
    reference, ours = pair
    if fused:
        ours = cutlass_resnet.fuse_bn(ours)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with pytest.warns(UserWarning) if fused else _nothing():  # it puts the model in train mode to trace it
        extractor = create_feature_extractor(ours, NODES)
    expected = create_feature_extractor(reference, NODES)(x)
    with torch.no_grad():
        features = extractor(x)
    assert features.keys() == expected.keys()
    for name, value in features.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-9, atol=1e-9, msg=name)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("arch", ["resnet18", "resnext50_32x4d"])
@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_models_script(arch, fused):
    model = getattr(cutlass_resnet, arch)(num_classes=10).eval()
    if fused:
        cutlass_resnet.fuse_bn(model)
    x = torch.randn(2, 3, 32, 32)
    with pytest.warns(FutureWarning):  # torch.jit.script is deprecated, and still what some deployments use
        scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=0, atol=0)
    with pytest.raises(torch.jit.Error, match=r"ResNet expects a batch of images of shape \(N, C, H, W\)"):
        scripted(x[0])


def test_torchvision_s_registry_reads_our_builders():
    for arch in ARCHS:
        builder = getattr(cutlass_resnet, arch)
        assert torchvision.models.get_model_weights(builder) is torchvision.models.get_model_weights(arch)
        params = inspect.signature(builder).parameters
        assert all(params[p].kind is inspect.Parameter.KEYWORD_ONLY for p in ("weights", "fuse_bn", "dtype", "device"))
        assert "fuse_bn:" in builder.__doc__ and "dtype:" in builder.__doc__


def test_list_models_by_module_as_torchvision():
    from cutlass_resnet.models import list_models

    assert list_models(module=cutlass_resnet.models) == list_models() == list_models(module=cutlass_resnet)
    assert list_models(module=torchvision.models) == []
    assert list_models(cutlass_resnet.models, include="wide*") == ["wide_resnet101_2", "wide_resnet50_2"]
