"""The drop-in MaxPool2d: torch's on the CPU and wherever its kernel does not apply."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import cutlass_resnet


def test_max_pool_is_torch_s_off_the_gpu(monkeypatch):
    pool = cutlass_resnet.nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    assert repr(pool) == repr(torch.nn.MaxPool2d(kernel_size=3, stride=2, padding=1)) and not pool.state_dict()
    monkeypatch.setattr(torch.ops.cutlass_resnet_C, "max_pool2d", None, raising=False)  # must not be called
    x = torch.randn(2, 8, 11, 11).contiguous(memory_format=torch.channels_last)
    assert torch.equal(pool(x), F.max_pool2d(x, 3, 2, 1))
    assert torch.equal(pool(x.half()), F.max_pool2d(x.half(), 3, 2, 1))


def test_resnet_pools_with_it():
    model = cutlass_resnet.resnet18()
    assert isinstance(model.maxpool, cutlass_resnet.nn.MaxPool2d)
    assert isinstance(model.maxpool, torch.nn.MaxPool2d)  # torchvision's code that looks for one still finds it


def test_int8_maps_of_any_size_pool_as_their_float_values_do():
    """aten's own int8 max-pool refuses maps of more than 127 elements."""
    x = torch.randint(-128, 128, (2, 16, 56, 56), dtype=torch.int8).contiguous(memory_format=torch.channels_last)
    y = cutlass_resnet.nn.MaxPool2d(3, 2, 1)(x)
    assert y.dtype == torch.int8
    assert torch.equal(y, F.max_pool2d(x.double(), 3, 2, 1).to(torch.int8))
