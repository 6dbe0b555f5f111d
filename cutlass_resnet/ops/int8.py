"""The INT8 op: ``cutlass_resnet::conv2d_fprop_int8``, int8 NHWC in, int8 NHWC out.

``y = saturate(round(relu?(float(acc) * alpha[k] + beta[k] + float(residual) * gamma)))`` where ``acc`` is the
exact integer sum of int8 x int8 products (what int32 tensor-core accumulation gives), and every step after it
is one IEEE fp32 operation in that order, each rounded to nearest even, none fused (a kernel's epilogue uses
``__fmul_rn``/``__fadd_rn``): ``float(acc)`` rounds the integer to fp32, ``round`` is to nearest even
(``__float2int_rn``) and ``saturate`` clamps to [-128, 127].

With per-tensor activation scales ``s_x`` (input), ``s_r`` (residual), ``s_y`` (output) and per-channel weight
scales ``s_w[k]``: ``alpha = s_x * s_w / s_y``, ``beta = bias / s_y``, ``gamma = s_r / s_y``
(:func:`epilogue_constants`, computed in float64 and rounded once to fp32), so that
``y * s_y = relu(acc * s_x * s_w[k] + bias + s_r * residual)``, requantized with the next layer's scale.

The reference below is the op's CPU implementation: the sums are exact in float64 for any conv whose
``C/groups * R * S`` products fit the int32 accumulator, which :func:`conv2d_fprop_int8` checks. On CUDA (and on
CPU tensors under :func:`~.dispatch.emulate`) :mod:`.dispatch` runs a CUTLASS int8 kernel (``csrc/conv80_int8.cuh``,
Hopper's ``csrc/conv90_int8.cuh``) where one takes the conv, else this reference with a one-time warning.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .conv import _check_dims, check_geometry

__all__ = [
    "INT8_MAX_REDUCTION",
    "conv2d_fprop_int8",
    "dequantize",
    "epilogue_constants",
    "pad_channels",
    "quantize_per_tensor",
    "reference_conv2d_fprop_int8",
]

_CL = torch.channels_last
_OP = "conv2d_fprop_int8"
#: the most products one output sums (``C/groups * R * S``): 128 * 128 * this stays below 2**31
INT8_MAX_REDUCTION = (2**31 - 1) // (128 * 128)


def quantize_per_tensor(x: Tensor, scale: float) -> Tensor:
    """``saturate(round(x / scale))`` as int8 (symmetric, zero point 0; ONNX QuantizeLinear's rounding), in fp32
    and in ``x``'s memory layout."""
    q = torch.round(x.float() / torch.tensor(scale, dtype=torch.float32))
    return q.clamp_(-128, 127).to(torch.int8)


def dequantize(q: Tensor, scale: float | Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``q * scale`` in fp32, then cast to ``dtype`` (ONNX DequantizeLinear); a tensor ``scale`` is not read on the
    host."""
    return (q.float() * torch.as_tensor(scale, dtype=torch.float32, device=q.device)).to(dtype)


def pad_channels(t: Tensor, channels: int) -> Tensor:
    """``t`` (N, C, H, W) as NHWC with zero channels up to ``channels``: the int8 kernels' input and filter where C
    is not what they load (the stem's 3 channels: 4)."""
    out = t.new_zeros((t.shape[0], channels, *t.shape[2:])).contiguous(memory_format=_CL)
    out[:, : t.shape[1]] = t
    return out


def epilogue_constants(
    input_scale: float,
    weight_scale: Tensor,
    output_scale: float,
    bias: Tensor | None,
    residual_scale: float | None,
) -> tuple[Tensor, Tensor, float]:
    """The epilogue's ``alpha[k]``, ``beta[k]`` (fp32) and ``gamma`` from the scales, each computed in float64 and
    rounded once; ``gamma`` is 0.0 without a residual."""
    w = weight_scale.detach().to(torch.float64)
    alpha = (input_scale * w / output_scale).float()
    beta = torch.zeros_like(alpha) if bias is None else (bias.detach().to(torch.float64) / output_scale).float()
    gamma = 0.0 if residual_scale is None else float(torch.tensor(residual_scale / output_scale).float())
    return alpha.to(weight_scale.device), beta.to(weight_scale.device), gamma


def _check_args(
    x: Tensor,
    weight: Tensor,
    alpha: Tensor,
    beta: Tensor,
    residual: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> tuple[int, int, int, int]:
    _check_dims(x, weight, _OP)
    for name, t in (("x", x), ("weight", weight), ("residual", residual)):
        if t is not None and t.dtype != torch.int8:
            raise TypeError(
                f"{_OP}: {name} must be int8, got {t.dtype}; quantize it first "
                "(cutlass_resnet.ops.quantize_per_tensor, or cutlass_resnet.quantize for a whole model)"
            )
    k, c_per_group, r, s = weight.shape
    for name, t in (("alpha", alpha), ("beta", beta)):
        if t.dtype != torch.float32 or t.shape != (k,):
            raise ValueError(
                f"{_OP}: {name} must be float32 of shape ({k},) (one per output channel), got {t.dtype} "
                f"{tuple(t.shape)}"
            )
    for name, t in (("weight", weight), ("alpha", alpha), ("beta", beta), ("residual", residual)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{_OP}: input is on {x.device} but {name} is on {t.device}; move both to one device")
    if c_per_group * r * s > INT8_MAX_REDUCTION:
        raise ValueError(
            f"{_OP}: each output sums {c_per_group * r * s} products, more than an int32 accumulator holds for "
            f"int8 operands ({INT8_MAX_REDUCTION}); split the conv's input channels"
        )
    return check_geometry(x, weight, residual, stride, padding, dilation, groups, _OP)


def reference_conv2d_fprop_int8(
    x: Tensor,
    weight: Tensor,
    alpha: Tensor,
    beta: Tensor,
    residual: Tensor | None,
    gamma: float,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    relu: bool,
) -> Tensor:
    """Reference implementation: exact integer sums (float64 convolution), then the fp32 epilogue step by step."""
    shape = _check_args(x, weight, alpha, beta, residual, stride, padding, dilation, groups)
    acc = torch.nn.functional.conv2d(x.double(), weight.double(), None, stride, padding, dilation, groups)
    v = acc.float() * alpha.view(1, -1, 1, 1)
    v = v + beta.view(1, -1, 1, 1)
    if residual is not None:
        v = v + residual.float() * torch.tensor(gamma, dtype=torch.float32)
    if relu:
        v = v.clamp_min(0)
    out = torch.empty(shape, dtype=torch.int8, device=x.device, memory_format=_CL)
    return out.copy_(torch.round(v).clamp_(-128, 127))


conv2d_fprop_int8 = torch.library.custom_op(
    "cutlass_resnet::conv2d_fprop_int8",
    mutates_args=(),
    device_types="cpu",
    tags=(torch.Tag.needs_exact_strides,),
)(reference_conv2d_fprop_int8)


@conv2d_fprop_int8.register_fake
def _(x, weight, alpha, beta, residual, gamma, stride, padding, dilation, groups, relu):
    shape = _check_args(x, weight, alpha, beta, residual, stride, padding, dilation, groups)
    return torch.empty(shape, dtype=torch.int8, device=x.device, memory_format=_CL)
