"""What a model's files say about it: the file names, the torchvision weights it came from, timm's
``pretrained_cfg`` (its preprocessing), and the one schema a ``config.json`` (ours or timm's) is checked by, once,
before any weights or images are read."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import torchvision
from torchvision.models import WeightsEnum
from torchvision.transforms import InterpolationMode

from ..models import ResNet, get_model_weights, model_name_of
from .download import CorruptWeightsError

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "CONFIG_NAME",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRETRAINED_CFG_FIELDS",
    "TIMM_TAGS",
    "PICKLE_WEIGHTS_NAME",
    "WEIGHTS_NAME",
    "check_config",
    "pretrained_cfg_of",
    "torchvision_weights_of",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
#: What timm's ``save_for_hf`` and transformers write without safetensors: a tensors-only torch checkpoint.
PICKLE_WEIGHTS_NAME = "pytorch_model.bin"
#: Checkpoints read with ``torch.load(weights_only=True)``: torchvision's, and timm's ``pytorch_model.bin``.
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin")
#: timm's tags for torchvision's weights: ``timm/resnet50.tv2_in1k`` holds ``ResNet50_Weights.IMAGENET1K_V2``.
TIMM_TAGS = {"IMAGENET1K_V1": "tv_in1k", "IMAGENET1K_V2": "tv2_in1k"}


def torchvision_weights_of(model: ResNet) -> WeightsEnum | None:
    """The torchvision weights a model's weights come from, when its ``pretrained_source`` says
    (``ResNet50_Weights.IMAGENET1K_V2``, or a timm repo such as ``hf:timm/resnet50.tv2_in1k@main``)."""
    source = getattr(model, "pretrained_source", None) or ""
    try:
        enum = get_model_weights(model_name_of(model))
    except ValueError:  # not one of ours: a converted torchvision model names its weights in full
        try:
            return torchvision.models.get_weight(source) if "_Weights." in source else None
        except (KeyError, ValueError):
            return None
    if source.startswith(f"{enum.__name__}."):
        return enum.__members__.get(source.split(".", 1)[1])
    tag = source.split("@")[0].rsplit(".", 1)[-1]
    return next((enum[name] for name, t in TIMM_TAGS.items() if t == tag and name in enum.__members__), None)


#: ImageNet's normalisation and torchvision's V1 evaluation transform: what a model of unknown origin gets.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: The fields of timm's PretrainedCfg this package writes or reads (timm refuses unknown ones).
PRETRAINED_CFG_FIELDS = (
    "tag", "custom_load", "input_size", "test_input_size", "fixed_input_size", "interpolation", "crop_pct",
    "test_crop_pct", "crop_mode", "mean", "std", "num_classes", "label_names", "pool_size", "first_conv",
    "classifier", "license", "origin_url",
)  # fmt: skip


def pretrained_cfg_of(model: ResNet) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` of ``model``: the one it was loaded with, else its torchvision weights'
    evaluation transform (else torchvision's V1 one), and where its stem and classifier are."""
    cfg = {k: v for k, v in (getattr(model, "pretrained_cfg", None) or {}).items() if k in PRETRAINED_CFG_FIELDS}
    if not cfg:
        member = torchvision_weights_of(model)
        crop, resize, interpolation, mean, std = 224, 256, "bilinear", IMAGENET_MEAN, IMAGENET_STD
        if member is not None:
            t = member.transforms()
            crop, resize, interpolation = t.crop_size[0], t.resize_size[0], t.interpolation.value
            mean, std = tuple(t.mean), tuple(t.std)
            cfg = {
                "tag": TIMM_TAGS.get(member.name, member.name.lower()),
                "origin_url": "https://github.com/pytorch/vision",
            }
        cfg.update(
            input_size=[3, crop, crop], interpolation=interpolation, crop_pct=round(crop / resize, 4),
            crop_mode="center", mean=list(mean), std=list(std), license="bsd-3-clause",
        )  # fmt: skip
    cfg.update(num_classes=model.fc.out_features, first_conv="conv1", classifier="fc")
    return cfg


def _whole(low: int, high: int) -> tuple[Callable[[Any], bool], str]:
    return lambda v: type(v) is int and low <= v <= high, f"a whole number from {low} to {high}"


def _of(*kinds: type) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, kinds) and (bool in kinds) == isinstance(v, bool)


def _numbers(count: int, positive: bool) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        return (
            isinstance(v, list)
            and len(v) == count
            and all(_of(int, float)(x) and math.isfinite(x) and (x > 0 or not positive) for x in v)
        )

    return check


def _input_size(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 3 and v[0] == 3 and all(type(x) is int and 1 <= x <= 4096 for x in v[1:])


_CROP = (lambda v: _of(int, float)(v) and 0 < v <= 1, "a number above 0, at most 1")
_INPUT_SIZE = (_input_size, "[3, height, width], height and width from 1 to 4096")

#: What a config's keys must hold, where present: (check, what to say). One schema for config.json (ours and
#: timm's) and the pretrained_cfg in it, checked once, before any weights are read or any image is.
_CONFIG_SCHEMA: dict[str, tuple[Callable[[Any], bool], str]] = {
    "architecture": (_of(str), "a model name"),
    "num_classes": _whole(1, 1_000_000),
    "fused": (_of(bool), "true or false"),
    "quantization": (_of(dict), "an object (how the int8 model was calibrated)"),
    "dtype": (_of(str), "a dtype name"),
    "source": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "sha256": (_of(dict), "an object of file names and sha256 hex digests"),
    "num_features": _whole(1, 1_000_000),
    "pretrained_cfg": (_of(dict), "an object (timm's pretrained_cfg)"),
}
_PRETRAINED_CFG_SCHEMA: dict[str, tuple[Callable[[Any], bool], str]] = {
    "input_size": _INPUT_SIZE,
    "test_input_size": _INPUT_SIZE,
    "crop_pct": _CROP,
    "test_crop_pct": _CROP,
    "mean": (_numbers(3, positive=False), "three numbers, one a channel"),
    "std": (_numbers(3, positive=True), "three numbers above 0, one a channel"),
    "interpolation": (lambda v: v in {m.value for m in InterpolationMode}, "an interpolation such as 'bilinear'"),
    "crop_mode": (lambda v: v in ("center", "squash", "border"), "'center', 'squash' or 'border'"),
    "label_names": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of names"),
}


def check_config(config: object, where: str) -> dict[str, Any]:
    """``config`` if it is a config.json this package can read (ours or timm's), else an error naming the key and
    its value: types and ranges of the keys it uses, its ``pretrained_cfg`` included."""
    if not isinstance(config, dict):
        raise CorruptWeightsError(f"{where} holds {type(config).__name__}, not a JSON object")
    checks = [(key, config, rule) for key, rule in _CONFIG_SCHEMA.items()]
    if isinstance(config.get("pretrained_cfg"), dict):
        checks += [(f"pretrained_cfg.{k}", config["pretrained_cfg"], r) for k, r in _PRETRAINED_CFG_SCHEMA.items()]
    for name, holder, (valid, what) in checks:
        key = name.rsplit(".", 1)[-1]
        if key in holder and holder[key] is not None and not valid(holder[key]):
            raise CorruptWeightsError(f"{where}: {name!r} must be {what}, got {_shown(holder[key])}")
    for file, digest in config.get("sha256", {}).items():
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise CorruptWeightsError(f"{where}: sha256[{file!r}] must be a sha256 hex digest, got {digest!r}")
    return config


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
