"""cutlass_resnet::conv2d_fprop against torch.nn.functional.conv2d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_within_twice_aten, max_error
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cutlass_resnet.ops import output_size

conv2d_fprop = torch.ops.cutlass_resnet.conv2d_fprop
CL = torch.channels_last


def make_case(n, c, k, h, w, r, s, groups, dtype, with_bias, with_residual, stride, padding, dilation, seed=0):
    """Random operands rounded to ``dtype``, channels_last, plus their float64 twins."""
    g = torch.Generator().manual_seed(seed)
    p = output_size(h, r, stride[0], padding[0], dilation[0])
    q = output_size(w, s, stride[1], padding[1], dilation[1])
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64).to(dtype).contiguous(memory_format=CL)
    wt = (torch.randn(k, c // groups, r, s, generator=g, dtype=torch.float64) / (c // groups * r * s) ** 0.5).to(dtype)
    wt = wt.contiguous(memory_format=CL)
    bias = torch.randn(k, generator=g, dtype=torch.float64).to(dtype) if with_bias else None
    res = torch.randn(n, k, p, q, generator=g, dtype=torch.float64).to(dtype) if with_residual else None
    res = None if res is None else res.contiguous(memory_format=CL)
    return x, wt, bias, res


def aten_reference(x, w, bias, residual, stride, padding, dilation, groups, relu):
    """The same computation composed from aten ops, in the operands' own dtype."""
    y = F.conv2d(x, w, bias, stride, padding, dilation, groups)
    if residual is not None:
        y = y + residual
    return F.relu(y) if relu else y


def as64(t):
    return None if t is None else t.double()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 3),
    c_per_group=st.integers(1, 8),
    k_per_group=st.integers(1, 8),
    groups=st.integers(1, 4),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    r=st.integers(1, 5),
    s=st.integers(1, 5),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    with_bias=st.booleans(),
    with_residual=st.booleans(),
    relu=st.booleans(),
    dtype=st.sampled_from([torch.float64, torch.float32, torch.float16, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_matches_functional_conv2d(
    n,
    c_per_group,
    k_per_group,
    groups,
    h,
    w,
    r,
    s,
    stride,
    padding,
    dilation,
    with_bias,
    with_residual,
    relu,
    dtype,
    seed,
):
    assume(output_size(h, r, stride[0], padding[0], dilation[0]) >= 1)
    assume(output_size(w, s, stride[1], padding[1], dilation[1]) >= 1)
    c, k = c_per_group * groups, k_per_group * groups
    x, wt, bias, res = make_case(
        n, c, k, h, w, r, s, groups, dtype, with_bias, with_residual, stride, padding, dilation, seed
    )
    conv = (stride, padding, dilation, groups, relu)
    y = conv2d_fprop(x, wt, bias, res, *conv)

    assert y.dtype == dtype and y.is_contiguous(memory_format=CL)
    reference = aten_reference(as64(x), as64(wt), as64(bias), as64(res), *conv)
    assert y.shape == reference.shape
    if dtype == torch.float64:
        torch.testing.assert_close(y, reference, rtol=1e-12, atol=1e-12)
    elif dtype == torch.float32:
        torch.testing.assert_close(y, reference.float(), rtol=1e-5, atol=1e-5)
    else:
        assert_within_twice_aten(y, aten_reference(x, wt, bias, res, *conv), reference)


def test_rounds_once_like_an_epilogue():
    """fp16, with a residual that cancels conv + bias: fp32 accumulation and a single rounding keep
    the small result accurate, where aten's fp16 conv (rounded) then add (rounded again) cannot."""
    x, w, bias, _ = make_case(4, 64, 32, 8, 8, 3, 3, 1, torch.float16, True, False, (1, 1), (1, 1), (1, 1))
    conv = ((1, 1), (1, 1), (1, 1), 1, False)
    exact = aten_reference(as64(x), as64(w), as64(bias), None, *conv)
    small = 0.01 * torch.randn(exact.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    res = (small - exact).half().contiguous(memory_format=CL)
    reference = aten_reference(as64(x), as64(w), as64(bias), as64(res), *conv)
    ours = max_error(conv2d_fprop(x, w, bias, res, *conv), reference)
    aten = max_error(aten_reference(x, w, bias, res, *conv), reference)
    assert ours * 4 < aten
    assert ours <= 0.5 * torch.finfo(torch.float16).eps * reference.abs().max().item() + 1e-5


@pytest.mark.parametrize(
    "groups,stride,padding,dilation,with_bias,with_residual,relu",
    [
        (1, (1, 1), (1, 1), (1, 1), True, True, True),
        (2, (2, 1), (0, 2), (1, 2), True, False, True),
        (3, (1, 2), (2, 1), (2, 1), False, True, False),
        (1, (3, 3), (0, 0), (1, 1), False, False, False),
    ],
)
def test_gradcheck(groups, stride, padding, dilation, with_bias, with_residual, relu):
    x, w, bias, res = make_case(
        2,
        3 * groups,
        2 * groups,
        7,
        6,
        3,
        3,
        groups,
        torch.float64,
        with_bias,
        with_residual,
        stride,
        padding,
        dilation,
        seed=groups,
    )
    inputs = [t.requires_grad_() if t is not None else None for t in (x, w, bias, res)]
    assert torch.autograd.gradcheck(
        lambda *a: conv2d_fprop(*a, stride, padding, dilation, groups, relu), inputs, eps=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gradients_match_aten(dtype):
    x, w, bias, res = make_case(2, 8, 8, 6, 6, 3, 3, 2, dtype, True, True, (1, 1), (1, 1), (1, 1))
    conv = ((1, 1), (1, 1), (1, 1), 2, True)
    ours = [t.clone().requires_grad_() for t in (x, w, bias, res)]
    ref = [t.double().requires_grad_() for t in (x, w, bias, res)]
    grad_y = torch.randn(2, 8, 6, 6, generator=torch.Generator().manual_seed(1)).to(dtype)
    conv2d_fprop(*ours, *conv).backward(grad_y)
    aten_reference(*ref, *conv).backward(grad_y.double())
    for a, b in zip(ours, ref, strict=True):
        assert a.grad.dtype == dtype and a.grad.shape == b.grad.shape
        tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("with_bias,with_residual,relu", [(True, True, True), (False, False, False)])
def test_opcheck(with_bias, with_residual, relu):
    """Schema, fake (meta) implementation, autograd registration and AOT dispatch."""
    x, w, bias, res = make_case(2, 4, 6, 5, 5, 3, 3, 2, torch.float32, with_bias, with_residual, (2, 2), (1, 1), (1, 1))
    args = [t.requires_grad_() if t is not None else None for t in (x, w, bias, res)]
    torch.library.opcheck(conv2d_fprop.default, (*args, [2, 2], [1, 1], [1, 1], 2, relu))


def test_fake_tensor_shape_and_strides():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(8, 64, 56, 56, dtype=torch.float16, memory_format=CL)
        w = torch.empty(128, 64, 3, 3, dtype=torch.float16, memory_format=CL)
        y = conv2d_fprop(x, w, None, None, [2, 2], [1, 1], [1, 1], 1, True)
    assert y.shape == (8, 128, 28, 28) and y.dtype == torch.float16
    assert y.is_contiguous(memory_format=CL)


def _ok_args():
    x, w, bias, res = make_case(2, 4, 6, 5, 5, 3, 3, 1, torch.float32, True, True, (1, 1), (1, 1), (1, 1))
    return dict(
        x=x, weight=w, bias=bias, residual=res, stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1, relu=True
    )


@pytest.mark.parametrize(
    "change,error,match",
    [
        (lambda a: a.update(x=a["x"].contiguous()), ValueError, r"x must be NHWC.*channels_last"),
        (lambda a: a.update(weight=a["weight"].contiguous()), ValueError, r"weight must be NHWC"),
        (lambda a: a.update(residual=a["residual"].contiguous()), ValueError, r"residual must be NHWC"),
        (lambda a: a.update(x=a["x"].double()), TypeError, r"input dtype torch.float64 differs from weight"),
        (lambda a: a.update(bias=a["bias"].half()), TypeError, r"differs from bias dtype"),
        (lambda a: a.update(x=a["x"].to(torch.uint8)), TypeError, r"unsupported dtype torch.uint8"),
        (lambda a: a.update(x=a["x"][:, :3].contiguous(memory_format=CL)), ValueError, r"input has 3 channels"),
        (lambda a: a.update(groups=4), ValueError, r"groups=4"),
        (lambda a: a.update(x=a["x"][0]), ValueError, r"expected a 4-D input"),
        (
            lambda a: a.update(bias=torch.zeros(5)),
            ValueError,
            r"bias must have shape \(6,\) \(one per output channel\)",
        ),
        (
            lambda a: a.update(bias=torch.zeros(12)[::2]),
            ValueError,
            r"bias is not contiguous \(stride 2.*bias.contiguous\(\)",
        ),
        (lambda a: a.update(residual=a["residual"][:, :, :4]), ValueError, r"residual has shape"),
        (lambda a: a.update(stride=[0, 1]), ValueError, r"stride must be two integers from 1 to 2\*\*31 - 1"),
        (lambda a: a.update(padding=[-1, 0]), ValueError, r"padding must be two integers from 0 to"),
        (lambda a: a.update(padding=[2**31, 0]), ValueError, r"padding must be two integers from 0 to 2\*\*31 - 1"),
        (lambda a: a.update(padding=[2**30, 0]), ValueError, r"padding \[1073741824, 0\] makes the padded input"),
        (lambda a: a.update(dilation=[1]), ValueError, r"dilation must be two integers"),
        (lambda a: a.update(padding=[0, 0], dilation=[3, 3]), ValueError, r"too small for a 3x3 kernel"),
        (lambda a: a.update(x=a["x"].to("meta")), ValueError, r"input is on meta but weight is on cpu"),
    ],
)
def test_bad_arguments_are_named(change, error, match):
    args = _ok_args()
    change(args)
    with pytest.raises(error, match=match):
        conv2d_fprop(**args)


def test_empty_batch():
    x, w, bias, res = make_case(0, 4, 6, 5, 5, 3, 3, 1, torch.float16, True, True, (1, 1), (1, 1), (1, 1))
    y = conv2d_fprop(x, w, bias, res, [1, 1], [1, 1], [1, 1], 1, True)
    assert y.shape == (0, 6, 5, 5) and y.dtype == torch.float16
