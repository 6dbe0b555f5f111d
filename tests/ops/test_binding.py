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
        "regular": names.index("sm80_f16_t128x64_64x3"),
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
    with pytest.raises(RuntimeError, match="sm80_f16_group_t128x32_32x4 takes no residual"):
        fprop("group", **{**grouped, "residual": cl_zeros(2, 64, 8, 8)})
    with pytest.raises(RuntimeError, match="takes groups=1 only"):
        fprop("regular", **grouped)
    with pytest.raises(RuntimeError, match="cannot implement this convolution"):  # 16 outputs per group < tile N
        fprop("group", **{**grouped, "weight": cl_zeros(32, 32, 3, 3), "bias": torch.zeros(32, dtype=torch.half)})


def test_stem_kernel_needs_exactly_four_channels_and_no_residual(fprop):
    with pytest.raises(RuntimeError, match="cannot implement this convolution: Error Invalid Problem"):
        fprop("stem", residual=None)  # C=64 with the fixed-channels kernel
    stem = dict(x=cl_zeros(1, 4, 16, 16), weight=cl_zeros(32, 4, 7, 7), stride=[2, 2], padding=[3, 3])
    with pytest.raises(RuntimeError, match="stem_t128x64_64x3 takes no residual"):
        fprop("stem", **stem, residual=cl_zeros(1, 32, 8, 8))


@pytest.mark.parametrize(
    ("value", "leaky_alpha", "expected"),
    [
        (3.5, 0.0, 3.5),
        (-2.0, 0.0, 0.0),
        (float("-inf"), 0.0, 0.0),  # torch.relu(-inf) is 0; CUTLASS's LeakyReLU gives 0 * -inf = NaN
        (float("inf"), 0.0, float("inf")),
        (-2.0, 1.0, -2.0),  # slope 1: no activation
        (float("-inf"), 1.0, float("-inf")),
    ],
)
def test_the_epilogue_activation_is_torch_s_relu_or_the_identity(extension, value, leaky_alpha, expected):
    y = torch.ops.cutlass_resnet_C.activation(value, leaky_alpha)
    reference = torch.relu(torch.tensor(value)).item() if leaky_alpha == 0 else value
    assert y == expected == reference


def test_the_epilogue_activation_keeps_nan(extension):
    assert torch.ops.cutlass_resnet_C.activation(float("nan"), 0.0) != torch.ops.cutlass_resnet_C.activation(
        float("nan"), 0.0
    )


def test_status_names_say_what_failed(extension):
    status = torch.ops.cutlass_resnet_C.status_string
    assert status(2000 + 2) == "out of memory"  # a failed launch: CR_STATUS_CUDA_ERROR + its cudaError_t
    assert status(2000 + 700) == "an illegal memory access was encountered"
    assert "TMA im2col limits" in status(1001) and "workspace" in status(1000)
    assert status(0) == "Success"


@pytest.mark.parametrize(
    "overrides",
    [dict(stride=[0, 0]), dict(dilation=[1, 0]), dict(padding=[-1, 1])],
    ids=["stride0", "dilation0", "negative-padding"],
)
def test_a_geometry_that_would_divide_by_zero_is_refused(fprop, overrides):
    """Stride or dilation 0 once killed the process with SIGFPE (an integer division in the output extent)."""
    with pytest.raises(RuntimeError, match="stride and dilation must be >= 1 and padding >= 0"):
        fprop(**overrides)


def test_problems_with_a_zero_extent_are_refused_by_the_host_checks(extension):
    from cutlass_resnet.ops.select import kernel_table

    hopper = [k for k in kernel_table() if k.hopper]
    for k in [kernel_table()[0], *hopper[:1]]:
        with pytest.raises(RuntimeError, match="conv record entry 7 is 0"):  # stride_h
            torch.ops.cutlass_resnet_C.can_implement(k.index, [1, 64, 8, 8, 64, 3, 3, 0, 1, 1, 1, 1, 1, 1])
        with pytest.raises(RuntimeError, match="conv record entry 0 is 0"):  # N
            torch.ops.cutlass_resnet_C.describe(k.index, [0, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1])


def test_an_empty_batch_returns_an_empty_output(extension):
    """N=0 once reached CUTLASS's 3.x arguments in a dry run and died with SIGFPE."""
    from cutlass_resnet.ops.select import kernel_table

    for k in kernel_table():
        if k.kind.name in ("STEM", "GROUPED") or k.dtype == torch.int8:  # int8: tests/ops/test_int8_kernel.py
            continue
        x, w = cl_zeros(0, 64, 8, 8, dtype=k.dtype), cl_zeros(64, 64, 3, 3, dtype=k.dtype)
        assert k.dry_run(x, w, None, None, [1, 1], [1, 1], [1, 1], 1, True) == 0
        y = k.host_reference(x, w, None, None, [1, 1], [1, 1], [1, 1], 1, True)
        assert y.shape == (0, 64, 8, 8)
