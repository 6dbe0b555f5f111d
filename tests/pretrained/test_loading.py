"""load_torchvision_state_dict: wrappers, fused targets, and the errors a wrong state dict gets."""

from __future__ import annotations

import pytest
import torch
import torchvision

import cutlass_resnet
from cutlass_resnet import fuse_bn, load_torchvision_state_dict
from cutlass_resnet.testing import torchvision_model_with_statistics


@pytest.fixture(scope="module")
def tv18():
    return torchvision_model_with_statistics("resnet18", seed=7, image_size=32).double()


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(8))


def fresh(fused=False, **kwargs):
    model = cutlass_resnet.resnet18(**kwargs).double().eval()
    return fuse_bn(model) if fused else model


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod."])
def test_loads_wrapped_state_dicts(tv18, x, fused, prefix):
    state_dict = {prefix + k: v for k, v in tv18.state_dict().items()}
    model = fresh(fused)
    result = load_torchvision_state_dict(model, state_dict)
    assert result.missing_keys == [] and result.unexpected_keys == []
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv18(x), rtol=1e-9, atol=1e-9)


def test_loads_from_a_compiled_torchvision_model(tv18, x):
    compiled = torch.compile(tv18)
    assert next(iter(compiled.state_dict())).startswith("_orig_mod.")
    model = fresh(fused=True)
    load_torchvision_state_dict(model, compiled.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv18(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("fused", [False, True])
def test_wrong_num_classes_names_key_shapes_and_fix(tv18, fused):
    with pytest.raises(
        ValueError, match=r"'fc.weight' has shape \(1000, 512\) but the model expects \(10, 512\).*num_classes=1000"
    ):
        load_torchvision_state_dict(fresh(fused, num_classes=10), tv18.state_dict())


@pytest.mark.parametrize("fused", [False, True])
def test_wrong_architecture_names_first_mismatch(fused):
    state_dict = torchvision.models.resnet50().state_dict()
    with pytest.raises(
        ValueError, match=r"'layer1.0.conv1.weight' has shape \(64, 64, 1, 1\) but the model expects \(64, 64, 3, 3\)"
    ):
        load_torchvision_state_dict(fresh(fused), state_dict)


@pytest.mark.parametrize("fused", [False, True])
def test_missing_and_unexpected_keys(tv18, fused):
    state_dict = dict(tv18.state_dict())
    del state_dict["layer3.1.bn2.running_var"]
    state_dict["extra.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match=r"missing key 'layer3.1.bn2.running_var' and unexpected key 'extra.weight'"):
        load_torchvision_state_dict(fresh(fused), state_dict)
    result = load_torchvision_state_dict(fresh(fused), state_dict, strict=False)
    assert "layer3.1.bn2.running_var" in result.missing_keys
    assert result.unexpected_keys == ["extra.weight"]


def test_mismatched_norm_statistics_in_fused_load(tv18):
    state_dict = dict(tv18.state_dict())
    state_dict["layer2.0.bn1.running_mean"] = torch.zeros(3)
    with pytest.raises(
        ValueError, match=r"'layer2.0.bn1.running_mean' has shape \(3,\) but the model expects \(128,\)"
    ):
        load_torchvision_state_dict(fresh(fused=True), state_dict)


def test_fused_load_into_half_model_rounds_once(tv18, x):
    """Folded from the fp64 source state dict, then rounded to fp16 once."""
    model = fuse_bn(cutlass_resnet.resnet18().eval()).half()
    load_torchvision_state_dict(model, tv18.state_dict())
    conv, bn = tv18.layer1[0].conv1, tv18.layer1[0].bn1
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    assert torch.equal(model.layer1[0].conv1.weight, (conv.weight * scale[:, None, None, None]).half())
    assert torch.equal(model.layer1[0].conv1.bias, (bn.bias - bn.running_mean * scale).half())


def test_rejects_other_models(tv18):
    with pytest.raises(TypeError, match="expects a cutlass_resnet ResNet"):
        load_torchvision_state_dict(torchvision.models.resnet18(), tv18.state_dict())


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "fused,variant",
    [(f, v) for f in (False, True) for v in ("missing", "extra", "other arch", "wrong shape")]
    + [(False, "fused into unfused")],  # a fused model takes a fused state dict as well as torchvision's
)
def test_a_failed_load_leaves_the_model_as_it_was(tv18, fused, variant):
    state_dict = dict(tv18.state_dict())
    if variant == "missing":
        del state_dict["layer4.1.conv2.weight"]
    elif variant == "extra":
        state_dict["layer5.0.conv1.weight"] = torch.zeros(1)
    elif variant == "other arch":
        state_dict = torchvision.models.resnet34().double().state_dict()
    elif variant == "fused into unfused":
        state_dict = fresh(fused=True).state_dict()
    else:
        state_dict["fc.weight"] = torch.zeros(10, 512, dtype=torch.float64)
    model = fresh(fused)
    before = _snapshot(model)
    with pytest.raises(ValueError, match="nothing was loaded"):  # StateDictMismatchError is a ValueError too
        load_torchvision_state_dict(model, state_dict)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_mismatch_is_also_the_runtime_error_load_state_dict_raises(tv18):
    from cutlass_resnet import StateDictMismatchError

    with pytest.raises(RuntimeError) as info:
        load_torchvision_state_dict(fresh(), torchvision.models.resnet34().state_dict())
    assert isinstance(info.value, StateDictMismatchError)


def test_folding_on_load_uses_each_norm_s_own_eps(x):
    """A model built with BatchNorm eps=1e-3, fused, then loaded from a torchvision state dict of the same
    architecture: folded with 1e-3, not torch's default 1e-5."""
    from functools import partial

    norm = partial(torch.nn.BatchNorm2d, eps=1e-3)
    reference = torchvision_model_with_statistics("resnet18", seed=9, image_size=32, norm_layer=norm).double()
    model = fuse_bn(cutlass_resnet.resnet18(norm_layer=norm).double().eval())
    load_torchvision_state_dict(model, reference.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-9, atol=1e-9)
