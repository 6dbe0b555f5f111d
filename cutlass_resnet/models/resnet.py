"""torchvision's ResNet family, every convolution on :class:`cutlass_resnet.nn.Conv2d`.

Module names, parameter shapes and state_dict keys are torchvision's, so weights move between
the two with ``load_state_dict(..., strict=True)`` both ways. Each block, and ``ResNet`` for its
stem, owns its fusion (``conv_norm_pairs`` and ``fuse_bn_``): after :func:`cutlass_resnet.fuse_bn`
a block's BatchNorms are folded into its convs and its ReLUs and residual add run in the conv
epilogues (``block.fused`` is then True).
"""

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.fx
from torch import Tensor, nn
from torchvision.models import (
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
    ResNet152_Weights,
    ResNeXt50_32X4D_Weights,
    ResNeXt101_32X8D_Weights,
    ResNeXt101_64X4D_Weights,
    Wide_ResNet50_2_Weights,
    Wide_ResNet101_2_Weights,
)
from torchvision.models._api import WeightsEnum
from torchvision.models._utils import _ovewrite_named_param, handle_legacy_interface

from ..nn import Conv2d, MaxPool2d, fusion
from ._api import load_weights, register_model, verify_weights

__all__ = [
    "ResNet",
    "BasicBlock",
    "Bottleneck",
    "ResNet18_Weights",
    "ResNet34_Weights",
    "ResNet50_Weights",
    "ResNet101_Weights",
    "ResNet152_Weights",
    "ResNeXt50_32X4D_Weights",
    "ResNeXt101_32X8D_Weights",
    "ResNeXt101_64X4D_Weights",
    "Wide_ResNet50_2_Weights",
    "Wide_ResNet101_2_Weights",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> Conv2d:
    """3x3 convolution with padding"""
    return Conv2d(
        in_planes,
        out_planes,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        groups=groups,
        bias=False,
        dilation=dilation,
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> Conv2d:
    """1x1 convolution"""
    return Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def _with_downsample(
    block: "BasicBlock | Bottleneck", pairs: list[tuple[str, str, bool]]
) -> list[tuple[str, str, bool]]:
    """A block's (conv, norm, relu) pairs and its downsample projection's, which takes no ReLU."""
    return pairs + ([("downsample.0", "downsample.1", False)] if block.downsample is not None else [])


class BasicBlock(nn.Module):
    expansion: int = 1
    __jit_unused_properties__ = ["conv_norm_pairs"]  # fusion bookkeeping, not part of a scripted forward
    __constants__ = ["fused"]  # TorchScript compiles only the branch of the block's form

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride
        self.fused = False

    @property
    def conv_norm_pairs(self) -> list[tuple[str, str, bool]]:
        """(conv, norm, relu) that :meth:`fuse_bn_` folds: the last conv also takes the residual add."""
        return _with_downsample(self, [("conv1", "bn1", True), ("conv2", "bn2", True)])

    def fuse_bn_(self, dtype: torch.dtype | None = None) -> None:
        """Fold the BatchNorms into the convs; ReLU and the residual add move into their epilogues."""
        fusion.fuse_conv_norm_pairs_(self, dtype)
        del self.relu
        self.fused = True

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        if self.fused:
            return self.conv2(self.conv1(x), residual=identity)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    # The stride sits on the 3x3 conv (ResNet V1.5), as in torchvision.
    expansion: int = 4
    __jit_unused_properties__ = ["conv_norm_pairs"]
    __constants__ = ["fused"]

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.fused = False

    @property
    def conv_norm_pairs(self) -> list[tuple[str, str, bool]]:
        """(conv, norm, relu) that :meth:`fuse_bn_` folds: the last conv also takes the residual add."""
        return _with_downsample(self, [("conv1", "bn1", True), ("conv2", "bn2", True), ("conv3", "bn3", True)])

    def fuse_bn_(self, dtype: torch.dtype | None = None) -> None:
        """Fold the BatchNorms into the convs; ReLUs and the residual add move into their epilogues."""
        fusion.fuse_conv_norm_pairs_(self, dtype)
        del self.relu
        self.fused = True

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        if self.fused:
            return self.conv3(self.conv2(self.conv1(x)), residual=identity)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    #: The stem's (conv, norm, relu), which :meth:`fuse_bn_` folds; the blocks fold their own.
    conv_norm_pairs = (("conv1", "bn1", True),)
    __constants__ = ["fused"]  # TorchScript compiles only the stem of the model's form

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        zero_init_residual: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: list[bool] | None = None,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        self._norm_layer = norm_layer
        self.inplanes = 64
        self.dilation = 1
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError(
                f"replace_stride_with_dilation should be None or a 3-element tuple, got {replace_stride_with_dilation}"
            )
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, dilate=replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=replace_stride_with_dilation[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self.fused = False
        self.pretrained_source: str | None = None  # where the weights came from, for save_pretrained
        self.pretrained_cfg: dict | None = None  # timm's preprocessing of the weights, where a file said it

        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # drawn in NCHW order, as torchvision's are: same seed, same weights
                w = torch.empty(m.weight.shape, dtype=m.weight.dtype, device=m.weight.device)
                with torch.no_grad():
                    m.weight.copy_(nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"))
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        # Zero-initialize the last BN in each residual branch (https://arxiv.org/abs/1706.02677).
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck) and m.bn3.weight is not None:
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock) and m.bn2.weight is not None:
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(
        self,
        block: type[BasicBlock | Bottleneck],
        planes: int,
        blocks: int,
        stride: int = 1,
        dilate: bool = False,
    ) -> nn.Sequential:
        norm_layer = self._norm_layer
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                norm_layer(planes * block.expansion),
            )
        layers = [
            block(
                self.inplanes, planes, stride, downsample, self.groups, self.base_width, previous_dilation, norm_layer
            )
        ]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(
                block(
                    self.inplanes,
                    planes,
                    groups=self.groups,
                    base_width=self.base_width,
                    dilation=self.dilation,
                    norm_layer=norm_layer,
                )
            )
        return nn.Sequential(*layers)

    def fuse_bn_(self, dtype: torch.dtype | None = None) -> None:
        """Fold the stem's BatchNorm into its conv, ReLU into its epilogue (use :func:`cutlass_resnet.fuse_bn`
        to fuse the whole model)."""
        fusion.fuse_conv_norm_pairs_(self, dtype)
        del self.relu
        self.fused = True

    def train(self, mode: bool = True) -> "ResNet":
        if mode and self.fused:
            warnings.warn(
                "this model was fused with cutlass_resnet.fuse_bn and is inference-only: its BatchNorms "
                "are folded away, so training it does not train a ResNet; train an unfused model and "
                "fuse it afterwards",
                stacklevel=2,
            )
        return super().train(mode)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's feature map, (N, C, H/32, W/32): what the pooling and the classifier take (timm's
        name)."""
        if torch.jit.is_scripting():
            torch._assert(
                x.dim() == 4 and x.size(1) == self.conv1.in_channels,
                "ResNet expects a batch of images of shape (N, C, H, W) with the model's C input channels",
            )
        elif not torch.jit.is_tracing():  # a leaf call for FX (torch.fx.wrap below): no control flow on shapes
            _check_input(x, self.conv1.in_channels)
        x = self.conv1(x)  # any layout: on a GPU the stem packs its 3 channels into NHWC4 in one pass
        if not self.fused:
            x = self.relu(self.bn1(x))
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pooling and the classifier on :meth:`forward_features`' map; ``pre_logits``: the pooled features
        (N, C), the embeddings (timm's name)."""
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def _forward_impl(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward(self, x: Tensor) -> Tensor:
        return self._forward_impl(x)


def _check_input(x: Tensor, channels: int) -> None:
    """A batch of images (N, C, H, W), or an error that says what is wrong with ``x`` and how to fix it."""
    shape = tuple(x.shape)
    if x.dim() == 4 and shape[1] == channels:
        return
    expected = f"ResNet expects a batch of images of shape (N, {channels}, H, W), got {shape}"
    if x.dim() == 3 and shape[0] == channels:
        hint = "a single image: add the batch dimension with x.unsqueeze(0)"
    elif x.dim() == 4 and shape[-1] == channels:
        hint = "the shape is (N, H, W, C): permute it with x.permute(0, 3, 1, 2) (channels_last memory is fine)"
    elif x.dim() == 4 and shape[1] == 1:
        hint = f"one channel (grayscale): repeat it with x.expand(-1, {channels}, -1, -1)"
    elif x.dim() == 4:
        hint = f"{shape[1]} channels where the model takes {channels}"
    else:
        hint = f"{x.dim()} dimensions where the model takes 4"
    raise ValueError(f"{expected}: {hint}")


torch.fx.wrap("_check_input")


def _resnet(
    block: type[BasicBlock | Bottleneck],
    layers: list[int],
    weights: WeightsEnum | None,
    progress: bool,
    *,
    fuse_bn: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> ResNet:
    """Build, load the weights (verified, fp32), fold the BatchNorms (float64), then cast and move."""
    if weights is not None:
        _ovewrite_named_param(kwargs, "num_classes", len(weights.meta["categories"]))
    model = ResNet(block, layers, **kwargs)
    if weights is not None:
        model.load_state_dict(load_weights(weights, progress))
        model.pretrained_source = str(weights)
    if fuse_bn:
        fusion.fuse_bn(model.eval(), dtype)
    return model.to(device=device, dtype=dtype)


def check_resnet(model: object, caller: str) -> ResNet:
    """``model`` if it is one of our ResNets, else a TypeError that says what ``caller`` needs."""
    if not isinstance(model, ResNet):
        raise TypeError(
            f"{caller} expects a cutlass_resnet ResNet (from cutlass_resnet.resnet50() and the other builders), "
            f"got {type(model).__name__}"
        )
    return model


# Builders: torchvision's signatures and weight enums (ResNet50_Weights.IMAGENET1K_V2, "DEFAULT", or the legacy
# pretrained=True; the enums are re-exported, as torchvision's module does), plus fuse_bn, dtype and device.

_BUILDER_ARGS = """

    Args:
        weights: torchvision's pretrained weights (an enum member, its name or ``"DEFAULT"``), or None for a
            random init; downloaded and hash-checked on first use.
        progress: show a progress bar while downloading.
        fuse_bn: fold every BatchNorm into its conv (in float64) and the ReLUs and residual adds into the convs'
            epilogues; the model is then inference-only, in eval mode.
        dtype: cast the model (after the fold, so it rounds once), e.g. ``torch.float16`` for the kernels.
        device: move the model, e.g. ``"cuda"``.
        **kwargs: :class:`ResNet`'s, as torchvision's: ``num_classes``, ``zero_init_residual``, ``groups``,
            ``width_per_group``, ``replace_stride_with_dilation``, ``norm_layer``.
    """


def _documented(fn: Callable[..., ResNet]) -> Callable[..., ResNet]:
    fn.__doc__ = (fn.__doc__ or "") + _BUILDER_ARGS
    return fn


@register_model(ResNet18_Weights)
@handle_legacy_interface(weights=("pretrained", ResNet18_Weights.IMAGENET1K_V1))
@_documented
def resnet18(
    *,
    weights: ResNet18_Weights | str | None = None,
    progress: bool = True,
    fuse_bn: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> ResNet:
    """ResNet-18 from `Deep Residual Learning for Image Recognition <https://arxiv.org/abs/1512.03385>`_."""
    weights = verify_weights(ResNet18_Weights, weights)
    return _resnet(BasicBlock, [2, 2, 2, 2], weights, progress, fuse_bn=fuse_bn, dtype=dtype, device=device, **kwargs)


@register_model(ResNet34_Weights)
@handle_legacy_interface(weights=("pretrained", ResNet34_Weights.IMAGENET1K_V1))
@_documented
def resnet34(
    *,
    weights: ResNet34_Weights | str | None = None,
    progress: bool = True,
    fuse_bn: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> ResNet:
    """ResNet-34 from `Deep Residual Learning for Image Recognition <https://arxiv.org/abs/1512.03385>`_."""
    weights = verify_weights(ResNet34_Weights, weights)
    return _resnet(BasicBlock, [3, 4, 6, 3], weights, progress, fuse_bn=fuse_bn, dtype=dtype, device=device, **kwargs)


@register_model(ResNet50_Weights)
@handle_legacy_interface(weights=("pretrained", ResNet50_Weights.IMAGENET1K_V1))
@_documented
def resnet50(
    *,
    weights: ResNet50_Weights | str | None = None,
    progress: bool = True,
    fuse_bn: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> ResNet:
    """ResNet-50 (V1.5, stride on the 3x3 conv), as torchvision's."""
    weights = verify_weights(ResNet50_Weights, weights)
    return _resnet(Bottleneck, [3, 4, 6, 3], weights, progress, fuse_bn=fuse_bn, dtype=dtype, device=device, **kwargs)


@register_model(ResNet101_Weights)
@handle_legacy_interface(weights=("pretrained", ResNet101_Weights.IMAGENET1K_V1))
@_documented
def resnet101(
    *,
    weights: ResNet101_Weights | str | None = None,
    progress: bool = True,
    fuse_bn: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> ResNet:
    """ResNet-101 (V1.5), as torchvision's."""
    weights = verify_weights(ResNet101_Weights, weights)
    return _resnet(Bottleneck, [3, 4, 23, 3], weights, progress, fuse_bn=fuse_bn, dtype=dtype, device=device, **kwargs)


@register_model(ResNet152_Weights)
@handle_legacy_interface(weights=("pretrained", ResNet152_Weights.IMAGENET1K_V1))
@_documented
def resnet152(
    *,
    weights: ResNet152_Weights | str | None = None,
    progress: bool = True,
    fuse_bn: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> ResNet:
    """ResNet-152 (V1.5), as torchvision's."""
    weights = verify_weights(ResNet152_Weights, weights)
    return _resnet(Bottleneck, [3, 8, 36, 3], weights, progress, fuse_bn=fuse_bn, dtype=dtype, device=device, **kwargs)


@register_model(ResNeXt50_32X4D_Weights)
@handle_legacy_interface(weights=("pretrained", ResNeXt50_32X4D_Weights.IMAGENET1K_V1))
@_documented
def resnext50_32x4d(
    *,
    weights: ResNeXt50_32X4D_Weights | str | None = None,
    progress: bool = True,
    fuse_bn: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> ResNet:
    """ResNeXt-50 32x4d from `Aggregated Residual Transformations <https://arxiv.org/abs/1611.05431>`_."""
    weights = verify_weights(ResNeXt50_32X4D_Weights, weights)
    _ovewrite_named_param(kwargs, "groups", 32)
    _ovewrite_named_param(kwargs, "width_per_group", 4)
    return _resnet(Bottleneck, [3, 4, 6, 3], weights, progress, fuse_bn=fuse_bn, dtype=dtype, device=device, **kwargs)


@register_model(ResNeXt101_32X8D_Weights)
@handle_legacy_interface(weights=("pretrained", ResNeXt101_32X8D_Weights.IMAGENET1K_V1))
@_documented
def resnext101_32x8d(
    *,
    weights: ResNeXt101_32X8D_Weights | str | None = None,
    progress: bool = True,
    fuse_bn: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> ResNet:
    """ResNeXt-101 32x8d from `Aggregated Residual Transformations <https://arxiv.org/abs/1611.05431>`_."""
    weights = verify_weights(ResNeXt101_32X8D_Weights, weights)
    _ovewrite_named_param(kwargs, "groups", 32)
    _ovewrite_named_param(kwargs, "width_per_group", 8)
    return _resnet(Bottleneck, [3, 4, 23, 3], weights, progress, fuse_bn=fuse_bn, dtype=dtype, device=device, **kwargs)


@register_model(ResNeXt101_64X4D_Weights)
@handle_legacy_interface(weights=("pretrained", ResNeXt101_64X4D_Weights.IMAGENET1K_V1))
@_documented
def resnext101_64x4d(
    *,
    weights: ResNeXt101_64X4D_Weights | str | None = None,
    progress: bool = True,
    fuse_bn: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> ResNet:
    """ResNeXt-101 64x4d from `Aggregated Residual Transformations <https://arxiv.org/abs/1611.05431>`_."""
    weights = verify_weights(ResNeXt101_64X4D_Weights, weights)
    _ovewrite_named_param(kwargs, "groups", 64)
    _ovewrite_named_param(kwargs, "width_per_group", 4)
    return _resnet(Bottleneck, [3, 4, 23, 3], weights, progress, fuse_bn=fuse_bn, dtype=dtype, device=device, **kwargs)


@register_model(Wide_ResNet50_2_Weights)
@handle_legacy_interface(weights=("pretrained", Wide_ResNet50_2_Weights.IMAGENET1K_V1))
@_documented
def wide_resnet50_2(
    *,
    weights: Wide_ResNet50_2_Weights | str | None = None,
    progress: bool = True,
    fuse_bn: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> ResNet:
    """Wide ResNet-50-2 from `Wide Residual Networks <https://arxiv.org/abs/1605.07146>`_."""
    weights = verify_weights(Wide_ResNet50_2_Weights, weights)
    _ovewrite_named_param(kwargs, "width_per_group", 128)
    return _resnet(Bottleneck, [3, 4, 6, 3], weights, progress, fuse_bn=fuse_bn, dtype=dtype, device=device, **kwargs)


@register_model(Wide_ResNet101_2_Weights)
@handle_legacy_interface(weights=("pretrained", Wide_ResNet101_2_Weights.IMAGENET1K_V1))
@_documented
def wide_resnet101_2(
    *,
    weights: Wide_ResNet101_2_Weights | str | None = None,
    progress: bool = True,
    fuse_bn: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> ResNet:
    """Wide ResNet-101-2 from `Wide Residual Networks <https://arxiv.org/abs/1605.07146>`_."""
    weights = verify_weights(Wide_ResNet101_2_Weights, weights)
    _ovewrite_named_param(kwargs, "width_per_group", 128)
    return _resnet(Bottleneck, [3, 4, 23, 3], weights, progress, fuse_bn=fuse_bn, dtype=dtype, device=device, **kwargs)
