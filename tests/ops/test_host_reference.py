"""The arguments a launch gets, checked without a GPU: the binding's checks and operand packing and each
kernel's CUTLASS arguments (problem size, padding/stride/dilation order, NHWC/KRSC strides, epilogue
parameters) run through CUTLASS's host reference convolution (cutlass/util/reference/host/convolution.h)
and compared with F.conv2d in float64, for every distinct conv of the zoo and a few asymmetric ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import CL, assert_within_twice_aten, pad_channels

import cutlass_resnet
from cutlass_resnet.ops.select import KernelKind, Problem, kernel_table, launch_form
from cutlass_resnet.testing import ARCHS


def zoo_problems() -> list[tuple[Problem, bool, bool]]:
    """(problem, residual, relu) of every distinct conv of the fused zoo at 1x3x40x40: partial tiles in M."""
    problems = {}
    for arch in ARCHS:
        with torch.device("meta"):
            model = cutlass_resnet.fuse_bn(getattr(cutlass_resnet, arch)().eval())
        relu = {name: m.relu for name, m in model.named_modules() if isinstance(m, cutlass_resnet.nn.Conv2d)}
        for e in cutlass_resnet.plan(model, (1, 3, 40, 40)):
            problems[(e.problem, e.residual, relu[e.module])] = None
    return list(problems)


ASYMMETRIC = [  # a swapped pair of extents would change the result
    (Problem(2, 9, 13, 16, 24, 3, 5, stride=(2, 1), padding=(1, 2), dilation=(1, 2)), True, False),
    (Problem(1, 11, 7, 8, 40, 1, 3, stride=(1, 3), padding=(0, 1)), False, True),
    (Problem(1, 17, 10, 3, 16, 7, 5, stride=(2, 3), padding=(3, 1), dilation=(2, 1)), False, True),
    (Problem(2, 10, 6, 64, 64, 3, 1, padding=(1, 0), groups=8), False, True),
]


def block_diagonal(weight: torch.Tensor, groups: int, merge: int) -> torch.Tensor:
    """A grouped conv's filter as that of groups // merge groups, each block-diagonal (zeros outside its original
    groups)."""
    k, c, r, s = weight.shape
    out = weight.new_zeros(k, merge * c, r, s)
    for g in range(groups):
        rows = slice(g * (k // groups), (g + 1) * (k // groups))
        out[rows, (g % merge) * c : (g % merge + 1) * c] = weight[rows]
    return out.contiguous(memory_format=CL)


def operands(problem: Problem, dtype: torch.dtype, residual: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    c = problem.c // problem.groups
    x = torch.randn(problem.n, problem.c, problem.h, problem.w, generator=g).to(dtype)
    w = (torch.randn(problem.k, c, problem.r, problem.s, generator=g) * (c * problem.r * problem.s) ** -0.5).to(dtype)
    b = torch.randn(problem.k, generator=g).to(dtype)
    r = torch.randn(problem.n, problem.k, problem.p, problem.q, generator=g).to(dtype) if residual else None
    x, w = x.contiguous(memory_format=CL), w.contiguous(memory_format=CL)
    return x, w, b, None if r is None else r.contiguous(memory_format=CL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_every_kernel_s_arguments_through_cutlass_s_host_reference(extension, dtype):
    """The dispatcher's preparation (stem padded to 4 channels, groups merged block-diagonally) and each
    accepting kernel's arguments, against float64; at most twice aten's error in the same dtype."""
    checked = set()
    for index, (problem, residual, relu) in enumerate(zoo_problems() + ASYMMETRIC):
        launch, kind, pad, merge = launch_form(problem)
        if (kind in (KernelKind.STEM, KernelKind.GROUPED) and residual) or (kind == KernelKind.GROUPED and not merge):
            continue
        x, w, b, r = operands(problem, dtype, residual, index)
        stride, padding, dilation = list(problem.stride), list(problem.padding), list(problem.dilation)
        expected = F.conv2d(x.double(), w.double(), b.double(), stride, padding, dilation, problem.groups)
        aten = F.conv2d(x.float(), w.float(), b.float(), stride, padding, dilation, problem.groups).to(dtype)
        if r is not None:
            expected, aten = expected + r.double(), (aten.float() + r.float()).to(dtype)
        if relu:
            expected, aten = expected.relu(), aten.relu()
        kx, kw, groups = x, w, problem.groups
        if pad:
            kx, kw = pad_channels(x, pad), pad_channels(w, pad)
        if merge:
            kw, groups = block_diagonal(w, problem.groups, merge), problem.groups // merge
        for k in kernel_table():
            if k.dtype != dtype or k.problem_kind != kind:
                continue
            if k.split:  # 2, 3 or 4 slices, taking turns over the problems
                turns = [(2, 3, 4)[(index + i) % 3] for i in range(3)]
                split = next((s for s in turns if k.can_implement(launch, s) == 0), None)
            else:
                split = 1 if k.can_implement(launch) == 0 else None
            if split is None:
                continue
            y = k.host_reference(kx, kw, b, r, stride, padding, dilation, groups, relu, split_k=split)
            assert y.shape == expected.shape and y.is_contiguous(memory_format=CL)
            assert_within_twice_aten(y, aten, expected)
            checked.add((k.name, str(problem), split))
    names = {name for name, _, _ in checked}
    assert names == {k.name for k in kernel_table() if k.dtype == dtype}  # the Hopper kernels' 3.x arguments too
    assert {s for name, _, s in checked if "splitk" in name} == {2, 3, 4}
    assert len(checked) > 100
