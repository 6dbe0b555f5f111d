"""A model's own evaluation preprocessing and labels: from timm's ``pretrained_cfg``, torchvision's weights enum,
or torchvision's V1 defaults."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor, nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification

from ..models import ResNet, get_model_weights
from .config import IMAGENET_MEAN, IMAGENET_STD, torchvision_weights_of

__all__ = ["eval_transform", "labels_of", "num_classes_of"]


def _from_pretrained_cfg(cfg: dict) -> Callable[..., Tensor]:
    """timm's evaluation transform for ``cfg``: resize to size / crop_pct, center crop, normalize (test size first,
    as for evaluation)."""
    size = (cfg.get("test_input_size") or cfg.get("input_size") or [3, 224, 224])[-1]
    crop_pct = cfg.get("test_crop_pct") or cfg.get("crop_pct") or 0.875
    try:
        interpolation = InterpolationMode(cfg.get("interpolation") or "bilinear")
    except ValueError:
        raise ValueError(f"pretrained_cfg: unknown interpolation {cfg.get('interpolation')!r}") from None
    mean, std = cfg.get("mean") or IMAGENET_MEAN, cfg.get("std") or IMAGENET_STD
    # "squash": the whole image, stretched to the crop; else resized to size / crop_pct and center-cropped
    resize = [size, size] if cfg.get("crop_mode") == "squash" else math.floor(size / crop_pct)
    return ImageClassification(crop_size=size, resize_size=resize, mean=mean, std=std, interpolation=interpolation)


def num_classes_of(model: nn.Module) -> int:
    """The classes a classifier predicts: its ``num_classes`` (timm's), else its last ``nn.Linear``'s outputs."""
    classes = getattr(model, "num_classes", None)
    if isinstance(classes, int) and classes > 0:
        return classes
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier: it is not an image classifier")
    return linear[-1].out_features


def eval_transform(model: ResNet) -> Callable[..., Tensor]:
    """What an image goes through before ``model``: its weights' file's ``pretrained_cfg`` (timm's repos, our
    saves), else its torchvision weights' transforms, else torchvision's V1 preprocessing."""
    if getattr(model, "pretrained_cfg", None):
        return _from_pretrained_cfg(model.pretrained_cfg)
    member = torchvision_weights_of(model)
    return member.transforms() if member is not None else ImageClassification(crop_size=224)


def labels_of(model: ResNet) -> list[str] | None:
    """The class names: the file's ``label_names``, its torchvision weights' categories, or ImageNet's when the
    model has 1000 classes; None otherwise."""
    classes = num_classes_of(model)
    names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    if names and len(names) == classes:
        return list(names)
    member = torchvision_weights_of(model)
    if member is not None:
        return list(member.meta["categories"])
    return list(get_model_weights("resnet50").IMAGENET1K_V1.meta["categories"]) if classes == 1000 else None
