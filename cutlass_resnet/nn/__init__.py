"""Layers on the op: the drop-in :class:`Conv2d` and :class:`MaxPool2d`, BatchNorm folding (:func:`fuse_bn`) and
:func:`plan`, :func:`convert` for any CNN, and the INT8 layers (:class:`QuantizedConv2d`)."""

from .conv import Conv2d
from .convert import Conversion, convert
from .fusion import conv_norm_pairs, fold_bn, fuse_bn
from .graph import CUDAGraphModel, cuda_graph
from .plan import Plan, PlanEntry, plan
from .pool import MaxPool2d
from .quantized import Calibrator, Dequantize, QuantizedConv2d, quantized_scales

__all__ = [
    "CUDAGraphModel",
    "Calibrator",
    "Conv2d",
    "Conversion",
    "Dequantize",
    "MaxPool2d",
    "Plan",
    "PlanEntry",
    "QuantizedConv2d",
    "conv_norm_pairs",
    "convert",
    "cuda_graph",
    "fold_bn",
    "fuse_bn",
    "plan",
    "quantized_scales",
]
