"""The kernel implementation of the op: the kernel chosen once per problem, then the binding; or the fallback.

Python chooses a conv's kernel once per problem (:func:`~.select.select`, and on a GPU the kernel's self-check
verdict: a kernel that failed it is left out and the next best chosen) and remembers the choice in the binding.
Everything else happens in the binding's one path, on every call: the stem's input and filter padded to 4
channels, a grouped filter laid out block-diagonally (both made from the live weight each time, so a changed
weight always reaches the kernel), the batch split, the split-K workspace and the launch. A conv seen before runs
from C++ alone (:func:`fast_conv2d`).

Whatever has no kernel, or no kernel that passed its self-check on this GPU, falls back, with a one-time warning
(or raises, with ``CUTLASS_RESNET_STRICT=1``), to :func:`fallback_conv2d_fprop`: aten's convolution in the input's
dtype with the bias, residual and ReLU applied after it, as torchvision computes a block.

The int8 op (:mod:`.int8`) goes the same way through :func:`~.select.select_int8` and the binding's
``fprop_int8``; what no int8 kernel takes (grouped convs) runs the int8 reference, with a one-time warning.

The same path runs without a GPU in two modes, on fp16/bf16/int8 CPU tensors as on a GPU of a given capability:
:func:`emulate` (or ``CUTLASS_RESNET_EMULATE=9.0`` in the environment) computes each launch with its kernel's
CUTLASS host reference on the exact arguments the launch would get; :func:`dry_run` does everything but the
launch and computes nothing (the host path, timed).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache

import torch
from torch import Tensor

from . import library
from .conv import _check_args, conv2d_fprop, reference_conv2d_fprop
from .int8 import _check_args as _check_int8_args
from .int8 import conv2d_fprop_int8, pad_channels, reference_conv2d_fprop_int8
from .select import KERNEL_DTYPES, Choice, Problem, capability_of, device_info, kernel, select, select_int8
from .selfcheck import RECHECK_HINT, NotYet, capturing, kernel_verdict

__all__ = [
    "EMULATE_ENV",
    "STRICT",
    "dry_run",
    "emulate",
    "emulating",
    "fall_back",
    "fallback_conv2d_fprop",
    "fast_conv2d",
    "forget_choices",
]

#: Raise instead of falling back to the reference when a CUDA conv has no kernel.
STRICT = os.environ.get("CUTLASS_RESNET_STRICT", "") == "1"
#: The environment variable that turns on the emulated GPU for the whole process: a capability, ``8.0`` or ``9.0``.
EMULATE_ENV = "CUTLASS_RESNET_EMULATE"

# The binding's modes (Mode in binding.cpp).
LAUNCH, DRY_RUN, EMULATE = 0, 1, 2
#: Problems whose choices are kept in Python (input sizes that vary without end would grow the cache forever).
MAX_CACHED_CHOICES = 4096

_warned: set[str] = set()


@dataclass(frozen=True)
class _Target:
    """The GPU that CPU tensors (and, in a dry run, CUDA tensors too) are run for, without it."""

    mode: int
    capability: tuple[int, int]
    sm_count: int | None


def _target_from_environment() -> _Target | None:
    text = os.environ.get(EMULATE_ENV, "").strip()
    if not text:
        return None
    try:
        return _Target(EMULATE, capability_of(text), None)
    except ValueError:
        raise ValueError(
            f"{EMULATE_ENV}={text!r} is not a compute capability: set it to one such as 8.0 or 9.0, or unset it"
        ) from None


_target: _Target | None = _target_from_environment()


def fallback_conv2d_fprop(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    residual: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    relu: bool,
) -> Tensor:
    """The op as torchvision's arithmetic computes it: aten's convolution (cuDNN) in the input dtype, then
    the residual add and ReLU in place; channels_last, as the op's output."""
    y = torch.nn.functional.conv2d(x, weight, bias, stride, padding, dilation, groups)
    y = y.contiguous(memory_format=torch.channels_last)
    if residual is not None:
        y.add_(residual)
    return y.relu_() if relu else y


@lru_cache(maxsize=MAX_CACHED_CHOICES)
def _cached_select(
    problem: Problem,
    dtype: torch.dtype,
    capability: tuple[int, int],
    sm_count: int | None,
    residual: bool,
    exclude: frozenset[str],
) -> Choice:
    if dtype == torch.int8:
        return select_int8(problem, capability, sm_count, residual, exclude=exclude)
    return select(problem, dtype, capability, sm_count, residual, exclude=exclude)


def _choose(
    problem: Problem,
    dtype: torch.dtype,
    capability: tuple[int, int],
    sm_count: int | None,
    residual: bool,
    device_index: int | None,
) -> Choice:
    """The fastest kernel for ``problem``; on a GPU (``device_index``) the fastest that passed its self-check
    there, the ones that failed it left out. No kernel where the best could not be checked now (aten's
    convolution this time); with none left, the reason is the first failed verdict."""
    exclude: frozenset[str] = frozenset()
    disabled = None
    while True:
        choice = _cached_select(problem, dtype, capability, sm_count, residual, exclude)
        if choice.kernel is None:
            return choice if disabled is None else replace(choice, reason=disabled)
        verdict = None if device_index is None else kernel_verdict(choice.kernel, device_index)
        if verdict is None:
            return choice
        if isinstance(verdict, NotYet):
            return Choice(kernel=None, reason=str(verdict))
        disabled = disabled or f"{verdict} ({RECHECK_HINT})"
        exclude = exclude | {choice.kernel}


def _decided(choice: Choice) -> list[int]:
    """A choice as the binding takes it (Decided in binding.cpp)."""
    index = -1 if choice.kernel is None else kernel(choice.kernel).index
    return [index, choice.pad_channels, choice.merge_groups, choice.batch_chunk, choice.split_k]


def _remember(problem: Problem, dtype: torch.dtype, residual: bool, device: int, choice: Choice) -> None:
    """Tell the binding the choice for this problem, so that fast_conv2d runs its next calls from C++."""
    ops = torch.ops.cutlass_resnet_C
    ops.remember(problem.as_list(), KERNEL_DTYPES.index(dtype), device, residual, _decided(choice))


def _launch(
    x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None, conv: list[int], choice: Choice
) -> Tensor:
    """The binding's one path for a conv and its choice: packing, kernel-ready filter, batch split, workspace,
    and the launch (or, by ``conv``'s mode, the dry run or the host reference)."""
    return torch.ops.cutlass_resnet_C.run(x, weight, bias, residual, conv, _decided(choice))


def forget_choices() -> None:
    """Forget every choice: the next call of each conv goes through Python's choice again."""
    _cached_select.cache_clear()
    if library.loaded():
        torch.ops.cutlass_resnet_C.forget_choices()


@contextlib.contextmanager
def _targeting(target: _Target) -> Iterator[None]:
    global _target
    _library_for(target)
    previous, _target = _target, target
    forget_choices()  # CPU tensors' choices are keyed by no device: made for another target, they must go
    try:
        yield
    finally:
        _target = previous
        forget_choices()


def dry_run(capability: tuple[int, int] = (8, 0), sm_count: int | None = None) -> contextlib.AbstractContextManager:
    """Inside, every conv does everything a launch does but launch (choice, packing, checks, outputs, kernel
    parameters and TMA descriptors), on CPU tensors (and CUDA ones) as on a GPU of ``capability``: the host path,
    timed without a GPU. The outputs hold no result.

    Args:
        capability: the GPU's compute capability, ``(9, 0)``, ``"9.0"``, ...
        sm_count: its SMs, which kernel choice depends on (default: the capability's usual GPU).
    """
    return _targeting(_Target(DRY_RUN, tuple(capability_of(capability)), sm_count))


def emulate(capability: object = (8, 0), sm_count: int | None = None) -> contextlib.AbstractContextManager:
    """Inside, fp16, bf16 and int8 convs on CPU tensors run as on a GPU of ``capability`` (``(9, 0)``, ``"9.0"``, ...):
    the same kernel choice, packing, kernel-ready filters, batch split, split-K workspace and epilogue arguments,
    with each launch computed by that kernel's CUTLASS host reference on its exact arguments instead of launched.
    What it proves: everything but the kernel bodies (``docs/architecture.md``). ``CUTLASS_RESNET_EMULATE=9.0``
    turns it on for a whole process.

    Args:
        capability: the emulated GPU's compute capability (the kernels need 8.0 or newer; 9.0 for Hopper's).
        sm_count: its SMs, which kernel choice depends on (default: the capability's usual GPU).
    """
    return _targeting(_Target(EMULATE, tuple(capability_of(capability)), sm_count))


def emulating() -> tuple[int, int] | None:
    """The capability of the emulated GPU CPU tensors run on, or None."""
    return _target.capability if _target is not None and _target.mode == EMULATE else None


def fast_conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None, conv: tuple[int, ...], relu: bool
) -> Tensor | None:
    """The op's result from C++ alone, for inference (the caller checks that nothing needs a gradient), or None
    where the op's path must run: a problem seen for the first time, an operand the remembered choice cannot take
    as it is, aten's convolution. ``conv``: stride, padding, dilation (two each) and groups."""
    op = _conv2d_op()
    if op is None or x.dtype not in KERNEL_DTYPES:
        return None
    target = _target
    if x.is_cuda:
        mode = DRY_RUN if target is not None and target.mode == DRY_RUN else LAUNCH
    elif target is None:
        return None
    else:
        mode = target.mode
    out = op(x, weight, bias, residual, (*conv, relu, mode))
    return out[0] if out else None


_conv2d: list = []


def _conv2d_op():
    """The binding's conv2d, looked up once the extension is loaded (None before)."""
    if not _conv2d and library.loaded():
        _conv2d.append(torch.ops.cutlass_resnet_C.conv2d.default)
    return _conv2d[0] if _conv2d else None


def fall_back(message: str, reason: str, instead: str = "aten's convolution") -> None:
    """Say that ``instead`` runs what a kernel would (once per ``reason``), or raise with
    ``CUTLASS_RESNET_STRICT=1``."""
    if STRICT:
        raise RuntimeError(message + "; unset CUTLASS_RESNET_STRICT to fall back to the reference")
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"{message}; running {instead} instead (warned once per reason)", stacklevel=4)


def _aligned(t: Tensor | None) -> Tensor | None:
    """``t``, or a copy of it where it does not start on 16 bytes (a view into another tensor): what every
    operand of a kernel needs."""
    if t is None or t.data_ptr() % 16 == 0:
        return t
    return t.clone(memory_format=torch.channels_last if t.dim() == 4 else torch.contiguous_format)


def _kernel_conv2d_fprop(x, weight, bias, residual, stride, padding, dilation, groups, relu, mode, gpu, device_index):
    """The op on a GPU (``gpu``: capability and SMs), real or emulated: its kernel, or the fallback."""
    n, k, p, q = _check_args(x, weight, bias, residual, stride, padding, dilation, groups)
    problem = Problem.from_conv(x.shape, weight.shape, stride, padding, dilation, groups)
    choice = _choose(problem, x.dtype, *gpu, residual is not None, device_index)
    if choice.kernel is None:
        if mode == DRY_RUN:  # aten's convolution would run: nothing to do in a dry run
            return torch.empty((n, k, p, q), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        fall_back(f"cutlass_resnet: no CUTLASS kernel for conv {problem} ({x.dtype}): {choice.reason}", choice.reason)
        return fallback_conv2d_fprop(x, weight, bias, residual, stride, padding, dilation, groups, relu)
    if not capturing():
        _remember(problem, x.dtype, residual is not None, -1 if device_index is None else device_index, choice)
    operands = [_aligned(t) for t in (x, weight, bias, residual)]
    return _launch(*operands, [*stride, *padding, *dilation, groups, int(relu), mode], choice)


def _library_for(target: _Target) -> bool:
    """Whether the kernels' library is loaded, loading (or building) it for the target's arch first."""
    return library.loaded() or library.load_for(target.capability)


@conv2d_fprop.register_kernel("cuda")
def _cuda_conv2d_fprop(x, weight, bias, residual, stride, padding, dilation, groups, relu):
    target = _target
    if target is not None and target.mode == DRY_RUN:
        gpu = (target.capability, target.sm_count)
        return _kernel_conv2d_fprop(
            x, weight, bias, residual, stride, padding, dilation, groups, relu, DRY_RUN, gpu, None
        )
    device_index = x.device.index or 0
    gpu = device_info(device_index)
    return _kernel_conv2d_fprop(
        x, weight, bias, residual, stride, padding, dilation, groups, relu, LAUNCH, gpu, device_index
    )


@conv2d_fprop.register_kernel("cpu")
def _cpu_conv2d_fprop(x, weight, bias, residual, stride, padding, dilation, groups, relu):
    target = _target
    if target is None or x.dtype not in KERNEL_DTYPES or not _library_for(target):
        return reference_conv2d_fprop(x, weight, bias, residual, stride, padding, dilation, groups, relu)
    gpu = (target.capability, target.sm_count)
    return _kernel_conv2d_fprop(
        x, weight, bias, residual, stride, padding, dilation, groups, relu, target.mode, gpu, None
    )


def _kernel_conv2d_fprop_int8(
    x, weight, alpha, beta, residual, gamma, stride, padding, dilation, groups, relu, mode, gpu, device_index
):
    """The int8 op on a GPU (``gpu``: capability and SMs), real or emulated: its kernel, or the int8 reference."""
    args = (x, weight, alpha, beta, residual, gamma, stride, padding, dilation, groups, relu)
    shape = _check_int8_args(x, weight, alpha, beta, residual, stride, padding, dilation, groups)
    problem = Problem.from_conv(x.shape, weight.shape, stride, padding, dilation, groups)
    choice = _choose(problem, torch.int8, *gpu, residual is not None, device_index)
    if choice.kernel is None:
        if mode == DRY_RUN:  # the reference would run: nothing to do in a dry run
            return torch.empty(shape, dtype=torch.int8, device=x.device, memory_format=torch.channels_last)
        fall_back(
            f"cutlass_resnet: no CUTLASS int8 kernel for conv {problem}: {choice.reason}",
            choice.reason,
            "the int8 reference (exact sums in float64 with aten: the kernels' numbers, slowly)",
        )
        return reference_conv2d_fprop_int8(*args)
    info = kernel(choice.kernel)
    scale_shift = info.scale_shift(alpha, beta)
    if choice.pad_channels:  # from the live weight on every call, as the binding packs the fp16 stem
        x, weight = pad_channels(x, choice.pad_channels), pad_channels(weight, choice.pad_channels)
    x, weight, residual = (_aligned(t) for t in (x, weight, residual))
    conv = [*stride, *padding, *dilation, groups, int(relu), mode]
    return torch.ops.cutlass_resnet_C.fprop_int8(x, weight, scale_shift, residual, gamma, conv, info.index)


@conv2d_fprop_int8.register_kernel("cuda")
def _cuda_conv2d_fprop_int8(x, weight, alpha, beta, residual, gamma, stride, padding, dilation, groups, relu):
    args = (x, weight, alpha, beta, residual, gamma, stride, padding, dilation, groups, relu)
    target = _target
    if target is not None and target.mode == DRY_RUN:
        return _kernel_conv2d_fprop_int8(*args, DRY_RUN, (target.capability, target.sm_count), None)
    device_index = x.device.index or 0
    return _kernel_conv2d_fprop_int8(*args, LAUNCH, device_info(device_index), device_index)


@conv2d_fprop_int8.register_kernel("cpu")
def _cpu_conv2d_fprop_int8(x, weight, alpha, beta, residual, gamma, stride, padding, dilation, groups, relu):
    args = (x, weight, alpha, beta, residual, gamma, stride, padding, dilation, groups, relu)
    target = _target
    if target is None or not _library_for(target):
        return reference_conv2d_fprop_int8(*args)
    return _kernel_conv2d_fprop_int8(*args, target.mode, (target.capability, target.sm_count), None)
