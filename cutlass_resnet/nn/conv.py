"""The drop-in ``torch.nn.Conv2d`` that runs on :func:`cutlass_resnet.ops.conv2d_fprop`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops  # noqa: F401  (registers torch.ops.cutlass_resnet)
from ..ops import dispatch

__all__ = ["Conv2d", "aten_forward"]

_ATEN_FORWARD = False


@contextlib.contextmanager
def aten_forward() -> Iterator[None]:
    """Inside, every :class:`Conv2d` computes with aten's conv, add and relu instead of the op: what ONNX and
    other exporters that know no custom op see (the numbers are aten's, not the op's single rounding)."""
    global _ATEN_FORWARD
    previous, _ATEN_FORWARD = _ATEN_FORWARD, True
    try:
        yield
    finally:
        _ATEN_FORWARD = previous


class Conv2d(nn.Conv2d):
    """Drop-in :class:`torch.nn.Conv2d` whose forward is the fused CUTLASS-shaped conv op.

    Same constructor, parameter names, shapes and memory layout as ``torch.nn.Conv2d`` (state_dicts are
    interchangeable; pruning, ``weight_norm``, ``spectral_norm`` and parametrizations apply as to torch's), plus
    ``relu=True`` to apply ReLU in the conv's epilogue and a ``residual`` argument to ``forward`` that is added
    before it. The output is channels_last.

    On CUDA, where nothing needs a gradient (``torch.no_grad()``, ``torch.inference_mode()`` or
    parameters that do not require it), a conv seen before runs from C++ alone, without the op's
    Python path. The kernels read the filter channels_last (KRSC): a weight kept so
    (``model.to(memory_format=torch.channels_last)``, as for cuDNN) is read as it is and takes that path;
    another is copied on each call, on the op's path (the weight may have changed by any means since).
    """

    def __init__(self, *args, relu: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.relu = relu
        # set by convert() on a conv it gave an add's other operand: that may broadcast, which the epilogue cannot
        self.residual_may_broadcast = False
        # Explicit padding the op cannot express (a non-zero padding mode, or the asymmetric
        # halves of padding="same" with an even kernel extent) is applied with F.pad first.
        pads = self._reversed_padding_repeated_twice
        self._pad_input = self.padding_mode != "zeros" or pads[0::2] != pads[1::2]
        # stride, the op's padding, dilation, groups: what the C++ path takes, or None where F.pad runs first
        self._fast_conv = None
        if not self._pad_input:
            self._fast_conv = (*self.stride, *self._op_input(torch.empty(0))[1], *self.dilation, self.groups)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", relu=True" if self.relu else "")

    def forward(self, input: Tensor, residual: Tensor | None = None) -> Tensor:
        if not torch.jit.is_scripting():
            if residual is not None and self.residual_may_broadcast and self._broadcasts(input, residual):
                return self._add_after(input, residual)
            if _ATEN_FORWARD:
                return self._aten_forward(input, residual)
            y = self._fast_forward(input, residual)
            if y is not None:
                return y
        return self._conv_forward(input, self.weight, self.bias, residual)

    @torch.jit.unused
    def _aten_forward(self, input: Tensor, residual: Tensor | None) -> Tensor:
        """The same result from aten's ops alone (conv, add, relu), for exporters that know no custom op."""
        y = super()._conv_forward(input, self.weight, self.bias)
        if residual is not None:
            y = y + residual
        return torch.relu(y) if self.relu else y

    @torch.jit.unused
    def _fast_forward(self, input: Tensor, residual: Tensor | None) -> Tensor | None:
        """The conv from C++ alone (:func:`cutlass_resnet.ops.dispatch.fast_conv2d`), or None for the op's path:
        tracing, a gradient to record, padding the op cannot express, a problem not seen yet."""
        if (
            self._fast_conv is None
            or type(input) is not Tensor
            or torch.compiler.is_compiling()
            or torch.jit.is_tracing()  # a trace records the op, not this process's remembered choice
        ):
            return None
        # not Module.__getattr__; pruning keeps the masked weight as a plain attribute, a parametrization as a property
        weight = self._parameters.get("weight", self.__dict__.get("weight"))
        bias = self._parameters.get("bias", self.__dict__.get("bias"))
        if type(weight) not in (Tensor, nn.Parameter) or ("bias" not in self._parameters and type(bias) is not Tensor):
            return None  # a parametrization computes it: the op's path asks for it
        if torch.is_grad_enabled() and (
            input.requires_grad
            or weight.requires_grad
            or (bias is not None and bias.requires_grad)
            or (residual is not None and residual.requires_grad)
        ):
            return None
        return dispatch.fast_conv2d(input, weight, bias, residual, self._fast_conv, self.relu)

    def _op_input(self, input: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """The input as the op takes it (padded here where the op cannot pad) and the op's padding."""
        if self._pad_input:
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            return F.pad(input, self._reversed_padding_repeated_twice, mode=mode), (0, 0)
        if isinstance(self.padding, str):  # "valid" or a symmetric "same"
            return input, tuple(self._reversed_padding_repeated_twice[2::-2])
        return input, tuple(self.padding)

    @torch.jit.unused
    def _broadcasts(self, input: Tensor, residual: Tensor) -> bool:
        """Whether ``residual`` is not of the output's shape (so it must broadcast); never while tracing, where
        shapes are symbols."""
        if not isinstance(input, Tensor) or not isinstance(residual, Tensor):
            return False
        pads = self._reversed_padding_repeated_twice  # (left, right, top, bottom)
        extents = [
            (size + pads[2 * i] + pads[2 * i + 1] - self.dilation[d] * (self.kernel_size[d] - 1) - 1) // self.stride[d]
            + 1
            for d, (i, size) in enumerate(((1, input.shape[-2]), (0, input.shape[-1])))
        ]
        return tuple(residual.shape) != (input.shape[0], self.out_channels, *extents)

    @torch.jit.unused
    def _add_after(self, input: Tensor, residual: Tensor) -> Tensor:
        """The conv, then the residual added (broadcast) and the ReLU applied, as separate ops."""
        y = self._op(input, self.weight, self.bias, None, False) + residual
        return torch.relu(y) if self.relu else y

    def _conv_forward(
        self, input: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None = None
    ) -> Tensor:
        return self._op(input, weight, bias, residual, self.relu)

    def _op(self, input: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None, relu: bool) -> Tensor:
        x, padding = self._op_input(input)
        if residual is not None:
            residual = residual.contiguous(memory_format=torch.channels_last)
        return torch.ops.cutlass_resnet.conv2d_fprop(
            x.contiguous(memory_format=torch.channels_last),
            weight.contiguous(memory_format=torch.channels_last),
            bias,
            residual,
            self.stride,
            padding,
            self.dilation,
            self.groups,
            relu,
        )
