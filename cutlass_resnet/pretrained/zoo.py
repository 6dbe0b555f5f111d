"""Any classification model by name, on the op: this package's builders, torchvision's classification models
(``regnet_y_400mf``) and timm's (``timm:resnet50d``, ``timm:hf-hub:REPO``), the last two converted with
:func:`cutlass_resnet.convert`. Weights come as each project fetches them: torchvision's files through this
package's verified download, timm's through timm's own ``pretrained`` machinery (the Hugging Face hub)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..models import get_model, list_models, verify_weights
from ..nn import convert
from .download import CorruptWeightsError, WeightsUnavailableError, _load, load_weights
from .load import HUB_PREFIXES, from_pretrained
from .loading import _unwrap

__all__ = ["TIMM_PREFIX", "create_model", "torchvision_models"]

TIMM_PREFIX = "timm:"


def torchvision_models() -> list[str]:
    """torchvision's classification models (the names ``torchvision.models.get_model`` takes)."""
    return torchvision.models.list_models(module=torchvision.models)


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except (SafetensorError, OSError) as exc:
            raise CorruptWeightsError(f"{path} cannot be read as safetensors: {exc}") from exc
    return _unwrap(_load(path, verified=False))


def _classes(state_dict: dict[str, torch.Tensor]) -> dict[str, int]:
    """``num_classes`` for the builder: the rows of the checkpoint's last linear weight (its classifier)."""
    linear = [v for k, v in state_dict.items() if k.endswith(".weight") and v.dim() == 2]
    return {"num_classes": linear[-1].shape[0]} if linear else {}


def _timm(name: str, weights: str | os.PathLike[str] | None) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ValueError(f"{TIMM_PREFIX}{name} needs timm: pip install timm") from None
    if not name.startswith("hf-hub:") and not timm.is_model(name.split(".")[0]):
        raise ValueError(f"timm has no model {name!r} (timm.list_models() names them; or hf-hub:REPO)")
    if weights is None or str(weights) == "DEFAULT":
        try:
            model = timm.create_model(name, pretrained=weights is not None)
        except OSError as exc:  # huggingface_hub's errors: offline, not found, connection
            raise WeightsUnavailableError(
                f"timm could not fetch the weights of {name}: {exc} (a local file: --weights PATH)"
            ) from exc
        model.pretrained_source = f"timm:{name}" if weights is not None else None
        return model
    path = Path(weights)
    if not path.is_file():
        raise ValueError(f"weights {str(weights)!r} for {TIMM_PREFIX}{name}: DEFAULT (timm's) or a weights file")
    state_dict = _state_dict(path)
    model = timm.create_model(name, pretrained=False, **_classes(state_dict))
    model.load_state_dict(state_dict)
    model.pretrained_source = str(path)
    return model


def _torchvision(name: str, weights: str | os.PathLike[str] | None) -> nn.Module:
    if weights is not None and Path(weights).is_file():
        state_dict = _state_dict(Path(weights))
        model = torchvision.models.get_model(name, **_classes(state_dict))
        model.load_state_dict(state_dict)
        model.pretrained_source = str(weights)
        return model
    member = verify_weights(torchvision.models.get_model_weights(name), weights) if weights is not None else None
    model = torchvision.models.get_model(name, num_classes=len(member.meta["categories"]) if member else 1000)
    if member is not None:
        model.load_state_dict(load_weights(member))
    model.pretrained_source = str(member) if member is not None else None
    return model


def create_model(
    arch: str,
    weights: str | os.PathLike[str] | None = None,
    *,
    fuse_bn: bool = True,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """The model ``arch`` names, in eval mode, its convs on the op.

    Args:
        arch: this package's builders (``resnet50``), torchvision's classification models (``regnet_y_400mf``),
            or timm's as ``timm:NAME`` (``timm:resnet50d``, ``timm:resnet50.a1_in1k``, ``timm:hf-hub:REPO``;
            needs timm).
        weights: None for random weights; ``DEFAULT`` (or a torchvision weights name) for the model's pretrained
            weights; or a weights file (``.safetensors``, ``.pth``); for this package's models also a folder or a
            hub repo (``hf:OWNER/NAME``), as :func:`~cutlass_resnet.from_pretrained` reads them.
        fuse_bn: fold BatchNorm into the convs, and ReLU and residual adds into their epilogues.
        dtype: the model's dtype (folded weights rounded once to it).
    """
    if arch in list_models():
        if weights is not None and (str(weights).startswith(HUB_PREFIXES) or Path(weights).exists()):
            return from_pretrained(weights, arch=arch, fuse_bn=fuse_bn, dtype=dtype)
        model = get_model(arch, weights=None if weights is None else str(weights), fuse_bn=fuse_bn, dtype=dtype)
        return model.eval()
    if arch.startswith(TIMM_PREFIX):
        model = _timm(arch[len(TIMM_PREFIX) :], weights)
    elif arch in torchvision_models():
        model = _torchvision(arch, weights)
    else:
        raise ValueError(
            f"unknown model {arch!r}: cutlass_resnet's ({', '.join(list_models())}), torchvision's classification "
            "models (torchvision.models.list_models(module=torchvision.models)), or timm:NAME"
        )
    source = model.pretrained_source
    model = convert(model.eval(), fuse_bn=fuse_bn, dtype=dtype)
    model.pretrained_source, model.fused = source, fuse_bn
    return model
