"""The model registry, as torchvision's: ``list_models``, ``get_model``, ``get_model_weights``."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torchvision.models._api import WeightsEnum

__all__ = [
    "get_model",
    "get_model_builder",
    "get_model_weights",
    "list_models",
    "load_weights",
    "model_name_of",
    "register_model",
    "register_weights_loader",
    "verify_weights",
]

BUILTIN_MODELS: dict[str, tuple[Callable[..., nn.Module], type[WeightsEnum]]] = {}
M = TypeVar("M", bound=Callable[..., nn.Module])
WeightsLoader = Callable[[WeightsEnum, bool], dict[str, Tensor]]


def _torchvision_loader(weights: WeightsEnum, progress: bool) -> dict[str, Tensor]:
    return weights.get_state_dict(progress=progress, check_hash=True)


_weights_loader: list[WeightsLoader] = [_torchvision_loader]


def register_weights_loader(loader: WeightsLoader) -> None:
    """Fetch the builders' ``weights=`` with ``loader(weights, progress)`` instead of torchvision's
    ``weights.get_state_dict``: :mod:`cutlass_resnet.pretrained` installs its verified download here."""
    _weights_loader[0] = loader


def load_weights(weights: WeightsEnum, progress: bool = True) -> dict[str, Tensor]:
    """The state dict of a weights enum member, fetched by the registered loader."""
    return _weights_loader[0](weights, progress)


def register_model(weights: type[WeightsEnum], name: str | None = None) -> Callable[[M], M]:
    """Register a builder under its function name (or ``name``) with the weights enum it accepts."""

    def wrapper(fn: M) -> M:
        key = name or fn.__name__
        if key in BUILTIN_MODELS:
            raise ValueError(f"a model named {key!r} is already registered")
        BUILTIN_MODELS[key] = (fn, weights)
        return fn

    return wrapper


def verify_weights(enum: type[WeightsEnum], weights: WeightsEnum | str | None) -> WeightsEnum | None:
    """torchvision's ``Weights.verify``, with a ValueError naming the choices for an unknown name."""
    try:
        return enum.verify(weights)
    except KeyError:
        raise ValueError(f"unknown weights {weights!r}: {enum.__name__} has {', '.join(enum.__members__)}") from None


def list_models(
    module: ModuleType | None = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
) -> list[str]:
    """Sorted names of the registered models, as torchvision's: those whose builder lives in ``module`` (a
    package of this one, ``cutlass_resnet`` or ``cutlass_resnet.models``), filtered by Unix shell-style patterns."""
    names = {
        n
        for n, (fn, _) in BUILTIN_MODELS.items()
        if module is None or f"{fn.__module__}.".startswith(f"{module.__name__}.")
    }
    if include is not None:
        patterns = [include] if isinstance(include, str) else list(include)
        names = {n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)}
    if exclude is not None:
        patterns = [exclude] if isinstance(exclude, str) else list(exclude)
        names = {n for n in names if not any(fnmatch.fnmatch(n, p) for p in patterns)}
    return sorted(names)


def _entry(name: str) -> tuple[Callable[..., nn.Module], type[WeightsEnum]]:
    try:
        return BUILTIN_MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; cutlass_resnet has {', '.join(list_models())}") from None


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    return _entry(name)[0]


def get_model_weights(name: str | Callable[..., nn.Module]) -> type[WeightsEnum]:
    """The weights enum of a model, by name or builder: ``get_model_weights("resnet50") is ResNet50_Weights``."""
    if callable(name):
        name = name.__name__
    return _entry(name)[1]


def get_model(name: str, **config: Any) -> nn.Module:
    """Build a registered model: ``get_model("resnet50", weights="DEFAULT", fuse_bn=True)``."""
    return get_model_builder(name)(**config)


def _conv_shapes(named: Iterable[tuple[str, Tensor]]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in named if t.dim() == 4}  # the conv weights


def model_name_of(weights: nn.Module | Mapping[str, Tensor]) -> str:
    """The registered name of the architecture of a model or state dict, found by its conv weights' shapes.

    Fused, unfused and int8 forms have the same conv weights, so any is recognised.
    """
    ours = _conv_shapes((weights.state_dict() if isinstance(weights, nn.Module) else weights).items())
    for name in list_models():
        with torch.device("meta"):
            candidate = get_model(name)
        if _conv_shapes(candidate.named_parameters()) == ours:
            return name
    raise ValueError(f"these weights match none of the architectures of cutlass_resnet: {', '.join(list_models())}")
