"""The model registry answers as torchvision's does, for the same names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

import cutlass_resnet
from cutlass_resnet import get_model, get_model_builder, get_model_weights, list_models

TORCHVISION_RESNETS = torchvision.models.list_models(include=["resnet*", "resnext*", "wide_resnet*"])


def test_lists_torchvision_resnet_family():
    assert list_models() == sorted(TORCHVISION_RESNETS) and len(list_models()) == 10
    assert list_models(include="resnext*") == ["resnext101_32x8d", "resnext101_64x4d", "resnext50_32x4d"]
    assert list_models(include="resnet*", exclude=["resnet1*"]) == ["resnet34", "resnet50"]


@pytest.mark.parametrize("name", TORCHVISION_RESNETS)
def test_weights_and_builders_match_torchvision(name):
    assert get_model_weights(name) is torchvision.models.get_model_weights(name)
    assert get_model_weights(getattr(cutlass_resnet, name)) is get_model_weights(name)
    assert get_model_builder(name) is getattr(cutlass_resnet, name)
    with torch.device("meta"):
        ours, theirs = get_model(name, num_classes=7), torchvision.models.get_model(name, num_classes=7)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def test_get_model_passes_builder_kwargs():
    model = get_model("resnet18", num_classes=3, dtype=torch.float64, fuse_bn=True)
    assert model.fused and model.fc.weight.dtype == torch.float64 and model.fc.out_features == 3


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="unknown model 'vgg16'; cutlass_resnet has resnet101, resnet152"):
        get_model("vgg16")


def test_weights_enums_are_torchvision_s():
    assert cutlass_resnet.ResNet50_Weights is torchvision.models.ResNet50_Weights
    assert (
        cutlass_resnet.get_weight("ResNet50_Weights.IMAGENET1K_V2") is torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    )


def test_torch_hub_entry_points(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    root = Path(__file__).resolve().parents[2]
    hubconf = (root / "hubconf.py").read_text()
    assert all(f"    {name},\n" in hubconf for name in list_models())
    model = torch.hub.load(str(root), "resnext50_32x4d", source="local", num_classes=3, fuse_bn=True)
    assert isinstance(model, cutlass_resnet.ResNet) and model.fused and model.fc.out_features == 3


@pytest.mark.parametrize("name", list_models())
def test_model_name_of_a_model_or_a_state_dict(name):
    """Every architecture is told apart by its conv weights' shapes, fused or not, whatever its class count."""
    with torch.device("meta"):
        model = get_model(name, num_classes=7).eval()
        reference = getattr(torchvision.models, name)()
    assert cutlass_resnet.model_name_of(model) == name
    assert cutlass_resnet.model_name_of(reference.state_dict()) == name
    assert cutlass_resnet.model_name_of(cutlass_resnet.fuse_bn(model)) == name


def test_model_name_of_something_else_is_an_error():
    with pytest.raises(ValueError, match="match none of the architectures"):
        cutlass_resnet.model_name_of(torch.nn.Conv2d(3, 8, 3))
