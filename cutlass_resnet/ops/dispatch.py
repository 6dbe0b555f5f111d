"""The CUDA implementation of the op: the chosen kernel, its prepared weights, the launch, or the fallback.

Whatever has no kernel, or whose kernel has not passed its self-check on this GPU, falls back,
with a one-time warning (or raises, with ``CUTLASS_RESNET_STRICT=1``), to :func:`fallback_conv2d_fprop`:
cuDNN in the input's dtype with the bias, residual and ReLU applied after it, as torchvision
computes a block. The single-rounding reference stays the CPU implementation.
"""

from __future__ import annotations

import os
import warnings
from functools import cache

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

from .conv import _check_args, conv2d_fprop
from .select import Choice, Problem, device_info, kernel, select
from .selfcheck import RECHECK_HINT, kernel_verdict

__all__ = ["STRICT", "fallback_conv2d_fprop"]

#: Raise instead of falling back to the reference when a CUDA conv has no kernel.
STRICT = os.environ.get("CUTLASS_RESNET_STRICT", "") == "1"

_warned: set[str] = set()
_prepared_weights = WeakIdKeyDictionary()  # weight -> ((its _version, how), prepared copy)


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
    version, prepared = _prepared_weights.get(weight, (None, None))
    if version != current:
        prepared = prepare(weight.detach())
        _prepared_weights[weight] = (current, prepared)
    return prepared


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
    if choice.pad_channels:
        x = _pad_channels(x, choice.pad_channels)
        weight = _prepared_weight(weight, ("pad", choice.pad_channels), lambda w: _pad_channels(w, choice.pad_channels))
    if choice.merge_groups:
        merge = choice.merge_groups
        weight = _prepared_weight(weight, ("blocks", merge), lambda w: _block_diagonal(w, groups, merge))
        groups //= merge
    launch = kernel(choice.kernel).launch
    conv = (list(stride), list(padding), list(dilation), groups, relu, choice.split_k or 1)
    if not choice.batch_chunk:
        return launch(x, weight, bias, residual, *conv)
    step = choice.batch_chunk
    parts = [
        launch(x[i : i + step], weight, bias, None if residual is None else residual[i : i + step], *conv)
        for i in range(0, n, step)
    ]
    return torch.cat(parts).contiguous(memory_format=torch.channels_last)
