"""cutlass_resnet::conv2d_fprop_int8's reference against an independent integer computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cutlass_resnet.ops import epilogue_constants, output_size, quantize_per_tensor

conv2d_fprop_int8 = torch.ops.cutlass_resnet.conv2d_fprop_int8
CL = torch.channels_last


def int64_conv(x, w, stride, padding, dilation, groups):
    """Sum of products in int64 by shifted slices of the padded input and an integer matmul per group."""
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    p = output_size(h, r, stride[0], padding[0], dilation[0])
    q = output_size(wd, s, stride[1], padding[1], dilation[1])
    xp = F.pad(x.long(), (padding[1], padding[1], padding[0], padding[0]))
    acc = torch.zeros(n, k, p, q, dtype=torch.int64)
    kg = k // groups
    for g in range(groups):
        for i in range(r):
            for j in range(s):
                rows = slice(i * dilation[0], i * dilation[0] + (p - 1) * stride[0] + 1, stride[0])
                cols = slice(j * dilation[1], j * dilation[1] + (q - 1) * stride[1] + 1, stride[1])
                patch = xp[:, g * cg : (g + 1) * cg, rows, cols]  # n, cg, p, q
                taps = w[g * kg : (g + 1) * kg, :, i, j].long()  # kg, cg
                acc[:, g * kg : (g + 1) * kg] += torch.einsum("ncpq,kc->nkpq", patch, taps)
    return acc


def documented_epilogue(acc, alpha, beta, residual, gamma, relu):
    """The module docstring's steps, each an fp32 operation, from the int64 sums."""
    v = acc.to(torch.float32) * alpha.view(1, -1, 1, 1)
    v = v + beta.view(1, -1, 1, 1)
    if residual is not None:
        v = v + residual.to(torch.float32) * torch.tensor(gamma, dtype=torch.float32)
    if relu:
        v = torch.maximum(v, torch.zeros(()))
    return torch.clamp(torch.round(v), -128, 127).to(torch.int8)


def random_case(seed, n, c, k, h, w, r, s, groups, stride, padding, dilation, with_residual):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-128, 128, (n, c, h, w), generator=g, dtype=torch.int8).contiguous(memory_format=CL)
    wt = torch.randint(-127, 128, (k, c // groups, r, s), generator=g, dtype=torch.int8).contiguous(memory_format=CL)
    weight_scale = torch.rand(k, generator=g, dtype=torch.float64) * 1e-2 + 1e-4
    bias = torch.randn(k, generator=g, dtype=torch.float64)
    p = output_size(h, r, stride[0], padding[0], dilation[0])
    q = output_size(w, s, stride[1], padding[1], dilation[1])
    residual = None
    if with_residual:
        residual = torch.randint(-128, 128, (n, k, p, q), generator=g, dtype=torch.int8).contiguous(memory_format=CL)
    alpha, beta, gamma = epilogue_constants(0.02, weight_scale, 0.05, bias, 0.03 if with_residual else None)
    return x, wt, alpha, beta, residual, gamma


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(1, 2),
    cg=st.sampled_from([1, 3, 8, 16]),
    kg=st.sampled_from([1, 8, 16]),
    groups=st.sampled_from([1, 2, 4]),
    hw=st.integers(1, 9),
    rs=st.sampled_from([(1, 1), (3, 3), (1, 3), (7, 7)]),
    stride=st.sampled_from([(1, 1), (2, 2), (1, 2)]),
    padding=st.sampled_from([(0, 0), (1, 1), (3, 2)]),
    dilation=st.sampled_from([(1, 1), (2, 1)]),
    with_residual=st.booleans(),
    relu=st.booleans(),
)
def test_reference_equals_int64_sums_and_documented_epilogue(
    seed, n, cg, kg, groups, hw, rs, stride, padding, dilation, with_residual, relu
):
    r, s = rs
    h, w = hw + (r - 1) * dilation[0], hw + (s - 1) * dilation[1]
    c, k = cg * groups, kg * groups
    x, wt, alpha, beta, residual, gamma = random_case(
        seed, n, c, k, h, w, r, s, groups, stride, padding, dilation, with_residual
    )
    y = conv2d_fprop_int8(x, wt, alpha, beta, residual, gamma, stride, padding, dilation, groups, relu)
    acc = int64_conv(x, wt, stride, padding, dilation, groups)
    expected = documented_epilogue(acc, alpha, beta, residual, gamma, relu)
    assert y.dtype == torch.int8 and y.is_contiguous(memory_format=CL)
    assert torch.equal(y, expected)


def test_large_sums_round_to_fp32_as_the_integer_does():
    """Sums past 2**24 (not exact in fp32): the reference rounds the exact integer once, as int32 -> fp32 does."""
    x = torch.full((1, 512, 3, 3), 127, dtype=torch.int8).contiguous(memory_format=CL)
    wt = torch.full((4, 512, 3, 3), 127, dtype=torch.int8).contiguous(memory_format=CL)
    wt[1] = -127
    wt[2, :, 0, 0] = 1  # an odd sum above 2**24
    alpha = torch.full((4,), 1e-7, dtype=torch.float32)
    beta = torch.zeros(4)
    y = conv2d_fprop_int8(x, wt, alpha, beta, None, 0.0, (1, 1), (0, 0), (1, 1), 1, False)
    acc = int64_conv(x, wt, (1, 1), (0, 0), (1, 1), 1)
    assert acc.abs().max() > 2**24
    assert torch.equal(y, documented_epilogue(acc, alpha, beta, None, 0.0, False))


def test_rounds_half_to_even_and_saturates():
    x = torch.ones(1, 1, 1, 1, dtype=torch.int8).contiguous(memory_format=CL)
    wt = torch.ones(6, 1, 1, 1, dtype=torch.int8).contiguous(memory_format=CL)
    alpha = torch.tensor([0.5, 1.5, 2.5, -0.5, 300.0, -300.0])
    y = conv2d_fprop_int8(x, wt, alpha, torch.zeros(6), None, 0.0, (1, 1), (0, 0), (1, 1), 1, False)
    assert y.flatten().tolist() == [0, 2, 2, 0, 127, -128]


def test_quantize_per_tensor_is_quantize_linear():
    x = torch.tensor([0.25, 0.75, -0.25, 1e6, -1e6, 0.5])
    assert quantize_per_tensor(x, 0.5).tolist() == [0, 2, 0, 127, -128, 1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.update(x=a["x"].float()), "x must be int8"),
        (lambda a: a.update(alpha=a["alpha"].double()), "alpha must be float32"),
        (lambda a: a.update(beta=a["beta"][:1]), "beta must be float32 of shape"),
        (lambda a: a.update(x=a["x"].contiguous()), "channels_last"),
        (lambda a: a.update(residual=torch.zeros(1, 2, 1, 1, dtype=torch.int8)), "residual has shape"),
    ],
)
def test_bad_arguments_say_what_to_do(change, message):
    args = {
        "x": torch.zeros(1, 4, 3, 3, dtype=torch.int8).contiguous(memory_format=CL),
        "weight": torch.zeros(8, 4, 3, 3, dtype=torch.int8).contiguous(memory_format=CL),
        "alpha": torch.ones(8),
        "beta": torch.zeros(8),
        "residual": None,
    }
    change(args)
    with pytest.raises((ValueError, TypeError), match=message):
        conv2d_fprop_int8(*args.values(), 1.0, (1, 1), (1, 1), (1, 1), 1, True)


def test_too_long_a_reduction_is_refused():
    x = torch.zeros(1, 16384, 3, 3, dtype=torch.int8).contiguous(memory_format=CL)
    wt = torch.zeros(1, 16384, 3, 3, dtype=torch.int8).contiguous(memory_format=CL)
    with pytest.raises(ValueError, match="int32 accumulator"):
        conv2d_fprop_int8(x, wt, torch.ones(1), torch.zeros(1), None, 0.0, (1, 1), (0, 0), (1, 1), 1, False)
