"""The one op the CUTLASS kernels implement: ``cutlass_resnet::conv2d_fprop``.

``y = relu?(conv2d(x, weight) + bias + residual)``, NHWC activations (channels_last NCHW
tensors), KRSC filters (channels_last weights), accumulated in fp32 (fp64 for fp64 inputs)
and rounded once to the output dtype, exactly as a CUTLASS epilogue does.

The reference implementation below, built on aten's convolution, is registered for CPU; on CUDA
the implementation in dispatch.py runs the kernels (or aten's convolution where none can).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["SUPPORTED_DTYPES", "accumulator_dtype", "conv2d_fprop", "output_size", "reference_conv2d_fprop"]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_CL = torch.channels_last


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """One spatial output extent of a convolution, as aten computes it."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


INT_MAX = 2**31 - 1  #: the largest extent, stride, padding or dilation a conv takes (the kernels' int indices)


def _pair(name: str, value: Sequence[int], minimum: int, op: str = "conv2d_fprop") -> None:
    if len(value) != 2 or any(v < minimum or v > INT_MAX for v in value):
        raise ValueError(f"{op}: {name} must be two integers from {minimum} to 2**31 - 1, got {list(value)}")


def _check_layout(name: str, t: Tensor, op: str = "conv2d_fprop") -> None:
    if not t.is_contiguous(memory_format=_CL):
        raise ValueError(
            f"{op}: {name} must be NHWC in memory (channels_last); "
            f"call {name}.contiguous(memory_format=torch.channels_last)"
        )


def _check_dims(x: Tensor, weight: Tensor, op: str = "conv2d_fprop") -> None:
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(
            f"{op}: expected a 4-D input (N, C, H, W) and a 4-D weight (K, C/groups, R, S), "
            f"got shapes {tuple(x.shape)} and {tuple(weight.shape)}"
        )


def check_geometry(
    x: Tensor,
    weight: Tensor,
    residual: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    op: str = "conv2d_fprop",
    between: Callable[[], None] | None = None,
) -> tuple[int, int, int, int]:
    """The checks every conv op makes of its shapes, strides and layouts; the output shape (N, K, P, Q).
    ``between`` (an op's own checks) runs after the input's and weight's and before the residual's."""
    _pair("stride", stride, 1, op)
    _pair("padding", padding, 0, op)
    _pair("dilation", dilation, 1, op)
    n, c, h, w = x.shape
    k, c_per_group, r, s = weight.shape
    if groups < 1 or k % groups != 0 or c != c_per_group * groups:
        raise ValueError(
            f"{op}: input has {c} channels but weight {tuple(weight.shape)} with groups={groups} "
            f"expects {c_per_group * groups} (and out channels {k} divisible by groups)"
        )
    if h + 2 * padding[0] > INT_MAX or w + 2 * padding[1] > INT_MAX:
        raise ValueError(
            f"{op}: padding {list(padding)} makes the padded input {h + 2 * padding[0]}x{w + 2 * padding[1]}, "
            "more than a conv takes (2**31 - 1 a side)"
        )
    p = output_size(h, r, stride[0], padding[0], dilation[0])
    q = output_size(w, s, stride[1], padding[1], dilation[1])
    if p < 1 or q < 1:
        raise ValueError(
            f"{op}: input of spatial size {h}x{w} is too small for a {r}x{s} kernel with "
            f"padding {list(padding)} and dilation {list(dilation)}; the output would be {p}x{q}"
        )
    _check_layout("x", x, op)
    _check_layout("weight", weight, op)
    if between is not None:
        between()
    if residual is not None:
        if residual.shape != (n, k, p, q):
            raise ValueError(f"{op}: residual has shape {tuple(residual.shape)} but the output is {(n, k, p, q)}")
        _check_layout("residual", residual, op)
    return n, k, p, q


def _check_args(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    residual: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> tuple[int, int, int, int]:
    """Validate the arguments like the kernels' binding will; return the output shape."""
    _check_dims(x, weight)
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"conv2d_fprop: unsupported dtype {x.dtype}; use one of "
            f"{', '.join(str(d) for d in SUPPORTED_DTYPES)} (e.g. x.float() for an image tensor)"
        )
    for name, t in (("weight", weight), ("bias", bias), ("residual", residual)):
        if t is None:
            continue
        if t.dtype != x.dtype:
            raise TypeError(
                f"conv2d_fprop: input dtype {x.dtype} differs from {name} dtype {t.dtype}; "
                f"cast one to match (e.g. model.to({x.dtype}) or x.to({t.dtype}))"
            )
        if t.device != x.device:
            raise ValueError(
                f"conv2d_fprop: input is on {x.device} but {name} is on {t.device}; "
                f"move both to one device (e.g. model.to(x.device))"
            )
    k = weight.shape[0]

    def check_bias() -> None:
        if bias is not None and bias.shape != (k,):
            raise ValueError(
                f"conv2d_fprop: bias must have shape ({k},) (one per output channel), got {tuple(bias.shape)}"
            )
        if bias is not None and not bias.is_contiguous():
            raise ValueError(
                f"conv2d_fprop: bias is not contiguous (stride {bias.stride()[0]}, a strided view); "
                "pass bias.contiguous()"
            )

    return check_geometry(x, weight, residual, stride, padding, dilation, groups, between=check_bias)


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for fp16/bf16/fp32 (what the tensor cores accumulate in), fp64 for fp64."""
    return torch.promote_types(dtype, torch.float32)


def reference_conv2d_fprop(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    residual: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    relu: bool,
) -> Tensor:
    """Reference implementation: aten convolution in the accumulator dtype, one rounding."""
    shape = _check_args(x, weight, bias, residual, stride, padding, dilation, groups)
    acc = accumulator_dtype(x.dtype)
    y = torch.nn.functional.conv2d(
        x.to(acc), weight.to(acc), None if bias is None else bias.to(acc), stride, padding, dilation, groups
    )
    if residual is not None:
        y = y.add_(residual.to(acc))
    if relu:
        y = y.relu_()
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=_CL)
    return out.copy_(y)


# The reference is the CPU implementation, and the CUDA one wherever no CUTLASS kernel can run
# (dispatch.py registers the CUDA implementation that dispatches to the kernels).
conv2d_fprop = torch.library.custom_op(
    "cutlass_resnet::conv2d_fprop",
    mutates_args=(),
    device_types="cpu",
    tags=(torch.Tag.needs_exact_strides,),
)(reference_conv2d_fprop)
# One device per call: torch's per-device wrappers bind the loop variable late, so registering
# ("cpu", "cuda") at once would send CPU calls to whatever is later registered for CUDA.
conv2d_fprop.register_kernel("cuda")(reference_conv2d_fprop)


@conv2d_fprop.register_fake
def _(x, weight, bias, residual, stride, padding, dilation, groups, relu):
    shape = _check_args(x, weight, bias, residual, stride, padding, dilation, groups)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=_CL)


def _setup_context(ctx, inputs, output):
    x, weight, bias, residual, stride, padding, dilation, groups, relu = inputs
    ctx.conv = (stride, padding, dilation, groups)
    ctx.relu = relu
    ctx.has_bias = bias is not None
    ctx.has_residual = residual is not None
    ctx.save_for_backward(x, weight, output if relu else None)


def _backward(ctx, grad_y: Tensor):
    """Gradients through aten's convolution backward, in the accumulator dtype."""
    x, weight, y = ctx.saved_tensors
    stride, padding, dilation, groups = ctx.conv
    acc = accumulator_dtype(x.dtype)
    grad = grad_y.to(acc)
    if ctx.relu:
        grad = grad * (y > 0)
    need_x, need_w, need_b, need_r = ctx.needs_input_grad[:4]
    grad_x = grad_w = grad_b = grad_r = None
    if need_x or need_w:
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            grad,
            x.to(acc),
            weight.to(acc),
            None,
            stride,
            padding,
            dilation,
            False,
            [0, 0],
            groups,
            [need_x, need_w, False],
        )
        grad_x = None if grad_x is None else grad_x.to(x.dtype)
        grad_w = None if grad_w is None else grad_w.to(weight.dtype)
    if need_b and ctx.has_bias:
        grad_b = grad.sum((0, 2, 3)).to(x.dtype)
    if need_r and ctx.has_residual:
        grad_r = grad.to(x.dtype)
    return grad_x, grad_w, grad_b, grad_r, None, None, None, None, None


conv2d_fprop.register_autograd(_backward, setup_context=_setup_context)


# Autocast, as aten's convolution has it: inside ``torch.autocast(device_type, dtype)`` the op casts its floating
# operands on that device to the autocast dtype (fp16 or bf16: a kernel's) and runs with autocast off.
# torch.library.register_autocast casts to one dtype fixed at registration; autocast's is chosen by its user.
_autocast_library = torch.library.Library("cutlass_resnet", "IMPL")


def _register_autocast(device_type: str) -> None:
    key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    autocast_keys = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

    def kernel(_keyset, x, weight, bias, residual, stride, padding, dilation, groups, relu):
        dtype = torch.get_autocast_dtype(device_type)

        def cast(t: Tensor | None) -> Tensor | None:
            usable = t is not None and t.is_floating_point() and t.device.type == device_type
            return t.to(dtype) if usable else t

        with torch._C._ExcludeDispatchKeyGuard(autocast_keys):
            return conv2d_fprop._opoverload(
                cast(x), cast(weight), cast(bias), cast(residual), stride, padding, dilation, groups, relu
            )

    _autocast_library.impl("conv2d_fprop", kernel, key, with_keyset=True)


for _device_type in ("cpu", "cuda"):
    _register_autocast(_device_type)
