"""Load torchvision-format state dicts into our models, fused or not."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torch.nn.modules.module import _IncompatibleKeys
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from ..models import ResNet, check_resnet
from ..nn import conv_norm_pairs, fold_bn

__all__ = ["load_torchvision_state_dict"]

#: Prefixes that wrappers add to every key: DataParallel/DDP and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_NORM_KEYS = ("running_mean", "running_var", "weight", "bias")


def _unwrap(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    sd = dict(state_dict)
    while any(k.startswith(WRAPPER_PREFIXES) for k in sd):
        for prefix in WRAPPER_PREFIXES:
            consume_prefix_in_state_dict_if_present(sd, prefix)
    return sd


def _check_shape(key: str, tensor: Tensor, expected: torch.Size) -> None:
    if tensor.shape == expected:
        return
    hint = "is this a state dict for another architecture?"
    if key.startswith("fc."):
        hint = f"the weights have {tensor.shape[0]} classes: build the model with num_classes={tensor.shape[0]}"
    raise ValueError(
        f"state_dict key '{key}' has shape {tuple(tensor.shape)} but the model expects {tuple(expected)}; {hint}"
    )


def _fold_state_dict(model: ResNet, sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Turn torchvision conv + BatchNorm entries into fused conv weight and bias entries."""
    params = dict(model.named_parameters())
    eps = model._norm_layer(1).eps  # the folded norms are gone; a fresh one tells their eps
    folded, missing = {}, []
    for conv, norm, _ in conv_norm_pairs(model):
        keys = [f"{conv}.weight"] + [f"{norm}.{k}" for k in _NORM_KEYS]
        if f"{conv}.bias" in sd and not any(f"{norm}.{k}" in sd for k in _NORM_KEYS):
            continue  # already folded: a fused model's own state dict
        absent = [k for k in keys if k not in sd]
        present = [sd.pop(k) for k in keys if k in sd]
        sd.pop(f"{norm}.num_batches_tracked", None)
        if absent:  # the pair's other entries are used up, not unexpected
            missing += absent
            continue
        weight, mean, var, gamma, beta = present
        _check_shape(keys[0], weight, params[f"{conv}.weight"].shape)
        for key, t in zip(keys[1:], (mean, var, gamma, beta), strict=True):
            _check_shape(key, t, torch.Size([weight.shape[0]]))
        w, b = fold_bn(weight, sd.pop(f"{conv}.bias", None), mean, var, eps, gamma, beta)
        folded[f"{conv}.weight"], folded[f"{conv}.bias"] = w, b
    return {**folded, **sd}, missing


def load_torchvision_state_dict(
    model: ResNet, state_dict: Mapping[str, Tensor], strict: bool = True
) -> _IncompatibleKeys:
    """Load a torchvision-format ResNet state dict into ``model``, unfused or fused.

    Into a fused model the BatchNorm entries are folded on the fly (in float64, rounded once to
    the model's dtype). Keys wrapped by DataParallel (``module.``) or torch.compile
    (``_orig_mod.``) are accepted. A shape mismatch is an error naming the key and both shapes;
    with ``strict=True`` so is a missing or unexpected key. Returns the missing and unexpected
    keys, like :meth:`torch.nn.Module.load_state_dict`.
    """
    check_resnet(model, "load_torchvision_state_dict")
    sd = _unwrap(state_dict)
    missing: list[str] = []
    if model.fused:
        sd, missing = _fold_state_dict(model, sd)
    for key, tensor in model.state_dict().items():  # in the model's order: the first mismatch is named
        if key in sd:
            _check_shape(key, sd[key], tensor.shape)
    result = model.load_state_dict(sd, strict=False)
    missing = list(dict.fromkeys(missing + result.missing_keys))
    if strict and (missing or result.unexpected_keys):
        problems = [f"missing key '{missing[0]}'"] if missing else []
        problems += [f"unexpected key '{result.unexpected_keys[0]}'"] if result.unexpected_keys else []
        raise RuntimeError(
            f"load_torchvision_state_dict: {' and '.join(problems)} ({len(missing)} missing, "
            f"{len(result.unexpected_keys)} unexpected in all); is this a torchvision state dict for "
            f"the same architecture? pass strict=False to load the keys that match"
        )
    return _IncompatibleKeys(missing, result.unexpected_keys)
