"""Kernel selection, host-only, with CUTLASS's real can_implement."""

from __future__ import annotations

import pytest
import torch

from cutlass_resnet.ops.select import KernelKind, Problem, kernel, kernel_table, select


@pytest.mark.parametrize(
    "problem,dtype,gpu,reason",
    [
        (Problem(8, 56, 56, 64, 64, 3, 3), torch.float32, (8, 0), "torch.float32 has no CUTLASS kernel"),
        (Problem(8, 56, 56, 64, 64, 3, 3), torch.float16, (7, 5), "compute capability 7.5 is older"),
        (Problem(8, 56, 56, 64, 10, 1, 1), torch.float16, (8, 0), "K=10 output channels is not a multiple of 8"),
        (Problem(8, 56, 56, 12, 64, 3, 3), torch.bfloat16, (9, 0), "C=12 input channels is not a multiple of 8"),
        (Problem(8, 56, 56, 6, 64, 3, 3, groups=2), torch.float16, (8, 0), "3 channels per group cannot be blocked"),
        (Problem(8, 56, 56, 64, 64, 3, 3, groups=2), torch.float16, (8, 0), "grouped convolution with a residual"),
        (Problem(8, 56, 56, 3, 64, 7, 7), torch.float16, (8, 0), "C=3 input channels with a residual add"),
    ],
)
def test_named_fallbacks(problem, dtype, gpu, reason):
    choice = select(problem, dtype, gpu, residual=True)
    assert choice.kernel is None and reason in choice.reason


def test_cutlass_rejection_is_named(extension):
    # a 2 GiB filter: past CUTLASS 2.x's 32-bit offsets, and no batch split helps
    choice = select(Problem(1, 1, 1, 2**14, 2**16, 1, 1), torch.float16, (8, 0))
    assert choice.kernel is None and choice.reason.startswith("CUTLASS rejected it")


@pytest.mark.parametrize(
    "problem,tile",
    [
        (Problem(256, 56, 56, 64, 256, 1, 1), "t128x128_64x3"),  # large M and N
        (Problem(1, 7, 7, 512, 2048, 1, 1), "t64x64_64x5"),  # batch 1, last stage: few CTAs
        (Problem(8, 28, 28, 256, 256, 3, 3, padding=(1, 1)), "t128x64_64x3"),  # 98 CTAs of 128x128
    ],
)
def test_tile_heuristic(extension, problem, tile):
    assert select(problem, torch.float16, (8, 0), sm_count=108).kernel == f"sm80_f16_{tile}"


def test_hopper_kernels_refuse_strides_the_tma_cannot_encode(extension):
    """TMA im2col traverses with strides of 1 to 8 at most; a larger stride runs on an Sm80 kernel."""
    hopper = kernel("sm90_f16_t128x128x64")
    assert hopper.can_implement(Problem(64, 64, 64, 64, 256, 1, 1, stride=(8, 8))) == 0
    status = hopper.can_implement(Problem(64, 90, 90, 64, 256, 1, 1, stride=(9, 9)))
    assert "TMA im2col limits" in torch.ops.cutlass_resnet_C.status_string(status)
    choice = select(Problem(256, 90, 90, 64, 256, 1, 1, stride=(9, 9)), torch.float16, (9, 0), sm_count=132)
    assert choice.kernel.startswith("sm80_f16_")


def test_hopper_prefers_its_own_kernel_at_equal_tile(extension):
    big = Problem(256, 56, 56, 64, 256, 1, 1)
    assert select(big, torch.bfloat16, (9, 0), sm_count=132).kernel == "sm90_bf16_t128x128x64"
    assert select(big, torch.bfloat16, (10, 0), sm_count=148).kernel == "sm80_bf16_t128x128_64x3"  # sm_90a only
    small = Problem(1, 7, 7, 512, 2048, 1, 1)
    assert select(small, torch.float16, (9, 0), sm_count=132).kernel == "sm80_f16_t64x64_64x5"


def test_problem_from_a_conv_call():
    p = Problem.from_conv((8, 64, 56, 56), (128, 32, 3, 3), [2, 2], [1, 1], [1, 1], 2)
    assert p == Problem(8, 56, 56, 64, 128, 3, 3, (2, 2), (1, 1), (1, 1), 2)
    assert (p.p, p.q) == (28, 28)
    assert p.as_list() == [8, 56, 56, 64, 128, 3, 3, 28, 28, 1, 1, 2, 2, 1, 1, 2]


def test_kernel_table_describes_each_kernel(extension):
    table = kernel_table()
    assert [k.index for k in table] == list(range(len(table)))
    by_name = {k.name: k for k in table}
    stem = by_name["sm80_bf16_stem_t128x64_64x3"]
    assert stem.dtype == torch.bfloat16 and stem.kind == KernelKind.STEM and stem.alignment == 4
    assert (stem.tile_m, stem.tile_n, stem.tile_k, stem.stages) == (128, 64, 64, 3)
    hopper = by_name["sm90_f16_t128x128x64"]
    assert hopper.kind == KernelKind.REGULAR_SM90A and hopper.min_sm == 90
    assert hopper.serves(KernelKind.REGULAR, (9, 0)) and not hopper.serves(KernelKind.REGULAR, (10, 0))
    assert not stem.serves(KernelKind.REGULAR, (9, 0)) and stem.serves(KernelKind.STEM, (12, 0))
    assert kernel("sm80_f16_t64x64_64x5").can_implement(Problem(1, 7, 7, 512, 2048, 1, 1)) == 0
    with pytest.raises(KeyError, match="no compiled kernel named 'sm70_f16'"):
        kernel("sm70_f16")
