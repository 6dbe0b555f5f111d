"""Kernel selection and plan() for the whole zoo, host-only, with CUTLASS's real can_implement."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import cutlass_resnet
from cutlass_resnet import kernels
from cutlass_resnet.kernels import Problem, select
from cutlass_resnet.selftest import ARCHS

CL = torch.channels_last


@pytest.fixture(scope="module")
def fused_models():
    with torch.device("meta"):  # shapes only: no memory, no init time
        return {arch: cutlass_resnet.fuse_bn(getattr(cutlass_resnet, arch)().eval()) for arch in ARCHS}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_plan_every_conv_of_the_zoo(extension, fused_models, arch):
    """Batch 1, 8, 256, 2048; fp16 and bf16; sm_80 and sm_90: a kernel CUTLASS accepts, or a known reason."""
    model = fused_models[arch]
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    for batch in (1, 8, 256, 2048):
        for dtype in (torch.float16, torch.bfloat16):
            for gpu in ((8, 0), (9, 0)):
                entries = kernels.plan(model, (batch, 3, 224, 224), dtype, gpu)
                assert len(entries) == convs
                for e in entries:
                    assert e.choice.kernel is not None, f"{arch} {e}"
                    family = ("sm80_", "sm90_") if gpu == (9, 0) else ("sm80_",)
                    assert e.choice.kernel.startswith(family), e
                    assert {torch.float16: "_f16_", torch.bfloat16: "_bf16_"}[dtype] in e.choice.kernel
                    assert ("group" in e.choice.kernel) == (e.problem.groups > 1)
                stem = entries[0]
                assert stem.module == "conv1" and stem.problem.c == 3
                assert "stem" in stem.choice.kernel and stem.choice.pad_channels == 4
                for e in entries:  # split exactly where a tensor reaches 2 GiB, into launches below it
                    pr, c = e.problem, max(e.problem.c, 4)
                    image = max(pr.h * pr.w * c, pr.p * pr.q * pr.k) * 2
                    assert bool(e.choice.batch_chunk) == (e.choice.kernel is not None and batch * image >= 2**31)
                    assert e.choice.batch_chunk * image < 2**31 <= (e.choice.batch_chunk + 1) * image or (
                        not e.choice.batch_chunk
                    )
                if batch == 2048:  # 2048x224x224x4 fp16 is 822 MB, but 2048x112x112x64 is 3.3 GB
                    assert stem.choice.batch_chunk == 1337


@pytest.mark.parametrize(
    "arch,merges",
    [("resnext50_32x4d", [8, 4, 2, 1]), ("resnext101_32x8d", [4, 2, 1, 1]), ("resnext101_64x4d", [8, 4, 2, 1])],
)
def test_grouped_convs_are_merged_into_32_channel_groups(extension, fused_models, arch, merges):
    """4, 8, 16, 32+ channels per group: 8, 4, 2, 1 adjacent groups merged (block-diagonal weights)."""
    entries = [e for e in kernels.plan(fused_models[arch], (8, 3, 224, 224)) if e.problem.groups > 1]
    for e in entries:
        stage = int(e.module[5]) - 1
        assert e.choice.kernel == "sm80_f16_group_t128x32_32x4" and e.choice.merge_groups == merges[stage]
        assert (e.problem.c // e.problem.groups * merges[stage]) % 8 == 0
    assert f"groups merged by {merges[0]}" in str(entries[0])


@pytest.mark.parametrize(
    "problem,dtype,gpu,reason",
    [
        (Problem(8, 56, 56, 64, 64, 3, 3), torch.float32, (8, 0), "torch.float32 has no CUTLASS kernel"),
        (Problem(8, 56, 56, 64, 64, 3, 3), torch.float16, (7, 5), "compute capability 7.5 is older"),
        (Problem(8, 56, 56, 64, 10, 1, 1), torch.float16, (8, 0), "K=10 output channels is not a multiple of 8"),
        (Problem(8, 56, 56, 12, 64, 3, 3), torch.bfloat16, (9, 0), "C=12 input channels is not a multiple of 8"),
        (Problem(8, 56, 56, 6, 64, 3, 3, groups=2), torch.float16, (8, 0), "3 channels per group cannot be blocked"),
        (Problem(8, 56, 56, 64, 64, 3, 3, groups=2), torch.float16, (8, 0), "grouped convolution with a residual"),
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
        (Problem(8, 28, 28, 256, 256, 3, 3, padding=(1, 1)), "t128x64_64x4"),  # 98 CTAs of 128x128
    ],
)
def test_tile_heuristic(extension, problem, tile):
    assert select(problem, torch.float16, (8, 0), sm_count=108).kernel == f"sm80_f16_{tile}"


def test_hopper_prefers_its_own_kernel_at_equal_tile(extension):
    big = Problem(256, 56, 56, 64, 256, 1, 1)
    assert select(big, torch.bfloat16, (9, 0), sm_count=132).kernel == "sm90_bf16_t128x128x64"
    assert select(big, torch.bfloat16, (10, 0), sm_count=148).kernel == "sm80_bf16_t128x128_64x3"  # sm_90a only
    small = Problem(1, 7, 7, 512, 2048, 1, 1)
    assert select(small, torch.float16, (9, 0), sm_count=132).kernel == "sm80_f16_t64x64_64x5"


# --- the CUDA implementation's host-side logic, with the launch replaced by a CPU emulation -----


def emulated_launch(kernel, x, weight, bias, residual, stride, padding, dilation, groups, relu):
    """What a kernel computes, on whatever (padded, chunked, merged) operands the dispatcher passes."""
    assert x.is_contiguous(memory_format=CL) and weight.is_contiguous(memory_format=CL)
    assert x.shape[1] == weight.shape[1] * groups and weight.shape[1] % (4 if "stem" in kernel else 8) == 0
    assert (groups > 1) == ("group" in kernel) and (
        groups == 1 or (residual is None and weight.shape[0] // groups % 32 == 0)
    )
    calls.append((kernel, tuple(x.shape), groups))
    y = F.conv2d(
        x.double(), weight.double(), None if bias is None else bias.double(), stride, padding, dilation, groups
    )
    y = y + (0 if residual is None else residual.double())
    return (y.relu() if relu else y).to(x.dtype).contiguous(memory_format=CL)


calls: list = []


@pytest.fixture
def dispatch(monkeypatch, extension, tmp_path):
    """The op's CUDA implementation, run on CPU tensors with the launch emulated."""
    calls.clear()
    kernels._cached_select.cache_clear()
    kernels._checked_verdict.cache_clear()
    monkeypatch.setenv("CUTLASS_RESNET_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "_launch", emulated_launch)
    monkeypatch.setattr(kernels, "_device_info", lambda index: ((8, 0), 108))
    monkeypatch.setattr(kernels, "_device", lambda index: torch.device("cpu"))
    yield kernels._cuda_conv2d_fprop
    kernels._cached_select.cache_clear()
    kernels._checked_verdict.cache_clear()


def operands(n, c, k, h, dtype=torch.float16, r=3, groups=1):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, h, generator=g).to(dtype).contiguous(memory_format=CL)
    w = (torch.randn(k, c // groups, r, r, generator=g) / (c * r * r) ** 0.5).to(dtype).contiguous(memory_format=CL)
    return x, w, torch.randn(k, generator=g).to(dtype)


def test_stem_is_padded_to_four_channels(dispatch):
    x, w, b = operands(2, 3, 64, 32, r=7)
    y = dispatch(x, w, b, None, [2, 2], [3, 3], [1, 1], 1, True)
    assert calls[-1] == ("sm80_f16_stem_t128x64_64x3", (2, 4, 32, 32), 1)
    expected = F.relu(F.conv2d(x.double(), w.double(), b.double(), 2, 3))
    torch.testing.assert_close(y.double(), expected, rtol=2e-3, atol=2e-3)
    dispatch(x, w, b, None, [2, 2], [3, 3], [1, 1], 1, True)
    assert kernels._prepared_weights[w][1].shape == (64, 4, 7, 7)  # padded once, then cached


def test_batch_split_past_two_gigabytes(dispatch, monkeypatch):
    monkeypatch.setattr(kernels, "_MAX_BYTES", 2 * 16 * 8 * 8 * 2 + 1)  # two images per launch
    x, w, b = operands(5, 16, 16, 8)
    residual = torch.randn(5, 16, 8, 8).half().contiguous(memory_format=CL)
    y = dispatch(x, w, b, residual, [1, 1], [1, 1], [1, 1], 1, False)
    assert [shape[0] for _, shape, _ in calls[1:]] == [2, 2, 1]  # after the kernel's one self-check
    expected = F.conv2d(x.double(), w.double(), b.double(), 1, 1) + residual.double()
    assert y.is_contiguous(memory_format=CL)
    torch.testing.assert_close(y.double(), expected, rtol=2e-3, atol=2e-3)


def test_grouped_conv_runs_merged_block_diagonal(dispatch):
    """32 groups of 4 channels -> 4 groups of 32, zeros outside the original groups: same result."""
    x, w, b = operands(2, 128, 128, 8, groups=32)
    y = dispatch(x, w, b, None, [2, 2], [1, 1], [1, 1], 32, True)
    assert calls[-1] == ("sm80_f16_group_t128x32_32x4", (2, 128, 8, 8), 4)
    expected = F.relu(F.conv2d(x.double(), w.double(), b.double(), 2, 1, 1, 32))
    torch.testing.assert_close(y.double(), expected, rtol=2e-3, atol=2e-3)
    blocks = kernels._prepared_weights[w][1]
    assert blocks.shape == (128, 32, 3, 3) and torch.count_nonzero(blocks) == torch.count_nonzero(w)


def test_fallback_warns_once_per_reason(dispatch):
    x, w, b = operands(2, 16, 16, 8, groups=4)  # 4 channels per group, 4 groups: cannot be blocked
    with pytest.warns(UserWarning, match="cannot be blocked.*running the reference"):
        y = dispatch(x, w, b, None, [1, 1], [1, 1], [1, 1], 4, False)
    torch.testing.assert_close(
        y.double(), F.conv2d(x.double(), w.double(), b.double(), 1, 1, 1, 4), rtol=2e-3, atol=2e-3
    )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dispatch(x, w, b, None, [1, 1], [1, 1], [1, 1], 4, False)
    assert calls == []


def test_strict_mode_raises(dispatch, monkeypatch):
    monkeypatch.setattr(kernels, "STRICT", True)
    x, w, b = operands(2, 16, 16, 8, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="float32 has no CUTLASS kernel.*CUTLASS_RESNET_STRICT"):
        dispatch(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, False)


def test_each_kernel_checks_itself_once_per_gpu(dispatch):
    x, w, b = operands(2, 16, 16, 8)
    for _ in range(3):
        dispatch(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, True)
    kernel = calls[0][0]
    assert [c[0] for c in calls] == [kernel] * 4  # one self-check, then three launches
    records = json.loads(kernels.verdicts_path().read_text())
    assert [v for k, v in records.items() if k.endswith("|" + kernel)] == [""]


def test_a_kernel_that_fails_its_check_is_never_dispatched(dispatch, monkeypatch):
    def wrong(kernel, x, weight, bias, residual, *conv):
        return emulated_launch(kernel, x, weight, bias, None, *conv)  # drops the residual

    monkeypatch.setattr(kernels, "_launch", wrong)
    x, w, b = operands(2, 16, 16, 8)
    residual = torch.randn(2, 16, 8, 8).half().contiguous(memory_format=CL)
    with pytest.warns(UserWarning, match="failed its self-check"):
        y = dispatch(x, w, b, residual, [1, 1], [1, 1], [1, 1], 1, False)
    expected = F.conv2d(x.double(), w.double(), b.double(), 1, 1) + residual.double()
    torch.testing.assert_close(y.double(), expected, rtol=2e-3, atol=2e-3)
    dispatch(x, w, b, residual, [1, 1], [1, 1], [1, 1], 1, False)
    assert len(calls) == 1  # the check; never launched for real
    records = json.loads(kernels.verdicts_path().read_text())
    assert any("failed its self-check" in v for v in records.values())
    kernels._checked_verdict.cache_clear()  # a new process reads the verdict from disk
    dispatch(x, w, b, residual, [1, 1], [1, 1], [1, 1], 1, False)
    assert len(calls) == 1


def test_no_self_check_while_a_cuda_graph_is_captured(dispatch, monkeypatch):
    """The check synchronizes, which capture forbids: an unchecked kernel is not used in a graph,
    and nothing is recorded against it."""
    monkeypatch.setattr(kernels, "_capturing", lambda: True)
    x, w, b = operands(2, 16, 16, 8)
    with pytest.warns(UserWarning, match="not self-checked yet: run the model once before capturing"):
        y = dispatch(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, False)
    torch.testing.assert_close(y.double(), F.conv2d(x.double(), w.double(), b.double(), 1, 1), rtol=2e-3, atol=2e-3)
    assert calls == [] and not kernels.verdicts_path().exists()
    monkeypatch.setattr(kernels, "_capturing", lambda: False)
    dispatch(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, False)  # a plain run checks it, then launches
    assert len(calls) == 2
    monkeypatch.setattr(kernels, "_capturing", lambda: True)
    dispatch(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, False)  # checked: used in the graph too
    assert len(calls) == 3
