"""The op in ONNX, so that a plain ``torch.onnx.export(model, x, "m.onnx")`` writes standard operators: Conv, then
Add for the residual and Relu, for both of torch's exporters (the torch.export-based one decomposes the op into
aten's convolution, add and relu; the TorchScript one translates it directly). The exported graph computes with
ONNX's own rounding, as aten's ops do, not the op's single rounding."""

from __future__ import annotations

import torch
from torch import Tensor
from torch._decomp import register_decomposition
from torch.onnx import register_custom_op_symbolic, symbolic_helper

from .conv import conv2d_fprop

__all__: list[str] = []

OP = "cutlass_resnet::conv2d_fprop"


@register_decomposition(conv2d_fprop._opoverload)
def _decomposed(
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
    """The op as aten's ops (what the torch.export-based exporter, given torch's decompositions, translates)."""
    y = torch.ops.aten.convolution.default(x, weight, bias, stride, padding, dilation, False, [0, 0], groups)
    if residual is not None:
        y = torch.ops.aten.add.Tensor(y, residual)
    return torch.ops.aten.relu.default(y) if relu else y


@symbolic_helper.parse_args("v", "v", "v", "v", "is", "is", "is", "i", "b")
def _symbolic(g, x, weight, bias, residual, stride, padding, dilation, groups, relu):  # noqa: ANN001, ANN202
    """The op in the TorchScript-based exporter's graph: Conv (with its bias), Add, Relu."""
    inputs = [x, weight] if symbolic_helper._is_none(bias) else [x, weight, bias]
    y = g.op("Conv", *inputs, strides_i=stride, pads_i=list(padding) * 2, dilations_i=dilation, group_i=groups)
    if not symbolic_helper._is_none(residual):
        y = g.op("Add", y, residual)
    return g.op("Relu", y) if relu else y


register_custom_op_symbolic(OP, _symbolic, 9)
