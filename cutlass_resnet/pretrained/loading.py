"""Load torchvision-format state dicts into our models, fused or not."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torch.nn.modules.module import _IncompatibleKeys
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from ..models import ResNet, check_resnet
from ..nn import conv_norm_pairs, fold_bn

__all__ = ["StateDictMismatchError", "load_torchvision_state_dict"]

#: Prefixes that wrappers add to every key: DataParallel/DDP and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_NORM_KEYS = ("running_mean", "running_var", "weight", "bias")


class StateDictMismatchError(RuntimeError, ValueError):
    """A state dict that does not fit the model: a RuntimeError, as ``nn.Module.load_state_dict`` raises, and a
    ValueError, as bad input is. Raised before anything is loaded: the model is left as it was."""


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
        f"state_dict key '{key}' has shape {tuple(tensor.shape)} but the model expects {tuple(expected)}; {hint}; "
        f"nothing was loaded"
    )


def _fold_state_dict(model: ResNet, sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Turn torchvision conv + BatchNorm entries into fused conv weight and bias entries."""
    params = dict(model.named_parameters())
    default_eps = model._norm_layer(1).eps  # for convs folded before their eps was recorded
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
        eps = getattr(model.get_submodule(conv), "folded_eps", default_eps)  # the norm's own, kept when it was fused
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
    with ``strict=True`` so is a missing or unexpected key (:class:`StateDictMismatchError`). Everything is
    checked before anything is loaded: an error leaves the model as it was. Returns the missing and
    unexpected keys, like :meth:`torch.nn.Module.load_state_dict`.

    Args:
        model: a ResNet of this package, fused or not.
        state_dict: torchvision's keys and shapes (a torchvision or timm ResNet's state dict).
        strict: whether a missing or unexpected key is an error.
    """
    check_resnet(model, "load_torchvision_state_dict")
    sd = _unwrap(state_dict)
    missing: list[str] = []
    if model.fused:
        sd, missing = _fold_state_dict(model, sd)
    expected = model.state_dict()
    for key, tensor in expected.items():  # in the model's order: the first mismatch is named
        if key in sd:
            _check_shape(key, sd[key], tensor.shape)
    # BatchNorm fills in a missing counter itself (older torchvision checkpoints have none), as load_state_dict does
    absent = [k for k in expected if k not in sd and not k.endswith(".num_batches_tracked")]
    missing = list(dict.fromkeys(missing + absent))
    unexpected = [k for k in sd if k not in expected]
    if strict and (missing or unexpected):
        problems = [f"missing key '{missing[0]}'"] if missing else []
        problems += [f"unexpected key '{unexpected[0]}'"] if unexpected else []
        raise StateDictMismatchError(
            f"load_torchvision_state_dict: {' and '.join(problems)} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected in all); is this a torchvision state dict for "
            f"the same architecture? pass strict=False to load the keys that match; nothing was loaded"
        )
    model.load_state_dict(sd, strict=False)
    return _IncompatibleKeys(missing, unexpected)
