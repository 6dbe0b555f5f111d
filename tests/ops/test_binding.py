"""The binding's checks, run on CPU tensors: its CPU kernel checks everything a launch depends on."""

from __future__ import annotations

import pytest
import torch

CL = torch.channels_last


@pytest.fixture
def fprop(extension):
    from cutlass_resnet.ops.select import kernel_table

    names = [k.name for k in kernel_table()]
    index = {
        "regular": names.index("sm80_f16_t128x64_64x4"),
        "stem": names.index("sm80_f16_stem_t128x64_64x3"),
        "group": names.index("sm80_f16_group_t128x32_32x4"),
    }

    def call(kernel="regular", **overrides):
        args = dict(
            x=cl_zeros(2, 64, 8, 8),
            weight=cl_zeros(32, 64, 3, 3),
            bias=torch.zeros(32, dtype=torch.half),
            residual=cl_zeros(2, 32, 8, 8),
            stride=[1, 1],
            padding=[1, 1],
            dilation=[1, 1],
            groups=1,
            relu=True,
            index=index[kernel],
        )
        args.update(overrides)
        return torch.ops.cutlass_resnet_C.fprop(**args)

    return call


def cl_zeros(*shape, dtype=torch.half):
    return torch.empty(shape, dtype=dtype, memory_format=CL).zero_()


def misaligned(shape, dtype=torch.half):
    """A channels_last tensor whose data starts 2 bytes past an allocation's (aligned) start."""
    n, c, h, w = shape
    storage = torch.zeros(n * c * h * w + 1, dtype=dtype)
    return storage[1:].view(n, h, w, c).permute(0, 3, 1, 2)


def test_valid_arguments_reach_the_launch(fprop):
    with pytest.raises(RuntimeError, match="the arguments are valid, but CUTLASS kernels run on CUDA tensors only"):
        fprop()
    with pytest.raises(RuntimeError, match="arguments are valid"):
        fprop(
            "stem",
            x=cl_zeros(1, 4, 16, 16),
            weight=cl_zeros(32, 4, 7, 7),
            stride=[2, 2],
            padding=[3, 3],
            residual=None,
        )


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(x=torch.zeros(2, 64, 8, 8, dtype=torch.half)), "x must be a 4-D channels_last"),
        (dict(weight=cl_zeros(32, 64, 3, 3, dtype=torch.bfloat16)), "weight must be Half"),
        (dict(x=misaligned((2, 64, 8, 8))), "x must be 16-byte aligned"),
        (dict(residual=misaligned((2, 32, 8, 8))), "residual must be 16-byte aligned"),
        (dict(bias=torch.zeros(33, dtype=torch.half)[1:]), "bias must be 16-byte aligned"),
        (dict(bias=torch.zeros(16, dtype=torch.half)), r"bias must have shape \(32,\)"),
        (dict(residual=cl_zeros(2, 32, 4, 4)), "residual must have shape"),
        (dict(weight=cl_zeros(32, 32, 3, 3)), "does not match 64 input"),
        (dict(stride=[1]), "two entries each"),
        (dict(padding=[0, 0], dilation=[5, 5]), "empty output"),
        (dict(index=99), "no kernel with index 99"),
        (
            dict(weight=cl_zeros(10, 64, 3, 3), bias=None, residual=None),
            "cannot implement this convolution: Error Misaligned Operand",
        ),
    ],
)
def test_bad_arguments_are_refused(fprop, overrides, match):
    with pytest.raises(RuntimeError, match=match):
        fprop(**overrides)


def test_grouped_kernel(fprop):
    grouped = dict(weight=cl_zeros(64, 32, 3, 3), bias=torch.zeros(64, dtype=torch.half), groups=2, residual=None)
    with pytest.raises(RuntimeError, match="arguments are valid"):
        fprop("group", **grouped)
    with pytest.raises(RuntimeError, match="grouped kernels take no residual"):
        fprop("group", **{**grouped, "residual": cl_zeros(2, 64, 8, 8)})
    with pytest.raises(RuntimeError, match="takes groups=1 only"):
        fprop("regular", **grouped)
    with pytest.raises(RuntimeError, match="cannot implement this convolution"):  # 16 outputs per group < tile N
        fprop("group", **{**grouped, "weight": cl_zeros(32, 32, 3, 3), "bias": torch.zeros(32, dtype=torch.half)})


def test_stem_kernel_needs_exactly_four_channels(fprop):
    with pytest.raises(RuntimeError, match="cannot implement this convolution: Error Invalid Problem"):
        fprop("stem", residual=None)  # C=64 with the fixed-channels kernel
