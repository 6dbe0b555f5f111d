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
