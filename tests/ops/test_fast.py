"""The C++ path of a conv seen before (the binding's problem -> kernel cache), its dry run on CPU tensors, and
the passes around the convs (the stem's packing, the max-pool without indices), run on the host."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import cutlass_resnet
from cutlass_resnet.ops import dispatch
from cutlass_resnet.ops.select import Problem, kernel, select

CL = torch.channels_last


@pytest.fixture
def fresh(extension):
    dispatch.forget_choices()
    yield torch.ops.cutlass_resnet_C
    dispatch.forget_choices()


def conv_args(n=2, c=64, k=64, size=12, r=3, stride=1, residual=True, dtype=torch.half):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, size, size, generator=g).to(dtype).contiguous(memory_format=CL)
    w = torch.randn(k, c, r, r, generator=g).to(dtype).contiguous(memory_format=CL)
    b = torch.randn(k, generator=g).to(dtype)
    p = (size + 2 * (r // 2) - r) // stride + 1
    res = torch.randn(n, k, p, p, generator=g).to(dtype).contiguous(memory_format=CL) if residual else None
    return x, w, b, res, (stride, stride, r // 2, r // 2, 1, 1, 1)


def test_nothing_remembered_means_the_python_path(fresh):
    x, w, b, r, conv = conv_args()
    assert fresh.conv2d(x, w, b, r, [*conv, 1, 1]) == []  # a dry run of an unknown problem
    assert fresh.conv2d(x, w, b, r, [*conv, 1, 0]) == []  # CPU tensors are never launched
    assert fresh.conv2d(x.float(), w.float(), b.float(), r.float(), [*conv, 1, 1]) == []  # no fp32 kernel


def test_a_remembered_choice_runs_from_cpp_and_only_for_its_problem(fresh):
    x, w, b, r, conv = conv_args()
    problem = Problem.from_conv(x.shape, w.shape, conv[0:2], conv[2:4], conv[4:6], 1)
    choice = select(problem, x.dtype, (8, 0))
    dispatch._remember(problem, x.dtype, True, -1, choice)
    assert fresh.remembered_choices() == 1
    (y,) = fresh.conv2d(x, w, b, r, [*conv, 1, 1])
    assert y.shape == (2, 64, 12, 12) and y.is_contiguous(memory_format=CL) and y.dtype == torch.half
    assert fresh.conv2d(x, w, b, None, [*conv, 1, 1]) == []  # without the residual: another problem
    assert fresh.conv2d(x[:1], w, b, r[:1], [*conv, 1, 1]) == []  # another batch
    assert fresh.conv2d(x.contiguous(), w, b, r, [*conv, 1, 1]) == []  # not NHWC: the op's path makes it so
    with pytest.raises(RuntimeError, match=r"bias must have shape \(64,\)"):
        fresh.conv2d(x, w, b[:32], r, [*conv, 1, 1])
    dispatch.forget_choices()
    assert fresh.remembered_choices() == 0 and fresh.conv2d(x, w, b, r, [*conv, 1, 1]) == []


def test_remembering_a_choice_cutlass_refuses_is_an_error(fresh):
    x, w, b, r, conv = conv_args(c=12)  # C=12: no 8-element loads
    index = kernel("sm80_f16_t64x64_64x5").index
    key = [*x.shape, 64, 3, 3, *conv]
    with pytest.raises(RuntimeError, match="cannot implement this convolution"):
        fresh.remember(key, 0, -1, True, [index, 0, 0, 0, 0])
    assert fresh.remembered_choices() == 0


def test_the_stem_is_packed_and_a_large_batch_split_in_cpp(fresh):
    x = torch.randn(3, 3, 20, 20).half()  # NCHW, 3 channels: packed to NHWC4 by the binding
    w = torch.randn(64, 3, 7, 7).half().contiguous(memory_format=CL)
    conv = (2, 2, 3, 3, 1, 1, 1)
    problem = Problem.from_conv(x.shape, w.shape, (2, 2), (3, 3), (1, 1), 1)
    choice = select(problem, x.dtype, (8, 0))
    assert choice.pad_channels == 4
    chunked = dataclasses.replace(choice, batch_chunk=2)  # as for a batch past 2^31 bytes
    dispatch._remember(problem, x.dtype, False, -1, chunked)
    (y,) = fresh.conv2d(x, w, None, None, [*conv, 1, 1])  # a dry run: the filter is padded in C++ too
    assert y.shape == (3, 64, 10, 10) and y.is_contiguous(memory_format=CL)
    (y,) = fresh.conv2d(x, w, None, None, [*conv, 1, 2])  # emulated: two launches of 2 and 1 images, one output
    expected = F.relu(F.conv2d(x.double(), w.double(), None, 2, 3))
    torch.testing.assert_close(y.double(), expected, rtol=1e-2, atol=1e-2)
    assert fresh.conv2d(x, w[:, :2], None, None, [*conv, 1, 1]) == []  # a weight that does not fit x: Python's


@pytest.mark.parametrize("merge", [1, 2, 4])
def test_a_grouped_filter_is_laid_out_block_diagonally_in_cpp(fresh, merge):
    """The packing pass that makes a merged group's filter: each original group's filter at its offset within the
    merged group, zeros elsewhere; against the layout built independently here."""
    groups, c, k = 8, 4, 32
    w = torch.randn(k * groups, c, 3, 3).half()
    x = torch.randn(1, c * groups, 6, 6).half().contiguous(memory_format=CL)
    choice = dataclasses.replace(select(Problem(1, 6, 6, c * groups, k * groups, 3, 3, groups=groups), x.dtype, (8, 0)))
    assert choice.kernel and choice.merge_groups == 2  # 8 groups of 4 channels: merged in twos
    choice = dataclasses.replace(choice, merge_groups=merge)
    expected = torch.zeros(k * groups, c * merge, 3, 3, dtype=w.dtype)
    for g in range(groups):
        rows = slice(g * k, (g + 1) * k)
        expected[rows, (g % merge) * c : (g % merge + 1) * c] = w[rows]
    if merge == 2:
        y = dispatch._launch(x, w, None, None, [1, 1, 1, 1, 1, 1, groups, 0, dispatch.EMULATE], choice)
        reference = F.conv2d(x.double(), w.double(), None, 1, 1, 1, groups)
        torch.testing.assert_close(y.double(), reference, rtol=1e-2, atol=1e-2)
    merged = F.conv2d(x.double(), expected.double(), None, 1, 1, 1, groups // merge)
    torch.testing.assert_close(merged, F.conv2d(x.double(), w.double(), None, 1, 1, 1, groups))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "sliced"])
def test_pack_channels_matches_zero_padding(extension, dtype, layout):
    x = torch.randn(2, 3, 9, 7).to(dtype)
    if layout == "nhwc":
        x = x.contiguous(memory_format=CL)
    elif layout == "sliced":
        x = torch.randn(2, 5, 9, 7).to(dtype)[:, 1:4]
    y = torch.ops.cutlass_resnet_C.pack_channels(x, 4)
    expected = torch.cat([x, torch.zeros(2, 1, 9, 7, dtype=dtype)], dim=1)
    assert y.is_contiguous(memory_format=CL) and torch.equal(y, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "size,kernel,stride,padding",
    [(17, 3, 2, 1), (16, 3, 2, 1), (9, 2, 2, 0), (8, 3, 1, 1), (7, (3, 2), (2, 1), (1, 0))],
)
def test_max_pool_without_indices_matches_torch(extension, dtype, size, kernel, stride, padding):
    pair = lambda v: [v, v] if isinstance(v, int) else list(v)  # noqa: E731
    x = torch.randn(2, 24, size, size + 1).to(dtype)
    x[0, 0, 0, 0], x[1, 3, 2, 2], x[1, 5] = float("nan"), float("-inf"), float("-inf")
    x = x.contiguous(memory_format=CL)
    y = torch.ops.cutlass_resnet_C.max_pool2d(x, pair(kernel), pair(stride), pair(padding))
    expected = F.max_pool2d(x.float(), kernel, stride, padding).to(dtype)
    assert y.shape == expected.shape and y.is_contiguous(memory_format=CL)
    assert torch.equal(y.isnan(), expected.isnan()) and torch.equal(y.nan_to_num(), expected.nan_to_num())


def test_max_pool_refuses_what_it_cannot_compute(extension):
    with pytest.raises(RuntimeError, match="channels_last"):
        torch.ops.cutlass_resnet_C.max_pool2d(torch.zeros(1, 8, 4, 4).half(), [3, 3], [2, 2], [1, 1])
    with pytest.raises(RuntimeError, match="at most half of the kernel"):
        x = torch.zeros(1, 8, 4, 4).half().contiguous(memory_format=CL)
        torch.ops.cutlass_resnet_C.max_pool2d(x, [3, 3], [2, 2], [2, 2])


@pytest.mark.parametrize("capability", [(8, 0), (9, 0)], ids=["8.0", "9.0"])
def test_a_fused_model_s_dry_run_goes_through_cpp_for_every_conv(fresh, capability):
    torch.manual_seed(0)
    # channels_last filters (as cuDNN also prefers them): torch's layout would be copied on each call, in Python
    model = cutlass_resnet.fuse_bn(cutlass_resnet.resnet50().eval()).half().to(memory_format=CL)
    x = torch.randn(1, 3, 64, 64).half()
    plan = cutlass_resnet.plan(model, tuple(x.shape), torch.float16, capability)
    distinct = {(e.problem, e.residual) for e in plan}
    assert all(e.choice.kernel for e in plan)
    calls = []
    original = fresh.conv2d.default

    def counted(*args):
        out = original(*args)
        calls.append(bool(out))
        return out

    dispatch._conv2d.clear()
    dispatch._conv2d.append(counted)
    try:
        with torch.no_grad(), dispatch.dry_run(capability):
            assert model(x).shape == (1, 1000)
            first = list(calls)
            calls.clear()
            model(x)
            assert fresh.remembered_choices() == len(distinct)
    finally:
        dispatch._conv2d.clear()
    assert all(calls) and len(calls) == 53  # the second run: every conv from C++, none through Python
    assert first.count(False) == len(distinct)  # the first: each problem's first call chose in Python


def test_convs_that_need_a_gradient_never_take_the_cpp_path(fresh, monkeypatch):
    conv = cutlass_resnet.nn.Conv2d(8, 8, 3, padding=1).half()
    monkeypatch.setattr(dispatch, "fast_conv2d", lambda *a: pytest.fail("the C++ path was taken"))
    x = torch.randn(1, 8, 5, 5).half().contiguous(memory_format=CL)
    with dispatch.dry_run():
        y = conv(x)  # grad enabled and the weight requires it: the op, with its autograd
    assert y.requires_grad and y.grad_fn is not None


def test_a_kernel_disabled_later_is_never_launched_from_cpp(fresh, tmp_path, monkeypatch):
    from cutlass_resnet.ops import selfcheck

    monkeypatch.setenv("CUTLASS_RESNET_CACHE", str(tmp_path))
    x, w, b, r, conv = conv_args()
    problem = Problem.from_conv(x.shape, w.shape, conv[0:2], conv[2:4], conv[4:6], 1)
    choice = select(problem, x.dtype, (8, 0))
    dispatch._remember(problem, x.dtype, True, -1, choice)
    selfcheck.record_verdict(f"GPU|sm_80|build|{choice.kernel}", None)  # a pass changes nothing
    assert len(fresh.conv2d(x, w, b, r, [*conv, 1, 1])) == 1
    selfcheck.record_verdict(f"GPU|sm_80|build|{choice.kernel}", "it failed its self-check")
    assert fresh.remembered_choices() == 0 and fresh.conv2d(x, w, b, r, [*conv, 1, 1]) == []
