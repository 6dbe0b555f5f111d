"""Fold BatchNorm into the convs and move ReLU and the residual add into their epilogues.

Inference only: folding bakes the BatchNorm running statistics into the conv weights. Each
module owns its fusion, as timm's modules own ``fuse()``: it lists its ``conv_norm_pairs``
(``(conv, norm, relu)`` names relative to itself) and folds them in ``fuse_bn_(dtype)``.
:func:`fuse_bn` walks a model over those modules, checking everything before it changes anything.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["conv_norm_pairs", "fold_bn", "fuse_bn", "fuse_conv_norm_pairs_"]


def fold_bn(
    conv_weight: Tensor,
    conv_bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    weight: Tensor | None,
    bias: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Fold one BatchNorm into the conv before it, computed in float64 whatever the inputs' dtype.

    Returns the float64 weight (in ``conv_weight``'s memory layout) and bias; callers round them once to the
    model dtype.
    """
    acc = torch.float32 if conv_weight.device.type == "mps" else torch.float64

    def up(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.detach().to(acc)

    w, b = fuse_conv_bn_weights(
        up(conv_weight), up(conv_bias), up(running_mean), up(running_var), eps, up(weight), up(bias)
    )
    layout = torch.channels_last if conv_weight.is_contiguous(memory_format=torch.channels_last) else None
    return (w.detach() if layout is None else w.detach().contiguous(memory_format=layout)), b.detach()


def _norm_stats(name: str, norm: nn.Module) -> tuple[Tensor, Tensor, float, Tensor | None, Tensor | None]:
    if not isinstance(norm, (nn.BatchNorm2d, FrozenBatchNorm2d)) or norm.running_mean is None:
        raise TypeError(
            f"fuse_bn: cannot fold {name} ({type(norm).__name__}); only BatchNorm2d and FrozenBatchNorm2d "
            "with running statistics can be folded into a conv"
        )
    return norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias


def _owners(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules of ``model`` that own a fusion, in forward order."""
    return [(name, m) for name, m in model.named_modules() if callable(getattr(m, "fuse_bn_", None))]


def conv_norm_pairs(model: nn.Module) -> list[tuple[str, str, bool]]:
    """``(conv, norm, relu)`` for every conv of ``model`` that folds a norm, by full name, in forward order.

    ``relu`` says whether the fused conv applies ReLU in its epilogue.
    """
    owners = _owners(model)
    if not owners:
        raise TypeError(
            f"fuse_bn expects a cutlass_resnet ResNet (or a model whose modules define conv_norm_pairs and "
            f"fuse_bn_), got {type(model).__name__}"
        )
    pairs = []
    for name, owner in owners:
        prefix = f"{name}." if name else ""
        pairs += [(prefix + conv, prefix + norm, relu) for conv, norm, relu in owner.conv_norm_pairs]
    return pairs


def fuse_conv_norm_pairs_(module: nn.Module, dtype: torch.dtype | None = None) -> None:
    """Fold each of ``module.conv_norm_pairs`` in place and delete the norms: its convs get the
    folded weight and a bias (float64, rounded once to ``dtype`` or the conv's dtype) and their ReLU flag."""
    for conv_name, norm_name, relu in module.conv_norm_pairs:
        conv = module.get_submodule(conv_name)
        stats = _norm_stats(norm_name, module.get_submodule(norm_name))
        norm_eps = stats[2]
        w, b = fold_bn(conv.weight, conv.bias, *stats)
        requires_grad, target = conv.weight.requires_grad, dtype or conv.weight.dtype
        conv.weight = nn.Parameter(w.to(target), requires_grad=requires_grad)
        conv.bias = nn.Parameter(b.to(target), requires_grad=requires_grad)
        conv.relu = relu
        conv.folded_eps = norm_eps  # what a later fold on load (load_torchvision_state_dict) must use
        parent, _, attr = norm_name.rpartition(".")
        delattr(module.get_submodule(parent), attr)


def fuse_bn(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """Fold every BatchNorm of ``model`` into its conv, in place, and return ``model``.

    Each conv gets the folded weight and a bias, computed in float64 and rounded once to
    ``dtype`` (default: the model's; with a dtype the whole model is cast to it, so folding
    fp32 weights into an fp16 model rounds once, not twice). The BatchNorm modules are removed,
    and each block's ReLUs and residual add move into its convs' epilogues: a fused Bottleneck
    is three op calls (four with a downsample). Inference only: the model must be in eval mode.
    Fusing a fused model does nothing but the cast.

    Args:
        model: a model of this package in eval mode (or any module holding its blocks).
        dtype: the dtype the folded weights are rounded to, and the model cast to (default: the model's).
    """
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(
            f"fuse_bn: dtype must be a real floating-point dtype (torch.float32, torch.float16, torch.bfloat16 or "
            f"torch.float64), got {dtype}; the model is unchanged"
        )
    pairs = conv_norm_pairs(model)
    owners = [m for _, m in _owners(model) if not m.fused]
    if not owners:
        return model.to(dtype=dtype)
    if model.training:
        raise RuntimeError(
            "fuse_bn folds BatchNorm running statistics into the convs and is inference-only; call model.eval() first"
        )
    for _, norm, _ in pairs:  # every norm checked before anything changes: a failure leaves the model as it was
        _norm_stats(norm, model.get_submodule(norm))
    for owner in owners:
        owner.fuse_bn_(dtype)
    return model.to(dtype=dtype)
