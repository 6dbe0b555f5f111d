"""Kernel selection, host-only, with CUTLASS's real can_implement."""

from __future__ import annotations

import pytest
import torch

from cutlass_resnet.ops.select import KernelKind, Problem, estimate_us, kernel, kernel_table, roofline_us, select


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
    "problem,gpu,name",
    [
        (Problem(256, 56, 56, 64, 256, 1, 1), (8, 0), "sm80_f16_t128x128_64x3"),  # large M and N
        # 98 CTAs of 128x128 or 196 of 128x64: one wave either way, and the larger tile reuses its loads more
        (Problem(8, 28, 28, 256, 256, 3, 3, padding=(1, 1)), (8, 0), "sm80_f16_t128x128_64x3"),
        (Problem(64, 28, 28, 128, 64, 3, 3, padding=(1, 1)), (8, 0), "sm80_f16_t128x64_64x3"),  # K=64
        (Problem(256, 56, 56, 64, 256, 1, 1), (9, 0), "sm90_f16_t128x128x64"),
        # K=64: Hopper's 128x64 tile (a 128-wide one would waste half its N)
        (Problem(256, 56, 56, 64, 64, 3, 3, padding=(1, 1)), (9, 0), "sm90_f16_t128x64x64"),
    ],
)
def test_the_fastest_estimate_wins(extension, problem, gpu, name):
    choice = select(problem, torch.float16, gpu)
    assert choice.kernel == name and choice.split_k == 0
    others = [
        estimate_us(k, problem, k.describe(problem), gpu)
        for k in kernel_table()
        if k.dtype == torch.float16
        and k.serves(KernelKind.REGULAR, gpu)
        and not k.split
        and k.can_implement(problem) == 0
    ]
    assert choice.estimate_us == pytest.approx(min(others))


@pytest.mark.parametrize("gpu", [(8, 0), (9, 0)])
def test_a_grid_that_fills_less_than_half_the_sms_is_split(extension, gpu):
    small = Problem(1, 7, 7, 512, 2048, 1, 1)  # batch 1, last stage: 16-32 output tiles
    choice = select(small, torch.float16, gpu)
    info = kernel(choice.kernel)
    assert (
        info.split
        and choice.split_k >= 2
        and choice.launch.ctas == choice.launch.ctas // choice.split_k * choice.split_k
    )
    if info.hopper:  # a Hopper slice is never narrower than the TMA box
        assert small.c // choice.split_k >= info.tile_k
    unsplit = [k.describe(small).ctas for k in kernel_table() if k.serves(KernelKind.REGULAR, gpu) and not k.split]
    assert max(unsplit) * 2 < 132 and choice.launch.ctas > max(unsplit)
    big = select(Problem(64, 14, 14, 256, 256, 3, 3, padding=(1, 1)), torch.float16, gpu)
    assert big.split_k == 0 and not kernel(big.kernel).split


def test_estimates_never_beat_the_roofline(extension):
    for problem in (
        Problem(1, 7, 7, 512, 2048, 1, 1),
        Problem(256, 56, 56, 64, 256, 1, 1),
        Problem(32, 14, 14, 256, 256, 3, 3),
    ):
        for gpu in ((8, 0), (9, 0)):
            for k in kernel_table():
                if k.dtype != torch.float16 or not k.serves(KernelKind.REGULAR, gpu):
                    continue
                for split in (2, 4) if k.split else (1,):
                    if k.can_implement(problem, split) == 0:
                        us = estimate_us(k, problem, k.describe(problem, split), gpu, split_k=split)
                        assert us >= roofline_us(problem, gpu), (k.name, problem)


def test_hopper_kernels_refuse_strides_the_tma_cannot_encode(extension):
    """TMA im2col traverses with strides of 1 to 8 at most; a larger stride runs on an Sm80 kernel."""
    hopper = kernel("sm90_f16_t128x128x64")
    assert hopper.can_implement(Problem(64, 64, 64, 64, 256, 1, 1, stride=(8, 8))) == 0
    status = hopper.can_implement(Problem(64, 90, 90, 64, 256, 1, 1, stride=(9, 9)))
    assert "TMA im2col limits" in torch.ops.cutlass_resnet_C.status_string(status)
    choice = select(Problem(256, 90, 90, 64, 256, 1, 1, stride=(9, 9)), torch.float16, (9, 0), sm_count=132)
    assert choice.kernel.startswith("sm80_f16_")


def test_hopper_kernels_run_on_hopper_only(extension):
    big = Problem(256, 56, 56, 64, 256, 1, 1)
    assert select(big, torch.bfloat16, (9, 0), sm_count=132).kernel == "sm90_bf16_t128x128x64"
    assert select(big, torch.bfloat16, (10, 0), sm_count=148).kernel == "sm80_bf16_t128x128_64x3"  # sm_90a only


def test_problem_from_a_conv_call():
    p = Problem.from_conv((8, 64, 56, 56), (128, 32, 3, 3), [2, 2], [1, 1], [1, 1], 2)
    assert p == Problem(8, 56, 56, 64, 128, 3, 3, (2, 2), (1, 1), (1, 1), 2)
    assert (p.p, p.q) == (28, 28)
    assert p.as_list() == [8, 64, 56, 56, 128, 3, 3, 2, 2, 1, 1, 1, 1, 2]  # the conv record, by field
    assert p.as_list(4) == [*p.as_list(), 4]


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
    split = by_name["sm90_f16_splitk_t64x64x64"]
    assert split.kind == KernelKind.SPLITK_SM90A and split.split and split.hopper
    assert split.problem_kind == KernelKind.REGULAR and split.serves(KernelKind.REGULAR, (9, 0))
    assert split.can_implement(Problem(1, 7, 7, 512, 2048, 1, 1), 4) == 0  # 128 channels a slice
    assert split.can_implement(Problem(1, 7, 7, 512, 2048, 1, 1), 3) != 0  # 512 is not 3 slices
    shape = split.describe(Problem(1, 7, 7, 512, 2048, 1, 1), 4)
    assert (shape.ctas, shape.mainloop_iterations, shape.threads) == (1 * 32 * 4, 2, 256)  # a producer, a consumer
    assert by_name["sm80_f16_splitk_t64x64_64x5"].describe(Problem(1, 7, 7, 512, 2048, 1, 1), 4).ctas == 1 * 32 * 4
    with pytest.raises(KeyError, match="no compiled kernel named 'sm70_f16'"):
        kernel("sm70_f16")


def test_the_compiled_table_is_the_list_it_was_generated_from(extension):
    """Python describes each kernel from cutlass_resnet/ops/kernels.py; the C table the binding reads
    (``kernel_info``: dtype, min_sm, alignment, kind, tile, stages) must say the same of every kernel."""
    dtypes = {torch.float16: 0, torch.bfloat16: 1, torch.int8: 2}
    for k in kernel_table():
        compiled = torch.ops.cutlass_resnet_C.kernel_info(k.index)
        assert compiled == [dtypes[k.dtype], k.min_sm, k.alignment, int(k.kind), k.tile_m, k.tile_n, k.tile_k, k.stages]


def test_a_conv_crosses_to_the_binding_as_one_record_by_field(extension):
    """can_implement, describe and remember take one record (kernels.CONV_RECORD): a swapped pair of fields, as
    padding before stride once was in one list and after it in another, would change the answer."""
    from cutlass_resnet.ops.kernels import CONV_RECORD

    problem = Problem(2, 9, 13, 16, 24, 3, 5, stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    record = dict(zip(CONV_RECORD, problem.as_list(3), strict=True))
    assert (record["stride_h"], record["pad_w"], record["dil_w"], record["split_k"]) == (2, 2, 2, 3)
    info = kernel("sm80_f16_t64x64_64x5")
    assert info.can_implement(problem) == 0
    m = problem.n * problem.p * problem.q  # p = (9 + 2 - 2 - 1) // 2 + 1 = 5, q = (13 + 4 - 8 - 1) // 1 + 1 = 9
    assert (problem.p, problem.q) == (5, 9) and info.describe(problem).ctas == -(-m // 64) * 1


def test_hopper_split_k_slices_are_never_narrower_than_the_tma_box(extension):
    """A 7x7x512 3x3 conv at batch 1 on H100 splits K; slices of fewer than 64 channels would zero-fill half of
    each k-tile (twice the unsplit MACs at 16 slices), so no Hopper choice takes fewer than tile K per slice."""
    for c in (256, 512, 1024, 2048):
        for r in (1, 3):
            choice = select(Problem(1, 7, 7, c, 512, r, r, (1, 1), (r // 2, r // 2)), torch.float16, (9, 0), 132)
            if choice.split_k and kernel(choice.kernel).hopper:
                assert c // choice.split_k >= kernel(choice.kernel).tile_k, choice
    choice = select(Problem(1, 7, 7, 512, 512, 3, 3, (1, 1), (1, 1)), torch.float16, (9, 0), 132)
    assert choice.split_k and choice.split_k <= 8


def test_not_supported_reasons_names_every_reason_from_the_kinds_traits():
    """Every reason that holds, host-only; select falls back with the first (and plan shows it)."""
    from cutlass_resnet.ops.select import not_supported_reasons

    stem = Problem(1, 32, 32, 3, 60, 7, 7, (2, 2), (3, 3))  # K=60, and a residual the stem kernel cannot add
    reasons = not_supported_reasons(stem, torch.float32, (7, 5), residual=True)
    assert reasons == [
        "torch.float32 has no CUTLASS kernel (fp16 and bf16 only)",
        "compute capability 7.5 is older than the kernels' 8.0",
        "K=60 output channels is not a multiple of 8 (128-bit epilogue)",
        "C=3 input channels with a residual add has no CUTLASS kernel",
    ]
    grouped = Problem(1, 8, 8, 16, 16, 3, 3, padding=(1, 1), groups=4)  # 4 groups of 4 channels: cannot be blocked
    assert len(not_supported_reasons(grouped, torch.float16, (9, 0), residual=True)) == 2
    assert not_supported_reasons(Problem(1, 8, 8, 64, 64, 3, 3), torch.bfloat16, (9, 0), residual=True) == []
    assert select(stem, torch.float16, (8, 0)).reason == reasons[2]  # the first that holds for fp16 on 8.0


@pytest.mark.parametrize("capability", [(8, 0), (9, 0)])
def test_registers_bound_the_ctas_an_sm_holds(extension, capability):
    """The stem (128 threads, 188 registers on sm_80 and 255 on sm_90a) fits 2 CTAs on an SM, not the 3 its shared
    memory allows on Hopper; the 64x64 tile's 118-120 registers leave shared memory the bound."""
    from cutlass_resnet.ops import cost
    from cutlass_resnet.ops.select import launch_form

    stem = kernel("sm80_f16_stem_t128x64_64x3")
    launch = stem.describe(launch_form(Problem(8, 224, 224, 3, 64, 7, 7, (2, 2), (3, 3)))[0])
    assert launch.threads == 128
    by_shared = cost.ctas_per_sm(launch.shared_memory, 0, 0, capability)
    assert by_shared == {(8, 0): 2, (9, 0): 3}[capability]
    assert cost.ctas_per_sm(launch.shared_memory, launch.threads, stem.registers(capability), capability) == 2
    small = kernel("sm80_f16_t64x64_64x5")
    shape = small.describe(Problem(8, 56, 56, 64, 64, 3, 3, padding=(1, 1)))
    registers = small.registers(capability)
    assert cost.ctas_per_sm(shape.shared_memory, shape.threads, registers, capability) == cost.ctas_per_sm(
        shape.shared_memory, 0, 0, capability
    )


def test_a_hopper_split_launch_passes_the_parameters_of_its_slices_only(extension):
    """Every launch copies its kernel parameters, and a Hopper split-K launch passes each slice's Params (TMA
    descriptors included): room for 4, 8 or 16 slices, the fewest that hold its split, not 16 every time."""
    split = kernel("sm90_f16_splitk_t64x64x64")
    problem = Problem(1, 7, 7, 512, 512, 3, 3, padding=(1, 1))
    passed = {k: split.describe(problem, k).parameter_bytes for k in (2, 4, 8, 16)}
    assert passed[2] == passed[4] and passed[8] == 2 * passed[4] and passed[16] == 4 * passed[4] <= 32764
    assert passed[4] < 8 * 1024 and kernel("sm80_f16_splitk_t64x64_64x5").describe(problem, 4).parameter_bytes < 1024
