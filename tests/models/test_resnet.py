"""The model zoo against torchvision's: structure, state dicts, outputs, gradients, inputs."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from conftest import max_error
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

import cutlass_resnet
from cutlass_resnet.testing import ARCHS, torchvision_model_with_statistics

CL = torch.channels_last


def ours_from(reference: nn.Module, arch: str, **kwargs) -> nn.Module:
    model = getattr(cutlass_resnet, arch)(**kwargs).eval()
    model.load_state_dict(reference.state_dict())
    return model


def test_all_ten_builders_exported():
    assert len(ARCHS) == 10
    for arch in ARCHS:
        assert getattr(cutlass_resnet, arch) is getattr(cutlass_resnet.models, arch)


def test_structure_matches_torchvision(tv_reference):
    ours = getattr(cutlass_resnet, tv_reference.arch)()
    theirs = tv_reference.model
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in theirs_sd.items()}
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    # and back: torchvision loads ours strictly
    copy.deepcopy(theirs).load_state_dict(ours_sd, strict=True)


def test_fp32_outputs_match_torchvision(tv_reference):
    model = ours_from(tv_reference.model, tv_reference.arch)
    with torch.no_grad():
        y = model(tv_reference.x)
    assert y.dtype == torch.float32 and y.shape == tv_reference.expected.shape
    assert max_error(y, tv_reference.expected) <= 2 * tv_reference.fp32_error


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "resnext50_32x4d"])
def test_training_gradients_match_torchvision(arch):
    """Train mode (BatchNorm on batch statistics), float64: loss, gradients and running stats."""
    theirs = torchvision_model_with_statistics(arch, seed=2, image_size=32).double().train()
    ours = getattr(cutlass_resnet, arch)().double().train()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    target = torch.tensor([1, 7, 42])
    losses = []
    for model in (ours, theirs):
        loss = nn.functional.cross_entropy(model(x), target)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-10, atol=0)
    ours_grads = {n: p.grad for n, p in ours.named_parameters()}
    for name, p in theirs.named_parameters():
        torch.testing.assert_close(ours_grads[name], p.grad, rtol=1e-7, atol=1e-9, msg=name)
    theirs_buffers = dict(theirs.named_buffers())
    for name, b in ours.named_buffers():
        torch.testing.assert_close(b, theirs_buffers[name], rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize(
    "arch,kwargs",
    [
        ("resnet18", dict(num_classes=10)),
        ("resnet50", dict(zero_init_residual=True)),
        ("resnet50", dict(replace_stride_with_dilation=[False, True, True])),
        ("resnet50", dict(groups=2, width_per_group=32)),
        ("resnet34", dict(norm_layer=FrozenBatchNorm2d)),
        ("resnext50_32x4d", dict(replace_stride_with_dilation=[False, False, True], num_classes=7)),
    ],
)
def test_builder_kwargs_match_torchvision(arch, kwargs):
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, arch)(**kwargs).double().eval()
    ours = getattr(cutlass_resnet, arch)(**kwargs).double().eval()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    if kwargs.get("zero_init_residual"):
        assert all(b.bn3.weight.abs().sum() == 0 for b in ours.modules() if hasattr(b, "bn3"))
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 40, 48, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-10, atol=1e-10)


def test_builder_rejects_what_torchvision_rejects():
    with pytest.raises(ValueError, match="BasicBlock only supports groups=1"):
        cutlass_resnet.resnet18(groups=2)
    with pytest.raises(NotImplementedError, match="Dilation > 1 not supported in BasicBlock"):
        cutlass_resnet.resnet34(replace_stride_with_dilation=[False, False, True])
    with pytest.raises(ValueError, match="3-element tuple"):
        cutlass_resnet.resnet50(replace_stride_with_dilation=[True])
    with pytest.warns(UserWarning, match="positional"):
        cutlass_resnet.resnet50(None)  # keyword-only, with torchvision's deprecation path


def test_weights_arguments_follow_torchvision():
    """Weight names are checked and num_classes conflicts caught before anything is downloaded."""
    with pytest.raises(ValueError, match="num_classes"):
        cutlass_resnet.resnet50(weights="IMAGENET1K_V2", num_classes=10)
    with pytest.raises(ValueError, match="NOT_A_WEIGHT"):
        cutlass_resnet.resnet50(weights="NOT_A_WEIGHT")
    with pytest.raises(TypeError):
        cutlass_resnet.resnet50(weights=torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    with pytest.warns(UserWarning, match="pretrained"):
        model = cutlass_resnet.resnet18(pretrained=False)
    assert model.fc.out_features == 1000


@pytest.fixture(scope="module")
def resnet18_pair():
    theirs = torchvision_model_with_statistics("resnet18", seed=5, image_size=32)
    return ours_from(theirs, "resnet18"), theirs


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (2, 3, 7, 5), (1, 3, 33, 17), (0, 3, 32, 32), (3, 3, 2, 64)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_any_input_size_and_layout(resnet18_pair, shape, channels_last):
    ours, theirs = resnet18_pair
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=CL)
    with torch.no_grad():
        y, expected = ours(x), theirs(x.contiguous())
    assert y.shape == (shape[0], 1000)
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "x,error,match",
    [
        (torch.randn(2, 1, 32, 32), ValueError, r"got \(2, 1, 32, 32\): one channel .grayscale.*x.expand\(-1, 3"),
        (torch.randn(3, 32, 32), ValueError, r"a single image.*x.unsqueeze\(0\)"),
        (torch.randn(2, 32, 32, 3), ValueError, r"\(N, H, W, C\).*x.permute\(0, 3, 1, 2\)"),
        (torch.randn(2, 4, 32, 32), ValueError, r"4 channels where the model takes 3"),
        (torch.randn(32, 32), ValueError, r"2 dimensions where the model takes 4"),
        (torch.randn(2, 3, 32, 32).double(), TypeError, r"input dtype torch.float64 differs from weight"),
        (torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), TypeError, r"unsupported dtype torch.uint8"),
        (torch.randn(2, 3, 32, 32, device="meta"), ValueError, r"input is on meta but weight is on cpu"),
    ],
)
def test_bad_input_is_a_clear_error(resnet18_pair, x, error, match):
    with pytest.raises(error, match=match):
        resnet18_pair[0](x)


def test_weights_are_laid_out_as_torchvision_s_and_channels_last_survives_copies():
    convs = [m for m in cutlass_resnet.resnet18().modules() if isinstance(m, nn.Conv2d)]
    assert all(m.weight.is_contiguous() for m in convs)  # as torchvision's: its utilities flatten them with view
    model = copy.deepcopy(cutlass_resnet.resnet18().to(memory_format=CL)).to(torch.bfloat16)
    assert all(m.weight.is_contiguous(memory_format=CL) for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"zero_init_residual": True, "num_classes": 10},
        {"replace_stride_with_dilation": [False, True, True]},
        {"norm_layer": lambda c: nn.GroupNorm(8, c)},
    ],
    ids=["default", "zero_init", "dilation", "groupnorm"],
)
def test_same_seed_same_parameters_as_torchvision(arch, kwargs):
    if arch in ("resnet18", "resnet34") and "replace_stride_with_dilation" in kwargs:
        kwargs = {}  # BasicBlock takes no dilation, in torchvision as here
    torch.manual_seed(0)
    ours = getattr(cutlass_resnet, arch)(**kwargs)
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, arch)(**kwargs)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
