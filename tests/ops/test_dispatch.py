"""The op's CUDA implementation on CPU tensors, with the kernel launch emulated: what it pads, merges,
splits, checks and falls back on."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import CL, assert_within_twice_aten, emulated_launch

from cutlass_resnet.ops import dispatch, select, selfcheck


def check_launches(kernel_name: str) -> int:
    """How many launches a kernel's self-check makes."""
    return len(selfcheck.check_cases(select.kernel(kernel_name)))


@pytest.fixture
def conv(emulated_gpu):
    """The op's CUDA implementation, run on CPU tensors with the launch emulated."""
    return dispatch._cuda_conv2d_fprop


def operands(n, c, k, h, dtype=torch.float16, r=3, groups=1):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, h, generator=g).to(dtype).contiguous(memory_format=CL)
    w = (torch.randn(k, c // groups, r, r, generator=g) / (c * r * r) ** 0.5).to(dtype).contiguous(memory_format=CL)
    return x, w, torch.randn(k, generator=g).to(dtype)


def test_stem_is_padded_to_four_channels(conv, emulated_gpu):
    x, w, b = operands(2, 3, 64, 32, r=7)
    y = conv(x, w, b, None, [2, 2], [3, 3], [1, 1], 1, True)
    assert emulated_gpu.calls[-1] == ("sm80_f16_stem_t128x64_64x3", (2, 4, 32, 32), 1)
    expected = F.relu(F.conv2d(x.double(), w.double(), b.double(), 2, 3))
    torch.testing.assert_close(y.double(), expected, rtol=2e-3, atol=2e-3)


def test_batch_split_past_two_gigabytes(conv, monkeypatch, emulated_gpu):
    monkeypatch.setattr(select, "MAX_BYTES", 2 * 16 * 8 * 8 * 2 + 1)  # two images per launch
    x, w, b = operands(5, 16, 16, 8)
    residual = torch.randn(5, 16, 8, 8).half().contiguous(memory_format=CL)
    y = conv(x, w, b, residual, [1, 1], [1, 1], [1, 1], 1, False)
    assert len(emulated_gpu.calls) == check_launches(emulated_gpu.calls[-1][0]) + 1  # the binding splits the batch
    assert emulated_gpu.choices[-1].batch_chunk == 2
    expected = F.conv2d(x.double(), w.double(), b.double(), 1, 1) + residual.double()
    assert y.is_contiguous(memory_format=CL)
    torch.testing.assert_close(y.double(), expected, rtol=2e-3, atol=2e-3)


def test_grouped_conv_runs_merged_block_diagonal(conv, emulated_gpu):
    """32 groups of 4 channels -> 4 groups of 32, zeros outside the original groups: same result."""
    x, w, b = operands(2, 128, 128, 8, groups=32)
    y = conv(x, w, b, None, [2, 2], [1, 1], [1, 1], 32, True)
    assert emulated_gpu.calls[-1] == ("sm80_f16_group_t128x32_32x4", (2, 128, 8, 8), 4)
    expected = F.relu(F.conv2d(x.double(), w.double(), b.double(), 2, 1, 1, 32))
    torch.testing.assert_close(y.double(), expected, rtol=2e-3, atol=2e-3)


def test_fallback_warns_once_per_reason(conv, emulated_gpu):
    x, w, b = operands(2, 16, 16, 8, groups=4)  # 4 channels per group, 4 groups: cannot be blocked
    with pytest.warns(UserWarning, match="cannot be blocked.*running aten's convolution instead"):
        y = conv(x, w, b, None, [1, 1], [1, 1], [1, 1], 4, False)
    torch.testing.assert_close(
        y.double(), F.conv2d(x.double(), w.double(), b.double(), 1, 1, 1, 4), rtol=2e-3, atol=2e-3
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conv(x, w, b, None, [1, 1], [1, 1], [1, 1], 4, False)
    assert emulated_gpu.calls == []


def test_the_fallback_computes_in_the_input_dtype_as_torchvision_does(conv, emulated_gpu):
    """No kernel: aten's convolution in fp16 (cuDNN on a GPU), then the residual and ReLU, not an fp32 upcast;
    its error is aten's own."""
    x, w, b = operands(2, 16, 16, 8, groups=4)
    residual = torch.randn(2, 16, 8, 8).half().contiguous(memory_format=CL)
    with pytest.warns(UserWarning, match="running aten's convolution instead"):
        y = conv(x, w, b, residual, [1, 1], [1, 1], [1, 1], 4, True)
    torchvision_block = torch.relu(F.conv2d(x, w, b, 1, 1, 1, 4) + residual)
    assert y.dtype == torch.float16 and y.is_contiguous(memory_format=CL) and torch.equal(y, torchvision_block)
    expected = torch.relu(F.conv2d(x.double(), w.double(), b.double(), 1, 1, 1, 4) + residual.double())
    assert_within_twice_aten(y, torchvision_block, expected)


def test_strict_mode_raises(conv, monkeypatch):
    monkeypatch.setattr(dispatch, "STRICT", True)
    x, w, b = operands(2, 16, 16, 8, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="float32 has no CUTLASS kernel.*CUTLASS_RESNET_STRICT"):
        conv(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, False)


def test_each_kernel_checks_itself_once_per_gpu(conv, emulated_gpu):
    x, w, b = operands(2, 16, 16, 8)
    for _ in range(3):
        conv(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, True)
    kernel = emulated_gpu.calls[0][0]  # the self-check's matrix (its first cases here), once, then three launches
    assert [c[0] for c in emulated_gpu.calls] == [kernel] * (check_launches(kernel) + 3)
    records = json.loads(selfcheck.verdicts_path().read_text())
    assert [v for k, v in records.items() if k.endswith("|" + kernel)] == [""]


def test_a_kernel_that_fails_its_check_is_never_dispatched(conv, monkeypatch, emulated_gpu):
    def wrong(kernel, x, weight, bias, residual, *conv):
        return emulated_launch(kernel, x, weight, bias, None, *conv)  # drops the residual

    emulated_gpu.use(wrong)
    x, w, b = operands(2, 16, 16, 8)
    residual = torch.randn(2, 16, 8, 8).half().contiguous(memory_format=CL)
    with pytest.warns(UserWarning, match="failed its self-check"):
        y = conv(x, w, b, residual, [1, 1], [1, 1], [1, 1], 1, False)
    expected = F.conv2d(x.double(), w.double(), b.double(), 1, 1) + residual.double()
    torch.testing.assert_close(y.double(), expected, rtol=2e-3, atol=2e-3)
    checked = len(emulated_gpu.calls)  # the check, up to its first case with a residual
    assert 0 < checked < check_launches(emulated_gpu.calls[0][0])
    conv(x, w, b, residual, [1, 1], [1, 1], [1, 1], 1, False)
    assert len(emulated_gpu.calls) == checked  # never launched for real
    records = json.loads(selfcheck.verdicts_path().read_text())
    assert any("failed its self-check on " in v and "residual" in v for v in records.values())
    selfcheck._checked_verdict.cache_clear()  # a new process reads the verdict from disk
    conv(x, w, b, residual, [1, 1], [1, 1], [1, 1], 1, False)
    assert len(emulated_gpu.calls) == checked


def test_no_self_check_while_a_cuda_graph_is_captured(conv, monkeypatch, emulated_gpu):
    """The check synchronizes, which capture forbids: an unchecked kernel is not used in a graph,
    and nothing is recorded against it."""
    monkeypatch.setattr(selfcheck, "capturing", lambda: True)
    x, w, b = operands(2, 16, 16, 8)
    with pytest.warns(UserWarning, match="not self-checked yet: run the model once before capturing"):
        y = conv(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, False)
    torch.testing.assert_close(y.double(), F.conv2d(x.double(), w.double(), b.double(), 1, 1), rtol=2e-3, atol=2e-3)
    assert emulated_gpu.calls == [] and not selfcheck.verdicts_path().exists()
    monkeypatch.setattr(selfcheck, "capturing", lambda: False)
    conv(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, False)  # a plain run checks it, then launches
    checked = check_launches(emulated_gpu.calls[0][0])
    assert len(emulated_gpu.calls) == checked + 1
    monkeypatch.setattr(selfcheck, "capturing", lambda: True)
    conv(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, False)  # checked: used in the graph too
    assert len(emulated_gpu.calls) == checked + 2


def test_a_kernel_that_writes_into_its_inputs_fails_its_check(conv, emulated_gpu):
    """The references are computed from copies made before the launch, and the inputs must come back
    unchanged: a kernel that scribbles over its input cannot agree with itself."""

    def scribbles(kernel, x, weight, bias, residual, *conv):
        y = emulated_launch(kernel, x, weight, bias, residual, *conv)
        x.zero_()
        return y

    emulated_gpu.use(scribbles)
    x, w, b = operands(2, 16, 16, 8)
    expected = F.conv2d(x.double(), w.double(), b.double(), 1, 1)
    with pytest.warns(UserWarning, match="failed its self-check on .*: it wrote into its inputs.*selftest --recheck"):
        y = conv(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, False)
    torch.testing.assert_close(y.double(), expected, rtol=2e-3, atol=2e-3)


def test_out_of_memory_during_the_check_is_not_a_verdict(conv, emulated_gpu):
    """An OOM says nothing about the kernel: nothing is recorded, the reference runs, and the next use checks again."""

    def out_of_memory(kernel, *args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    emulated_gpu.use(out_of_memory)
    x, w, b = operands(2, 16, 16, 8)
    with pytest.warns(UserWarning, match="could not be self-checked now \\(out of memory"):
        y = conv(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, False)
    torch.testing.assert_close(y.double(), F.conv2d(x.double(), w.double(), b.double(), 1, 1), rtol=2e-3, atol=2e-3)
    assert not selfcheck.verdicts_path().exists()
    emulated_gpu.use(emulated_launch)
    conv(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, False)  # memory is back: checked, then launched
    assert len(emulated_gpu.calls) == 1 + check_launches(emulated_gpu.calls[0][0]) + 1
    assert list(selfcheck.read_verdicts().values()) == [""]


def test_forget_verdicts_makes_every_kernel_check_itself_again(conv, emulated_gpu):
    x, w, b = operands(2, 16, 16, 8)
    conv(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, False)
    once = len(emulated_gpu.calls)
    assert once == check_launches(emulated_gpu.calls[0][0]) + 1 and selfcheck.verdicts_path().exists()
    selfcheck.forget_verdicts()
    assert not selfcheck.verdicts_path().exists()
    conv(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, False)
    assert len(emulated_gpu.calls) == 2 * once  # checked again, then launched


def test_the_self_check_matrix_covers_epilogues_partial_tiles_filters_and_groups(extension):
    regular = selfcheck.check_cases(select.kernel("sm80_f16_t128x64_64x3"))
    terms = {(c.bias, c.residual, c.relu) for c in regular}
    assert len(terms) == 8  # bias, residual, ReLU: each on and off
    problems = [c.problem for c in regular]
    assert {p.c for p in problems} == {8, 24, 64, 136, 256} and {p.k for p in problems} == {8, 64, 136, 256}
    assert {(p.r, p.stride[0]) for p in problems} == {(r, s) for r in (1, 3, 7) for s in (1, 2)}
    assert {p.dilation for p in problems} == {(1, 1), (2, 2), (4, 4)}
    assert any(c.offset for c in regular)  # a launch on a chunk of a batch
    stem = selfcheck.check_cases(select.kernel("sm80_bf16_stem_t128x64_64x3"))
    assert {(c.problem.c, c.packed) for c in stem} == {(4, False), (3, True)} and not any(c.residual for c in stem)
    grouped = selfcheck.check_cases(select.kernel("sm80_f16_group_t128x32_32x4"))
    assert {c.problem.c // c.problem.groups for c in grouped} == {4, 8, 16, 32} and not any(c.residual for c in grouped)
    assert {c.problem.c // c.problem.groups for c in grouped if c.packed} == {4}  # ResNeXt's, merged


def test_a_kernel_that_fails_its_check_makes_way_for_the_next_best(conv, emulated_gpu):
    """Only the disabled kernel is left out: the conv runs the next kernel that CUTLASS accepts, not aten's."""
    x, w, b = operands(2, 16, 16, 8)
    best = select.select(select.Problem.from_conv(x.shape, w.shape, (1, 1), (1, 1), (1, 1), 1), x.dtype, (8, 0), 108)

    def wrong_when_best(kernel, *args):
        y = emulated_launch(kernel, *args)
        return y + 1 if kernel.name == best.kernel else y

    emulated_gpu.use(wrong_when_best)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback, so no warning
        y = conv(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, False)
    ran = emulated_gpu.choices[-1].kernel
    assert ran is not None and ran != best.kernel
    torch.testing.assert_close(y.double(), F.conv2d(x.double(), w.double(), b.double(), 1, 1), rtol=2e-3, atol=2e-3)
    verdicts = selfcheck.read_verdicts()
    assert [v for k, v in verdicts.items() if k.endswith("|" + best.kernel)][0].startswith(best.kernel + " failed")


def test_an_unwritable_cache_keeps_the_verdict_in_memory(conv, emulated_gpu, monkeypatch, tmp_path):
    """A cache that cannot be written (here: beneath a file) does not fail the conv: the verdict is kept for the
    process, with a warning, and the kernel is not checked again."""
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("CUTLASS_RESNET_CACHE", str(tmp_path / "a-file" / "cache"))
    x, w, b = operands(2, 16, 16, 8)
    with pytest.warns(UserWarning, match="cannot record the self-check verdict.*holds for this process only"):
        y = conv(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, False)
    torch.testing.assert_close(y.double(), F.conv2d(x.double(), w.double(), b.double(), 1, 1), rtol=2e-3, atol=2e-3)
    checked = len(emulated_gpu.calls)
    dispatch.forget_choices()  # the next call asks Python again: the verdict comes from memory
    conv(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, False)
    assert len(emulated_gpu.calls) == checked + 1


def test_a_misaligned_view_is_copied_not_refused(conv, emulated_gpu):
    """A channels_last view that starts 2 bytes into its storage runs (on an aligned copy) instead of raising the
    binding's alignment error."""
    x, w, b = operands(2, 16, 16, 8)
    storage = torch.zeros(x.numel() + 1, dtype=x.dtype)
    view = storage[1:].view(2, 8, 8, 16).permute(0, 3, 1, 2)
    view.copy_(x)
    assert view.is_contiguous(memory_format=CL) and view.data_ptr() % 16
    y = conv(view, w, b, None, [1, 1], [1, 1], [1, 1], 1, False)
    torch.testing.assert_close(y.double(), F.conv2d(x.double(), w.double(), b.double(), 1, 1), rtol=2e-3, atol=2e-3)


def test_the_caches_of_choices_are_bounded(extension):
    """Inputs of ever new sizes (detection) must not grow the choice caches without end."""
    assert dispatch._cached_select.cache_info().maxsize == dispatch.MAX_CACHED_CHOICES
    ops = torch.ops.cutlass_resnet_C
    dispatch.forget_choices()
    try:
        for h in range(1, 4200):
            ops.remember([1, 8, h, 8, 8, 1, 1, 1, 1, 0, 0, 1, 1, 1], 0, -1, False, [-1, 0, 0, 0, 0])
        assert 0 < ops.remembered_choices() <= 4096
    finally:
        dispatch.forget_choices()
