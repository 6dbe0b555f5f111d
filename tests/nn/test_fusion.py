"""fuse_bn: folded models against torchvision, and what a fused block runs."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
from conftest import assert_within_twice_aten, max_error
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.ops.misc import FrozenBatchNorm2d

import cutlass_resnet
from cutlass_resnet import fuse_bn, load_torchvision_state_dict

CL = torch.channels_last


def fused_from(reference, dtype=torch.float32):
    """Fused in float64, then rounded once to ``dtype``."""
    model = getattr(cutlass_resnet, reference.arch)().eval()
    model.load_state_dict(reference.model.state_dict())
    return fuse_bn(model, dtype)


def test_fused_float64_matches_torchvision(tv_reference):
    with torch.no_grad():
        y = fused_from(tv_reference, torch.float64)(tv_reference.x.double())
    torch.testing.assert_close(y, tv_reference.expected, rtol=1e-9, atol=1e-9 * tv_reference.expected.abs().max())


def test_fused_fp32_matches_torchvision(tv_reference):
    with torch.no_grad():
        y = fused_from(tv_reference)(tv_reference.x)
    assert max_error(y, tv_reference.expected) <= 2 * tv_reference.fp32_error


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_low_precision_within_twice_torchvision(tv_reference, dtype):
    x = tv_reference.x.to(dtype)
    with torch.no_grad():
        ours = fused_from(tv_reference, dtype)(x)
        theirs = copy.deepcopy(tv_reference.model).to(dtype)(x)
    assert_within_twice_aten(ours, theirs, tv_reference.expected)


def test_fused_on_load_matches_torchvision(tv_reference):
    """A torchvision state dict loaded straight into a fused model is folded on the fly."""
    model = fuse_bn(getattr(cutlass_resnet, tv_reference.arch)().eval()).double()
    load_torchvision_state_dict(model, tv_reference.model.state_dict())
    with torch.no_grad():
        y = model(tv_reference.x.double())
    torch.testing.assert_close(y, tv_reference.expected, rtol=1e-9, atol=1e-9 * tv_reference.expected.abs().max())


class OpCounter(TorchDispatchMode):
    """Every op that reaches the dispatcher's Python key while active."""

    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def ops_of(module, x):
    with torch.no_grad(), OpCounter() as counter:
        module(x)
    return dict(counter.ops)


@pytest.mark.parametrize(
    "arch,block,inplanes,calls",
    [
        ("resnet50", "layer1.1", 256, 3),
        ("resnet50", "layer1.0", 64, 4),  # with a downsample projection
        ("resnet50", "layer2.0", 256, 4),  # strided, with a downsample projection
        ("resnet18", "layer1.0", 64, 2),
        ("resnet18", "layer2.0", 64, 3),
    ],
)
def test_fused_block_is_only_conv_ops(arch, block, inplanes, calls):
    model = fuse_bn(getattr(cutlass_resnet, arch)().eval()).to(memory_format=CL)  # filters as the kernels read them
    x = torch.randn(2, inplanes, 8, 8).contiguous(memory_format=CL)
    assert ops_of(model.get_submodule(block), x) == {"cutlass_resnet.conv2d_fprop": calls}


def test_fused_model_is_conv_ops_pooling_and_fc():
    """53 conv calls for resnet50 and nothing of BatchNorm, ReLU or add; an NCHW input costs one
    conversion to channels_last, at the stem."""
    model = fuse_bn(cutlass_resnet.resnet50().eval()).to(memory_format=CL)
    head = {
        "aten.max_pool2d_with_indices": 1,
        "aten.mean": 1,
        "aten.as_strided_": 1,
        "aten.view": 1,
        "aten.t": 1,
        "aten.addmm": 1,
    }
    x = torch.randn(1, 3, 64, 64)
    assert ops_of(model, x.contiguous(memory_format=CL)) == {"cutlass_resnet.conv2d_fprop": 53, **head}
    assert ops_of(model, x) == {"aten.clone": 1, "cutlass_resnet.conv2d_fprop": 53, **head}


def test_fuse_removes_norms_and_keeps_parameters_consistent():
    model = fuse_bn(cutlass_resnet.resnext50_32x4d().eval())
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.ReLU)) for m in model.modules())
    keys = model.state_dict().keys()
    assert "layer1.0.downsample.0.bias" in keys and "layer1.0.bn1.weight" not in keys
    assert all(
        m.weight.is_contiguous() and m.bias is not None  # torch's layout, as the unfused model's
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    )
    assert fuse_bn(model) is model  # fusing twice does nothing


def test_fold_is_computed_in_float64_and_rounded_once():
    """An fp16 model's folded weight equals the float64 formula rounded once to fp16."""
    torch.manual_seed(0)
    model = cutlass_resnet.resnet18().eval()
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_var.uniform_(1e-3, 3.0)
                bn.running_mean.normal_()
                bn.weight.normal_()
    model = model.half()
    conv, bn = model.layer2[0].conv1, model.layer2[0].bn1
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    weight = (conv.weight.double() * scale[:, None, None, None]).half()
    bias = (bn.bias.double() - bn.running_mean.double() * scale).half()
    fuse_bn(model)
    assert torch.equal(model.layer2[0].conv1.weight, weight)
    assert torch.equal(model.layer2[0].conv1.bias, bias)


def test_fuse_frozen_batchnorm():
    torch.manual_seed(0)
    model = cutlass_resnet.resnet18(norm_layer=FrozenBatchNorm2d).double().eval()
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, FrozenBatchNorm2d):
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(fuse_bn(model)(x), expected, rtol=1e-10, atol=1e-10)


def test_fuse_is_inference_only():
    with pytest.raises(RuntimeError, match=r"inference-only; call model.eval\(\) first"):
        fuse_bn(cutlass_resnet.resnet18())
    model = fuse_bn(cutlass_resnet.resnet18().eval())
    with pytest.warns(UserWarning, match="inference-only"):
        model.train()


def test_fuse_rejects_what_it_cannot_fold():
    model = cutlass_resnet.resnet18(norm_layer=lambda c: nn.GroupNorm(1, c)).eval()
    with pytest.raises(TypeError, match=r"cannot fold bn1 \(GroupNorm\)"):
        fuse_bn(model)
    model = cutlass_resnet.resnet18().eval()
    model.layer4[1].bn2 = nn.GroupNorm(1, 512)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match=r"cannot fold layer4.1.bn2 \(GroupNorm\)"):
        fuse_bn(model)
    after = model.state_dict()
    assert not model.fused and list(after) == list(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())
    with pytest.raises(TypeError, match="expects a cutlass_resnet ResNet"):
        fuse_bn(nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)).eval())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fuse_to_a_dtype_rounds_the_float64_fold_once(dtype):
    model = cutlass_resnet.resnet18(num_classes=4).eval()
    conv, bn = copy.deepcopy(model.conv1), copy.deepcopy(model.bn1)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    model.bn1.load_state_dict(bn.state_dict())
    fuse_bn(model, dtype)
    w, b = torch.nn.utils.fusion.fuse_conv_bn_weights(
        conv.weight.double(), None, bn.running_mean.double(), bn.running_var.double(), bn.eps,
        bn.weight.double(), bn.bias.double(),
    )  # fmt: skip
    assert torch.equal(model.conv1.weight, w.to(dtype)) and torch.equal(model.conv1.bias, b.to(dtype))
    assert model.fc.weight.dtype == dtype and fuse_bn(model, torch.float32).fc.weight.dtype == torch.float32


def test_fuse_walks_every_module_that_owns_a_fusion(tv_resnet18):
    """A ResNet inside another module (a backbone, a wrapper) fuses as it does alone: fuse_bn walks the
    modules that own a fusion (the blocks and the stem's ResNet) wherever they sit."""
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    backbone = cutlass_resnet.resnet18().double().eval()
    load_torchvision_state_dict(backbone, tv_resnet18.state_dict())
    wrapped = nn.Sequential(backbone).eval()
    assert fuse_bn(wrapped) is wrapped and backbone.fused and all(b.fused for b in backbone.layer1)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in wrapped.modules())
    with torch.no_grad():
        expected = tv_resnet18.double()(x.double())
        assert max_error(wrapped(x.double()), expected) < 1e-10
    assert cutlass_resnet.nn.conv_norm_pairs(wrapped)[:3] == [
        ("0.conv1", "0.bn1", True),
        ("0.layer1.0.conv1", "0.layer1.0.bn1", True),
        ("0.layer1.0.conv2", "0.layer1.0.bn2", True),
    ]


@pytest.mark.parametrize("dtype", [torch.int32, torch.complex64, torch.bool, "float16"])
def test_fuse_refuses_a_dtype_it_cannot_round_to_and_changes_nothing(dtype):
    model = cutlass_resnet.resnet18().eval().requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match="dtype must be a real floating-point dtype.*the model is unchanged"):
        cutlass_resnet.fuse_bn(model, dtype)
    after = model.state_dict()
    assert not model.fused and before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
