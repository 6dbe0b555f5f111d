"""Fold BatchNorm into the convs and move ReLU and the residual add into their epilogues.

Inference only: folding bakes the BatchNorm running statistics into the conv weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops.misc import FrozenBatchNorm2d

from .models.resnet import BasicBlock, Bottleneck, ResNet

__all__ = ["fuse_bn", "fold_bn", "conv_norm_pairs"]


def conv_norm_pairs(model: ResNet) -> list[tuple[str, str, bool]]:
    """``(conv, norm, relu)`` for every conv of ``model`` in forward order.

    ``relu`` says whether the fused conv applies ReLU in its epilogue: every conv but the
    downsample projections, since a block's last conv also takes the residual add.
    """
    if not isinstance(model, ResNet):
        raise TypeError(f"expected a cutlass_resnet ResNet, got {type(model).__name__}")
    pairs = [("conv1", "bn1", True)]
    for name, block in model.named_modules():
        if isinstance(block, (BasicBlock, Bottleneck)):
            pairs += [(f"{name}.{conv}", f"{name}.{norm}", True) for conv, norm in block.conv_norm_pairs]
            if block.downsample is not None:
                pairs.append((f"{name}.downsample.0", f"{name}.downsample.1", False))
    return pairs


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

    Returns the float64 weight (channels_last) and bias; callers round them once to the model dtype.
    """
    acc = torch.float32 if conv_weight.device.type == "mps" else torch.float64

    def up(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.detach().to(acc)

    w, b = fuse_conv_bn_weights(
        up(conv_weight), up(conv_bias), up(running_mean), up(running_var), eps, up(weight), up(bias)
    )
    return w.detach().contiguous(memory_format=torch.channels_last), b.detach()


def _norm_stats(name: str, norm: nn.Module) -> tuple[Tensor, Tensor, float, Tensor | None, Tensor | None]:
    if not isinstance(norm, (nn.BatchNorm2d, FrozenBatchNorm2d)) or norm.running_mean is None:
        raise TypeError(
            f"fuse_bn: cannot fold {name} ({type(norm).__name__}); only BatchNorm2d and FrozenBatchNorm2d "
            "with running statistics can be folded into a conv"
        )
    return norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias


def fuse_bn(model: ResNet, dtype: torch.dtype | None = None) -> ResNet:
    """Fold every BatchNorm of ``model`` into its conv, in place, and return ``model``.

    Each conv gets the folded weight and a bias, computed in float64 and rounded once to
    ``dtype`` (default: the model's; with a dtype the whole model is cast to it, so folding
    fp32 weights into an fp16 model rounds once, not twice). The BatchNorm modules are removed,
    and each block's ReLUs and residual add move into its convs' epilogues: a fused Bottleneck
    is three op calls (four with a downsample). Inference only: the model must be in eval mode.
    Fusing a fused model does nothing but the cast.
    """
    pairs = conv_norm_pairs(model)
    if model.fused:
        return model.to(dtype=dtype)
    if model.training:
        raise RuntimeError(
            "fuse_bn folds BatchNorm running statistics into the convs and is inference-only; call model.eval() first"
        )
    # Check every norm before changing anything, so a failure leaves the model as it was.
    stats = [_norm_stats(norm, model.get_submodule(norm)) for _, norm, _ in pairs]
    for (conv_name, norm_name, relu), norm_stats in zip(pairs, stats, strict=True):
        conv = model.get_submodule(conv_name)
        w, b = fold_bn(conv.weight, conv.bias, *norm_stats)
        requires_grad, target = conv.weight.requires_grad, dtype or conv.weight.dtype
        conv.weight = nn.Parameter(w.to(target), requires_grad=requires_grad)
        conv.bias = nn.Parameter(b.to(target), requires_grad=requires_grad)
        conv.relu = relu
        parent_name, _, attr = norm_name.rpartition(".")
        delattr(model.get_submodule(parent_name), attr)
    for module in model.modules():
        if isinstance(module, (ResNet, BasicBlock, Bottleneck)):
            del module.relu
            module.fused = True
    return model.to(dtype=dtype)
