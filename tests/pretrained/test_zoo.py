"""create_model(): torchvision's classification models and timm's by name, converted onto the op, with weights
from a file or fetched as each project fetches them (offline here: the errors)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import max_error
from safetensors.torch import save_file

from cutlass_resnet import WeightsUnavailableError
from cutlass_resnet.nn import Conv2d
from cutlass_resnet.pretrained.preprocess import eval_transform, labels_of, num_classes_of
from cutlass_resnet.pretrained.zoo import create_model
from cutlass_resnet.testing import torchvision_model_with_statistics


def assert_within_twice_fp32(ours: torch.nn.Module, reference: torch.nn.Module) -> None:
    """Within twice the fp32 error of the reference model itself, against it in float64."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs, y = reference(x), ours(x)
        expected = reference.double()(x.double())
    assert max_error(y, expected) <= 2 * max_error(theirs, expected)


def test_a_torchvision_model_from_a_file_computes_as_torchvision_s(tmp_path):
    reference = torchvision_model_with_statistics("regnet_y_400mf", seed=2, num_classes=7)
    save_file(reference.state_dict(), tmp_path / "regnet.safetensors")
    ours = create_model("regnet_y_400mf", tmp_path / "regnet.safetensors")
    assert isinstance(ours.stem[0], Conv2d) and ours.fused and len(ours.conversion.residual) == 16
    assert num_classes_of(ours) == 7 and labels_of(ours) is None
    assert ours.pretrained_source == str(tmp_path / "regnet.safetensors")
    assert_within_twice_fp32(ours, reference)


def test_torchvision_weights_name_their_transform_and_labels(monkeypatch):
    """A converted model with torchvision's weights evaluates with their transform and categories."""
    weights = torchvision.models.RegNet_Y_400MF_Weights.IMAGENET1K_V2
    monkeypatch.setattr(
        "cutlass_resnet.pretrained.zoo.load_weights", lambda member: torchvision.models.regnet_y_400mf().state_dict()
    )
    ours = create_model("regnet_y_400mf", "DEFAULT", fuse_bn=False)
    assert ours.pretrained_source == str(weights) and not ours.fused
    assert labels_of(ours) == weights.meta["categories"]
    assert eval_transform(ours).resize_size == weights.transforms().resize_size == [232]


def test_a_timm_model_from_a_file_computes_as_timm_s(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = timm.create_model("resnet18", num_classes=5).eval()
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    ours = create_model("timm:resnet18", tmp_path / "r18.pth")
    assert num_classes_of(ours) == 5 and len(ours.conversion.residual) == 8
    assert_within_twice_fp32(ours, reference)


def test_weights_that_cannot_be_had_offline_and_unknown_names(monkeypatch, tmp_path):
    pytest.importorskip("timm")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsUnavailableError, match="timm could not fetch the weights of resnet18"):
        create_model("timm:resnet18", "DEFAULT")
    with pytest.raises(WeightsUnavailableError, match="regnet_y_400mf-e6988f5f.pth is not cached"):
        create_model("regnet_y_400mf", "DEFAULT")
    with pytest.raises(ValueError, match="unknown model 'nosuch': cutlass_resnet's"):
        create_model("nosuch")
    with pytest.raises(ValueError, match="timm has no model 'nosuch'"):
        create_model("timm:nosuch")
    with pytest.raises(ValueError, match="unknown weights 'V9'"):
        create_model("regnet_y_400mf", "V9")
