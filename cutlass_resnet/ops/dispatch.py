"""The CUDA implementation of the op: the chosen kernel, its prepared weights, the launch, or the fallback.

Whatever has no kernel, or whose kernel has not passed its self-check on this GPU, falls back,
with a one-time warning (or raises, with ``CUTLASS_RESNET_STRICT=1``), to :func:`fallback_conv2d_fprop`:
cuDNN in the input's dtype with the bias, residual and ReLU applied after it, as torchvision
computes a block. The single-rounding reference stays the CPU implementation.

The first call of a conv problem chooses its kernel here and remembers the choice in the binding;
:func:`fast_conv2d` then runs the next calls of that problem from C++ alone (inference only: no
autograd, no tracing). Under :func:`dry_run` it does everything but launch, on CPU tensors too, as on
a GPU of a given compute capability: the host path, timed without a GPU.
"""

from __future__ import annotations

import contextlib
import os
import warnings
import weakref
from collections.abc import Iterator
from functools import cache

import torch
from torch import Tensor

from . import build
from .conv import _check_args, conv2d_fprop
from .select import KERNEL_DTYPES, Choice, Problem, device_info, kernel, select
from .selfcheck import RECHECK_HINT, capturing, kernel_verdict

__all__ = ["STRICT", "dry_run", "fallback_conv2d_fprop", "fast_conv2d", "forget_choices"]

#: Raise instead of falling back to the reference when a CUDA conv has no kernel.
STRICT = os.environ.get("CUTLASS_RESNET_STRICT", "") == "1"

_warned: set[str] = set()
# id(weight) -> (weakref to it, (its _version, how), prepared copy); an entry goes with its weight.
_prepared_weights: dict[int, tuple[weakref.ref, tuple, Tensor]] = {}
_dry_run: tuple[tuple[int, int], int | None] | None = None  # (capability, SMs) inside dry_run()


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


@cache
def _cached_select(problem: Problem, dtype: torch.dtype, device_index: int, residual: bool) -> Choice:
    capability, sm_count = device_info(device_index)
    return select(problem, dtype, capability, sm_count, residual)


def _pad_channels(t: Tensor, channels: int) -> Tensor:
    shape = (t.shape[0], channels, *t.shape[2:])
    padded = torch.empty(shape, dtype=t.dtype, device=t.device, memory_format=torch.channels_last).zero_()
    padded[:, : t.shape[1]] = t
    return padded


def _block_diagonal(weight: Tensor, groups: int, merge: int) -> Tensor:
    """A grouped conv's weight as one with groups // merge groups: each merged group's filter is
    block-diagonal, zero outside its original groups."""
    k, c, r, s = weight.shape
    blocks = weight.reshape(groups // merge, merge, k // groups, c, r, s)
    out = weight.new_zeros(groups // merge, merge, k // groups, merge, c, r, s)
    for i in range(merge):
        out[:, i, :, i] = blocks[:, i]
    return out.reshape(k, merge * c, r, s).contiguous(memory_format=torch.channels_last)


def _prepared_weight(weight: Tensor, how: tuple, prepare) -> Tensor:
    """``prepare(weight)``, cached per weight until it changes (the stem's padding, grouped blocks)."""
    try:
        current = (weight._version, how)
    except RuntimeError:  # an inference-mode tensor has no version counter: do not cache
        return prepare(weight.detach())
    entry = _prepared(weight)
    if entry is not None and entry[0] == current:
        return entry[1]
    prepared = prepare(weight.detach())
    key = id(weight)
    gone = weakref.ref(weight, lambda _, key=key: _prepared_weights.pop(key, None))
    _prepared_weights[key] = (gone, current, prepared)
    return prepared


def _prepared(weight: Tensor) -> tuple[tuple, Tensor] | None:
    """((version, how), prepared copy) of ``weight``, if one was made."""
    entry = _prepared_weights.get(id(weight))
    if entry is None or entry[0]() is not weight:
        return None
    return entry[1], entry[2]


def _launch_weight(weight: Tensor, groups: int, choice: Choice) -> tuple[Tensor, int]:
    """The weight and groups the chosen kernel takes: the stem's padded, grouped convs' merged."""
    if choice.pad_channels:
        pad = choice.pad_channels
        weight = _prepared_weight(weight, ("pad", pad), lambda w: _pad_channels(w, pad))
    if choice.merge_groups:
        merge = choice.merge_groups
        weight = _prepared_weight(weight, ("blocks", merge), lambda w: _block_diagonal(w, groups, merge))
        groups //= merge
    return weight, groups


def _remember(x: Tensor, weight: Tensor, residual: Tensor | None, conv: tuple, device: int, choice: Choice) -> None:
    """Tell the binding the choice for this problem, so that fast_conv2d runs its next calls from C++."""
    stride, padding, dilation, groups = conv
    key = [*x.shape, weight.shape[0], *weight.shape[2:], *stride, *padding, *dilation, groups]
    index = kernel(choice.kernel).index
    decided = [index, choice.pad_channels, choice.merge_groups, choice.batch_chunk, choice.split_k]
    torch.ops.cutlass_resnet_C.remember(key, KERNEL_DTYPES.index(x.dtype), device, residual is not None, decided)


def forget_choices() -> None:
    """Forget every choice: the next call of each conv goes through Python's choice again."""
    _cached_select.cache_clear()
    if build.loaded():
        torch.ops.cutlass_resnet_C.forget_choices()


@contextlib.contextmanager
def dry_run(capability: tuple[int, int] = (8, 0), sm_count: int | None = None) -> Iterator[None]:
    """Inside, :func:`fast_conv2d` does everything a launch does but launch (choice, checks, outputs, kernel
    parameters), on CPU tensors as on a GPU of ``capability``: the host path, timed without a GPU. The outputs
    hold no result."""
    global _dry_run
    previous, _dry_run = _dry_run, (tuple(capability), sm_count)
    try:
        yield
    finally:
        _dry_run = previous


def fast_conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None, conv: tuple[int, ...], relu: bool
) -> Tensor | None:
    """The op's result from C++ alone, for inference (the caller checks that nothing needs a gradient), or None
    where the Python path must run: a problem seen for the first time, a weight changed since it was prepared,
    an operand the remembered choice cannot take, aten's convolution. ``conv``: stride, padding, dilation (two
    each) and groups."""
    op = _conv2d_op()
    if op is None or x.dtype not in KERNEL_DTYPES:
        return None
    entry = _prepared(weight)
    launch_weight = weight
    if entry is not None:
        (version, _), launch_weight = entry
        if version != weight._version:
            return None
    dry = _dry_run is not None
    out = op(x, launch_weight, bias, residual, (*conv, relu, dry))
    if out or not dry:
        return out[0] if out else None
    return _dry_run_first(x, weight, bias, residual, conv, relu)


def _dry_run_first(x: Tensor, weight: Tensor, bias, residual, conv: tuple[int, ...], relu: bool) -> Tensor:
    """A problem's first dry run: chosen for the dry run's GPU and remembered, then run from C++."""
    capability, sm_count = _dry_run
    stride, padding, dilation, groups = conv[0:2], conv[2:4], conv[4:6], conv[6]
    problem = Problem.from_conv(x.shape, weight.shape, stride, padding, dilation, groups)
    choice = select(problem, x.dtype, capability, sm_count, residual is not None)
    if choice.kernel is None:  # aten's convolution would run: nothing to do in a dry run
        shape = (x.shape[0], weight.shape[0], problem.p, problem.q)
        return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    launch_weight, _ = _launch_weight(weight, groups, choice)
    device = -1 if x.device.type == "cpu" else x.device.index or 0
    _remember(x, weight, residual, (stride, padding, dilation, groups), device, choice)
    (y,) = _conv2d_op()(x, launch_weight, bias, residual, (*conv, relu, True))
    return y


_conv2d: list = []


def _conv2d_op():
    """The binding's conv2d, looked up once the extension is loaded (None before)."""
    if not _conv2d and build.loaded():
        _conv2d.append(torch.ops.cutlass_resnet_C.conv2d.default)
    return _conv2d[0] if _conv2d else None


@conv2d_fprop.register_kernel("cuda")
def _cuda_conv2d_fprop(x, weight, bias, residual, stride, padding, dilation, groups, relu):
    n, k, p, q = _check_args(x, weight, bias, residual, stride, padding, dilation, groups)
    problem = Problem.from_conv(x.shape, weight.shape, stride, padding, dilation, groups)
    device_index = x.device.index or 0
    choice = _cached_select(problem, x.dtype, device_index, residual is not None)
    reason = choice.reason
    if choice.kernel is not None and (verdict := kernel_verdict(choice.kernel, device_index)) is not None:
        reason = f"{verdict} ({RECHECK_HINT})"
    if reason is not None:
        message = f"cutlass_resnet: no CUTLASS kernel for conv {problem} ({x.dtype}): {reason}"
        if STRICT:
            raise RuntimeError(message + "; unset CUTLASS_RESNET_STRICT to fall back to the reference")
        if reason not in _warned:
            _warned.add(reason)
            warnings.warn(message + "; running aten's convolution instead (warned once per reason)", stacklevel=2)
        return fallback_conv2d_fprop(x, weight, bias, residual, stride, padding, dilation, groups, relu)
    conv = (list(stride), list(padding), list(dilation), groups)
    if not capturing():
        _remember(x, weight, residual, conv, device_index, choice)
    if choice.pad_channels:  # one pass from any layout (zero_ + copy_ would be two)
        x = torch.ops.cutlass_resnet_C.pack_channels(x, choice.pad_channels)
    weight, groups = _launch_weight(weight, groups, choice)
    launch = kernel(choice.kernel).launch
    args = (list(stride), list(padding), list(dilation), groups, relu, choice.split_k or 1)
    if not choice.batch_chunk:
        return launch(x, weight, bias, residual, *args)
    step = choice.batch_chunk
    parts = [
        launch(x[i : i + step], weight, bias, None if residual is None else residual[i : i + step], *args)
        for i in range(0, n, step)
    ]
    return torch.cat(parts).contiguous(memory_format=torch.channels_last)
