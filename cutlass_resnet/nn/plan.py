"""What every conv of a model would run on a given GPU: ``plan(model, input_shape, dtype, capability)``, host-only."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from ..ops import library
from ..ops.select import Choice, Problem, capability_of, roofline_us, select, select_int8
from .conv import Conv2d
from .quantized import QuantizedConv2d

__all__ = ["Plan", "PlanEntry", "plan"]


@dataclass(frozen=True)
class PlanEntry:
    """What one conv of a model would run."""

    module: str
    problem: Problem
    choice: Choice
    residual: bool = False  #: whether the conv adds a residual in its epilogue
    roofline_us: float | None = None  #: its multiply-adds at the GPU's peak, or its bytes at the bandwidth

    @property
    def estimate_us(self) -> float | None:
        """The time model's estimate of the conv on the chosen kernel (None where aten's convolution runs)."""
        return self.choice.estimate_us

    def __str__(self) -> str:
        what = self.choice.kernel or f"reference: {self.choice.reason}"
        extras = []
        if self.choice.pad_channels:
            extras.append(f"C padded to {self.choice.pad_channels}")
        if self.choice.batch_chunk:
            extras.append(f"batch split by {self.choice.batch_chunk}")
        if self.choice.merge_groups:
            extras.append(f"groups merged by {self.choice.merge_groups}")
        if self.choice.split_k:
            extras.append(f"split-K {self.choice.split_k}")
        if self.choice.launch is not None:
            extras.append(str(self.choice.launch))
        if self.estimate_us is not None:
            extras.append(f"~{self.estimate_us:.1f} us")
        return f"{self.module:<28} {self.problem!s:<44} {what}" + (f" ({', '.join(extras)})" if extras else "")


class Plan(list):
    """:func:`plan`'s entries, one per conv in forward order, with the time model's totals."""

    batch: int = 1

    @property
    def estimate_us(self) -> float | None:
        """The convs' estimated time together, in microseconds (None if any conv runs aten's convolution)."""
        times = [e.estimate_us for e in self]
        return None if any(t is None for t in times) else sum(times)

    @property
    def kernel_share(self) -> float:
        """The share of the convs' FLOPs that CUTLASS kernels would compute (the rest: aten's convolution)."""
        total = sum(e.problem.flops for e in self)
        return sum(e.problem.flops for e in self if e.choice.kernel is not None) / total if total else 0.0

    @property
    def roofline_us(self) -> float:
        """The per-layer roofline together: no kernel could run the convs faster."""
        return sum(e.roofline_us or 0.0 for e in self)

    @property
    def images_per_s(self) -> float | None:
        """The estimated throughput of the convs alone (pooling and the classifier not counted)."""
        total = self.estimate_us
        return None if not total else self.batch / total * 1e6


def plan(
    model: nn.Module,
    input_shape: tuple[int, int, int, int] = (1, 3, 224, 224),
    dtype: torch.dtype = torch.float16,
    capability: tuple[int, int] | str | torch.device | int = (8, 0),
    sm_count: int | None = None,
    *,
    arch: tuple[int, int] | str | torch.device | int | None = None,
) -> Plan:
    """For every conv of ``model`` at ``input_shape``, the kernel that would run on a GPU of compute
    ``capability``, and the time model's estimate of it (``entry.estimate_us``; the model's total is
    the returned :class:`Plan`'s ``estimate_us``; every figure an estimate).

    Host-only: the model runs on fake tensors to find each conv's problem, and each problem
    goes through :func:`cutlass_resnet.ops.select.select` (so CUTLASS's ``can_implement``), with
    no GPU needed. Each entry's ``choice.launch`` says, from the kernel's own parameters, how many CTAs one
    launch runs, how many main-loop iterations each makes and how much shared memory it takes; where aten's
    convolution would run, ``choice.reason`` says why.

    Args:
        model: the model, on any device (the meta device plans in no time).
        input_shape: ``(N, C, H, W)`` of its input.
        dtype: the dtype it would run in (the kernels take fp16 and bf16); ``torch.int8`` (implied by a model from
            :func:`cutlass_resnet.quantize`) chooses each conv's int8 kernel with
            :func:`cutlass_resnet.ops.select.select_int8` (int8 bytes and peak); a conv no int8 kernel takes (a
            grouped one) is estimated on the int8 kernel design and runs the int8 reference.
        capability: the GPU's compute capability, ``(9, 0)``, ``"sm_90"``, ``"9.0"`` or ``"9.0a"``, or a CUDA
            ``torch.device`` or device index to plan for that GPU.
        sm_count: its SMs (default: the capability's usual GPU, e.g. 132 for an H100).
        arch: the old name of ``capability`` (deprecated: ``arch`` names a model elsewhere).
    """
    if arch is not None:
        warnings.warn("plan(arch=) is deprecated: pass capability= (arch names a model)", FutureWarning, stacklevel=2)
        capability = arch
    arch = capability_of(capability)
    problems: list[tuple[str, Problem, bool]] = []

    int8 = dtype == torch.int8 or any(isinstance(m, QuantizedConv2d) for m in model.modules())

    def record(name: str, module: Conv2d | QuantizedConv2d, args: tuple, kwargs: dict) -> None:
        x, padding = (args[0], module.padding) if isinstance(module, QuantizedConv2d) else module._op_input(args[0])
        residual = len(args) > 1 and args[1] is not None or kwargs.get("residual") is not None
        problem = Problem.from_conv(
            x.shape, module.weight.shape, module.stride, padding, module.dilation, module.groups
        )
        problems.append((name, problem, residual))

    hooks = [
        m.register_forward_pre_hook(lambda mod, a, kw, name=name: record(name, mod, a, kw), with_kwargs=True)
        for name, m in model.named_modules()
        if isinstance(m, (Conv2d, QuantizedConv2d))
    ]
    param = next(model.parameters())  # a model built on the meta device plans in no time
    try:
        with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True):
            model(torch.empty(input_shape, dtype=param.dtype, device=param.device))
    finally:
        for h in hooks:
            h.remove()
    library.load_for(arch)
    if int8:
        entries = [(n, p, select_int8(p, arch, sm_count, r), r) for n, p, r in problems]
    else:
        entries = [(n, p, select(p, dtype, arch, sm_count, r), r) for n, p, r in problems]
    result = Plan(PlanEntry(n, p, c, r, roofline_us(p, arch, r, int8)) for n, p, c, r in entries)
    result.batch = input_shape[0]
    return result
