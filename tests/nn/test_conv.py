"""cutlass_resnet.nn.Conv2d as a drop-in for torch.nn.Conv2d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cutlass_resnet.nn import Conv2d

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
    assert ours.weight.is_contiguous(memory_format=CL)
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
