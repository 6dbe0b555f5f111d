"""cutlass_resnet.nn.Conv2d as a drop-in for torch.nn.Conv2d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import assert_within_twice_aten
from torch import nn
from torch.fx.experimental.optimization import fuse as fx_fuse
from torch.nn.utils import parametrizations, parametrize, prune

import cutlass_resnet
from cutlass_resnet.nn import Conv2d
from cutlass_resnet.ops import dispatch

CL = torch.channels_last


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2), bias=False),
        dict(kernel_size=3, padding=1, groups=4),
        dict(kernel_size=3, padding="same", dilation=2),
        dict(kernel_size=4, padding="same"),  # asymmetric: one more row/column at the end
        dict(kernel_size=3, padding="valid"),
        dict(kernel_size=3, padding=2, padding_mode="reflect"),
        dict(kernel_size=3, padding=1, padding_mode="circular", stride=2),
        dict(kernel_size=3, padding=1, padding_mode="replicate"),
    ],
)
def test_drop_in_for_torch_conv2d(kwargs):
    torch.manual_seed(0)
    ours = Conv2d(8, 12, **kwargs).double()
    theirs = nn.Conv2d(8, 12, **kwargs).double()
    assert ours.load_state_dict(theirs.state_dict()) is not None
    assert theirs.load_state_dict(ours.state_dict()) is not None
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert isinstance(ours, nn.Conv2d)
    assert ours.weight.stride() == theirs.weight.stride()  # torch's layout: what its utilities view and flatten
    x = torch.randn(2, 8, 9, 10, dtype=torch.float64)
    y = ours(x)
    assert y.is_contiguous(memory_format=CL)
    torch.testing.assert_close(y, theirs(x), rtol=1e-12, atol=1e-12)


def test_fused_residual_and_relu():
    torch.manual_seed(0)
    conv = Conv2d(8, 8, 3, padding=1, relu=True).double()
    x, residual = torch.randn(2, 8, 6, 6, dtype=torch.float64), torch.randn(2, 8, 6, 6, dtype=torch.float64)
    expected = F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1) + residual)
    torch.testing.assert_close(conv(x, residual=residual), expected, rtol=1e-12, atol=1e-12)
    assert "relu=True" in repr(conv)


def test_constructor_matches_torch():
    conv = Conv2d(3, 4, 3, device="meta", dtype=torch.float16)
    assert conv.weight.device.type == "meta" and conv.weight.dtype == torch.float16
    assert not conv.relu
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        Conv2d(3, 4, 3, groups=2)


def test_trains_like_torch_conv2d():
    torch.manual_seed(0)
    ours, theirs = Conv2d(4, 6, 3, padding=1).double(), nn.Conv2d(4, 6, 3, padding=1).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    ours(x).square().sum().backward()
    theirs(x).square().sum().backward()
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad)
    torch.testing.assert_close(ours.bias.grad, theirs.bias.grad)


class Halve(nn.Module):
    def forward(self, w):
        return w * 0.5


PARAMETRIZATIONS = {
    "ln_structured": lambda c: prune.ln_structured(c, "weight", 0.5, n=2, dim=0),
    "l1_unstructured": lambda c: prune.l1_unstructured(c, "weight", 0.3),
    "random_unstructured": lambda c: prune.random_unstructured(c, "weight", 0.3),
    "l1_unstructured_bias": lambda c: prune.l1_unstructured(c, "bias", 0.5),
    "weight_norm": parametrizations.weight_norm,
    "spectral_norm": parametrizations.spectral_norm,
    "register_parametrization": lambda c: parametrize.register_parametrization(c, "weight", Halve()),
}


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("name", PARAMETRIZATIONS)
def test_pruning_and_parametrizations_apply_as_to_torchvision(name, fused):
    """Each changes the same conv of ours and of torchvision's model (with the same weights) the same way, and
    the two models then compute the same, with and without a gradient."""
    torch.manual_seed(0)
    theirs = torchvision.models.resnet18().eval()
    ours = cutlass_resnet.resnet18().eval()
    ours.load_state_dict(theirs.state_dict())
    if fused:
        ours = cutlass_resnet.fuse_bn(ours)
        theirs = fx_fuse(theirs).requires_grad_()  # its folded biases would not require a gradient
        theirs.load_state_dict({k: v for k, v in ours.state_dict().items() if k in theirs.state_dict()}, strict=True)
    bias = torch.randn(64) * 0.1  # the unfused conv has none: one to prune
    for model in (ours, theirs):
        conv = model.get_submodule("layer1.0.conv1")
        if conv.bias is None:
            conv.bias = nn.Parameter(bias.clone())
        torch.manual_seed(2)  # random_unstructured draws the same mask for both
        PARAMETRIZATIONS[name](conv)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)
    ours(x).square().mean().backward()
    theirs(x).square().mean().backward()
    grads = {key: p.grad for key, p in theirs.named_parameters()}
    assert grads.keys() == dict(ours.named_parameters()).keys()
    for key, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, grads[key], rtol=1e-3, atol=1e-5, msg=key)


def test_a_pruned_conv_on_the_gpu_path_reads_the_masked_weight_as_it_changes(emulated_gpu, monkeypatch):
    """On the kernels' path (here the emulated GPU), the first call chooses a kernel and later ones run from C++:
    a pruned weight, then one changed in place, each reach the kernel (against float64 F.conv2d of the masked
    weight)."""
    fast = []
    fast_conv2d = dispatch.fast_conv2d
    monkeypatch.setattr(dispatch, "fast_conv2d", lambda *a: fast.append(fast_conv2d(*a)) or fast[-1])
    torch.manual_seed(0)
    conv = Conv2d(32, 64, 3, padding=1, relu=True).half()
    prune.l1_unstructured(conv, "weight", 0.5)
    conv.to(memory_format=CL)  # weight_orig and the mask as the kernels read them: their product is too
    x = torch.randn(4, 32, 12, 12).half().contiguous(memory_format=CL)
    with torch.no_grad(), dispatch.emulate((8, 0)):
        for step in range(3):
            if step == 2:
                conv.weight_orig.mul_(-1)
            masked = conv.weight_orig * conv.weight_mask
            expected = F.relu(F.conv2d(x.double(), masked.double(), conv.bias.double(), padding=1))
            aten = F.relu(F.conv2d(x.float(), masked.float(), conv.bias.float(), padding=1)).half()
            assert_within_twice_aten(conv(x), aten, expected)
    assert emulated_gpu.calls and fast[0] is None and all(y is not None for y in fast[1:]), "C++ alone after the first"
