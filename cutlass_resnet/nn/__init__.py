"""Layers on the op: the drop-in :class:`Conv2d` and :class:`MaxPool2d`, BatchNorm folding (:func:`fuse_bn`) and
:func:`plan`."""

from .conv import Conv2d
from .fusion import conv_norm_pairs, fold_bn, fuse_bn
from .graph import CUDAGraphModel, cuda_graph
from .plan import Plan, PlanEntry, plan
from .pool import MaxPool2d

__all__ = [
    "CUDAGraphModel",
    "Conv2d",
    "MaxPool2d",
    "Plan",
    "PlanEntry",
    "conv_norm_pairs",
    "cuda_graph",
    "fold_bn",
    "fuse_bn",
    "plan",
]
