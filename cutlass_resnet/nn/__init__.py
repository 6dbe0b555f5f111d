"""Layers on the op: the drop-in :class:`Conv2d`, BatchNorm folding (:func:`fuse_bn`) and :func:`plan`."""

from .conv import Conv2d
from .fuse import conv_norm_pairs, fold_bn, fuse_bn
from .plan import Plan, PlanEntry, plan

__all__ = ["Conv2d", "Plan", "PlanEntry", "conv_norm_pairs", "fold_bn", "fuse_bn", "plan"]
