"""Layers on the op: the drop-in :class:`Conv2d` and :class:`MaxPool2d`, BatchNorm folding (:func:`fuse_bn`) and
:func:`plan`, and :func:`convert` for any CNN."""

from .conv import Conv2d
from .convert import Conversion, convert
from .fusion import conv_norm_pairs, fold_bn, fuse_bn
from .graph import CUDAGraphModel, cuda_graph
from .plan import Plan, PlanEntry, plan
from .pool import MaxPool2d

__all__ = [
    "CUDAGraphModel",
    "Conv2d",
    "Conversion",
    "MaxPool2d",
    "Plan",
    "PlanEntry",
    "conv_norm_pairs",
    "convert",
    "cuda_graph",
    "fold_bn",
    "fuse_bn",
    "plan",
]
