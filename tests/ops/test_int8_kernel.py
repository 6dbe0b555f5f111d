"""The CUTLASS int8 kernel without a GPU: the binding's checks and the kernel's arguments through CUTLASS's int32 host
reference convolution, then the kernel's own epilogue step, against the int8 reference (exact sums in float64 with
aten, the documented fp32 steps in torch) bit for bit: every distinct conv of quantized ResNet-50 and ResNeXt-50,
the epilogue's edges, and whole quantized models in the emulated GPU."""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest
import torch
from conftest import CL, pad_channels

import cutlass_resnet
from cutlass_resnet import ops
from cutlass_resnet.ops import dispatch
from cutlass_resnet.ops.select import Problem, kernel

INT8_KERNEL = "sm80_s8_t128x128_64x3"
STEM_KERNEL = "sm80_s8_stem_t64x64_64x10"
HOPPER_KERNEL = "sm90_s8_t128x128x128"
INT8_KERNELS = (INT8_KERNEL, STEM_KERNEL, HOPPER_KERNEL)
EMULATE = 2  # the binding's mode: CUTLASS's host reference on the launch's arguments


def int8_convs(arch: str, capability: str = "8.0") -> dict[tuple[Problem, bool, bool], object]:
    """(problem, residual, relu) -> choice of every distinct conv of the fused ``arch`` at 1x3x64x64, int8."""
    with torch.device("meta"):
        model = cutlass_resnet.fuse_bn(getattr(cutlass_resnet, arch)().eval())
    relu = {name: m.relu for name, m in model.named_modules() if isinstance(m, cutlass_resnet.nn.Conv2d)}
    plan = cutlass_resnet.plan(model, (1, 3, 64, 64), dtype=torch.int8, capability=capability)
    return {(e.problem, e.residual, relu[e.module]): e.choice for e in plan}


def operands(problem: Problem, residual: bool, seed: int, regime: str = "random"):
    """int8 x, w (NHWC), fp32 alpha, beta, an int8 residual and gamma; ``regime`` picks the epilogue's edges:
    "random" (a few percent saturate), "ties" (alpha 0.5: halves round to even), "wide" (sums past 2**24)."""
    g = torch.Generator().manual_seed(seed)
    pr = problem
    reduction = pr.c // pr.groups * pr.r * pr.s

    def q(*shape: int, low: int = -128, high: int = 128) -> torch.Tensor:
        return torch.randint(low, high, shape, generator=g, dtype=torch.int8).contiguous(memory_format=CL)

    if regime == "wide":
        x, w = torch.full((pr.n, pr.c, pr.h, pr.w), 127, dtype=torch.int8), q(pr.k, pr.c, pr.r, pr.s, low=90)
        x = x.contiguous(memory_format=CL)
        alpha = torch.rand(pr.k, generator=g) * 2e-6 + 1e-6
    elif regime == "ties":
        x, w = q(pr.n, pr.c, pr.h, pr.w, low=-3, high=4), q(pr.k, pr.c // pr.groups, pr.r, pr.s, low=-3, high=4)
        alpha = torch.full((pr.k,), 0.5)
    else:
        x, w = q(pr.n, pr.c, pr.h, pr.w), q(pr.k, pr.c // pr.groups, pr.r, pr.s)
        alpha = (torch.rand(pr.k, generator=g) + 0.5) * (60 / (5500 * reduction**0.5))
    beta = torch.zeros(pr.k) if regime == "ties" else torch.randn(pr.k, generator=g) * 8
    r = q(pr.n, pr.k, pr.p, pr.q) if residual else None
    return x, w, alpha, beta, r, 0.3759765625 if residual else 0.0


def host_reference(
    problem: Problem, x, w, alpha, beta, r, gamma, relu: bool, pad: int = 0, name: str = INT8_KERNEL
) -> torch.Tensor:
    """Kernel ``name``'s host reference on the operands (their channels zero-padded to ``pad``)."""
    if pad:
        x, w = pad_channels(x, pad), pad_channels(w, pad)
    conv = [*problem.stride, *problem.padding, *problem.dilation, problem.groups, int(relu), EMULATE]
    info = kernel(name)
    return torch.ops.cutlass_resnet_C.fprop_int8(x, w, info.scale_shift(alpha, beta), r, gamma, conv, info.index)


def reference(problem: Problem, x, w, alpha, beta, r, gamma, relu: bool) -> torch.Tensor:
    conv = (list(problem.stride), list(problem.padding), list(problem.dilation), problem.groups)
    return ops.reference_conv2d_fprop_int8(x, w, alpha, beta, r, gamma, *conv, relu)


@pytest.mark.parametrize("arch", ["resnet50", "resnext50_32x4d"])
def test_every_int8_conv_of_a_quantized_network_through_cutlass_s_host_reference(extension, arch):
    """Every int8 kernel on every conv it takes equals the int8 reference bit for bit (the 3-channel stem
    zero-padded to 4 channels for the fixed-channels kernel, as the choice says); the only convs none takes (which
    run the reference) are ResNeXt's grouped convs."""
    checked, refused = set(), []
    for index, ((problem, residual, relu), choice) in enumerate(int8_convs(arch, "9.0").items()):
        if choice.kernel is None:
            refused.append((problem, choice.reason))
            continue
        assert choice.estimate_us > 0
        assert choice.pad_channels == (4 if problem.c == 3 else 0)
        assert (choice.kernel == STEM_KERNEL) == (problem.c == 3)
        args = (problem, *operands(problem, residual, index), relu)
        expected = reference(*args)
        for name in INT8_KERNELS:
            info = kernel(name)
            stem = info.kind.name == "STEM"
            pad = (4 if stem else 16) if problem.c % (4 if stem else 16) else 0  # C: 3 (the stem) or a multiple of 16
            if (stem and problem.c > 4) or (residual and not info.takes_residual):
                continue
            if info.can_implement(replace(problem, c=pad or problem.c)):
                continue
            y = host_reference(*args, pad=pad, name=name)
            assert y.dtype == torch.int8 and y.is_contiguous(memory_format=CL)
            assert torch.equal(y, expected), (name, problem)
            checked.add((name, problem))
    assert {name for name, _ in checked} == set(INT8_KERNELS)
    assert len(checked) >= 30 and any(p.c == 3 for _, p in checked)
    assert all(p.groups > 1 and "grouped int8 convolution" in reason for p, reason in refused)
    assert bool(refused) == (arch == "resnext50_32x4d")


@pytest.mark.parametrize(
    "regime, problem",
    [
        ("ties", Problem(2, 9, 10, 16, 32, 3, 3, padding=(1, 1))),
        ("wide", Problem(1, 4, 4, 512, 64, 3, 3, padding=(1, 1))),
        ("random", Problem(3, 11, 7, 48, 144, 3, 3, stride=(2, 2), padding=(1, 1), dilation=(2, 2))),
    ],
)
@pytest.mark.parametrize("residual, relu", [(False, False), (True, True), (True, False)])
@pytest.mark.parametrize("name", [INT8_KERNEL, HOPPER_KERNEL])
def test_the_kernel_s_epilogue_edges(extension, regime, problem, residual, relu, name):
    """Halves rounded to even, saturation, and sums past 2**24 (rounded to fp32 first): as the reference."""
    args = (problem, *operands(problem, residual, 7, regime), relu)
    y, expected = host_reference(*args, name=name), reference(*args)
    assert torch.equal(y, expected)
    if regime == "ties":  # odd sums: alpha * acc lands halfway between two integers
        x, w = args[1], args[2]
        acc = torch.nn.functional.conv2d(x.double(), w.double(), None, problem.stride, problem.padding)
        assert (acc % 2 == 1).any()
    if regime == "random":
        assert ((expected == 127) | (expected == -128)).any()  # saturated outputs among them


def test_an_empty_batch_gives_an_empty_output(extension):
    problem = Problem(1, 8, 8, 64, 64, 3, 3, padding=(1, 1))
    x, w, alpha, beta, _, _ = operands(problem, False, 0)
    y = host_reference(problem, x[:0], w, alpha, beta, None, 0.0, True)
    assert y.shape == (0, 64, 8, 8) and y.dtype == torch.int8


def test_the_binding_refuses_what_the_int8_kernel_cannot_take(extension):
    problem = Problem(1, 6, 6, 32, 32, 3, 3, padding=(1, 1))
    x, w, alpha, beta, r, gamma = operands(problem, True, 0)
    index = kernel(INT8_KERNEL).index
    conv = [1, 1, 1, 1, 1, 1, 1, 1, EMULATE]
    scale_shift = torch.stack((alpha, beta), 1)
    with pytest.raises(RuntimeError, match="x must be Char"):
        torch.ops.cutlass_resnet_C.fprop_int8(x.float(), w, scale_shift, r, gamma, conv, index)
    with pytest.raises(RuntimeError, match=r"scale_shift must have shape \(32, 2\)"):
        torch.ops.cutlass_resnet_C.fprop_int8(x, w, alpha.contiguous(), r, gamma, conv, index)
    with pytest.raises(RuntimeError, match=r"scale_shift must have shape \(2, 32\) for kernel sm90"):
        torch.ops.cutlass_resnet_C.fprop_int8(x, w, scale_shift, r, gamma, conv, kernel(HOPPER_KERNEL).index)
    with pytest.raises(RuntimeError, match="is an int8 kernel: call fprop_int8"):
        torch.ops.cutlass_resnet_C.host_reference(x, w, None, None, [1, 1], [1, 1], [1, 1], 1, True, index)
    odd = Problem(1, 6, 6, 24, 32, 3, 3, padding=(1, 1))
    xo, wo, *_ = operands(odd, False, 0)
    with pytest.raises(RuntimeError, match="cannot implement"):
        torch.ops.cutlass_resnet_C.fprop_int8(xo, wo, scale_shift, None, 0.0, conv, index)


@pytest.mark.parametrize("capability", ["8.0", "9.0"])
@pytest.mark.parametrize("arch, on_reference", [("resnet50", 0), ("resnext50_32x4d", 16)])
def test_a_quantized_model_in_the_emulated_gpu_equals_the_int8_reference(
    extension, monkeypatch, arch, on_reference, capability
):
    """Every conv an int8 kernel takes (the stem padded to 4 channels by the dispatcher) runs through the binding
    and CUTLASS's host reference; grouped convs run the reference (with the fallback's warning); the logits equal
    the CPU reference's."""
    torch.manual_seed(0)
    model = getattr(cutlass_resnet, arch)(num_classes=10).eval()
    quantized = cutlass_resnet.quantize(model, torch.randn(4, 3, 64, 64), method="max")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = quantized(x)
    calls = []
    run = dispatch.reference_conv2d_fprop_int8

    def counted(*args):
        calls.append(args[0].shape)
        return run(*args)

    monkeypatch.setattr(dispatch, "reference_conv2d_fprop_int8", counted)
    monkeypatch.setattr(dispatch, "_warned", set())
    with ops.emulate(capability), torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = quantized(x)
    assert torch.equal(y, expected)
    assert len(calls) == on_reference
    assert any("no CUTLASS int8 kernel for conv" in str(w.message) for w in caught) == bool(on_reference)


def test_the_fixed_channels_stem_walks_the_filter_once(extension):
    """CUTLASS's broadcast kernel counts R*S*ceil(C/tile_k) main-loop iterations whatever its iterators (49 for a
    7x7 stem); the fixed-channels iterators take tile_k/C filter positions an iteration, so 4 cover the filter and
    the other 45 would add zeros: the launch runs ceil(R*S / (tile_k/C))."""
    stem = kernel(STEM_KERNEL)
    problem = Problem(8, 224, 224, 4, 64, 7, 7, stride=(2, 2), padding=(3, 3))
    launch = stem.describe(problem)
    assert launch.mainloop_iterations == -(-7 * 7 // (stem.tile_k // 4))
    assert launch.ctas == -(-8 * 112 * 112 // stem.tile_m)


@pytest.mark.parametrize(
    "problem, residual",
    [
        (Problem(2, 15, 13, 3, 32, 7, 7, stride=(2, 2), padding=(3, 3)), False),  # the stem: padded to 4
        (Problem(2, 15, 13, 3, 32, 3, 3, padding=(2, 2), dilation=(2, 2)), False),  # a dilated stem
        (Problem(2, 9, 9, 3, 32, 3, 3, padding=(1, 1)), True),  # 3 channels and a residual
        (Problem(2, 9, 9, 24, 48, 1, 1), True),  # C padded to 32
        (Problem(2, 9, 9, 32, 24, 3, 3, padding=(1, 1)), False),  # K=24: no int8 kernel
        (Problem(2, 9, 9, 32, 32, 3, 3, padding=(1, 1), groups=2), False),  # grouped: no int8 kernel
    ],
    ids=str,
)
def test_any_int8_conv_on_the_emulated_gpu_equals_the_reference(extension, monkeypatch, problem, residual):
    """Through the dispatcher's whole int8 path: the choice, the channel padding, the binding and the kernel's host
    reference, or the reference where no kernel takes the conv."""
    monkeypatch.setattr(dispatch, "_warned", set())
    args = (problem, *operands(problem, residual, 3), True)
    expected = reference(*args)
    with ops.emulate("8.0"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pr, x, w, alpha, beta, r, gamma, relu = args
        conv = (list(pr.stride), list(pr.padding), list(pr.dilation), pr.groups)
        y = ops.conv2d_fprop_int8(x, w, alpha, beta, r, gamma, *conv, relu)
    assert torch.equal(y, expected)
