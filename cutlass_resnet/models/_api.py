"""The model registry, as torchvision's: ``list_models``, ``get_model``, ``get_model_weights``."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from torch import nn
from torchvision.models._api import WeightsEnum

__all__ = ["get_model", "get_model_builder", "get_model_weights", "list_models", "register_model", "verify_weights"]

BUILTIN_MODELS: dict[str, tuple[Callable[..., nn.Module], type[WeightsEnum]]] = {}
M = TypeVar("M", bound=Callable[..., nn.Module])


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


def list_models(include: str | Iterable[str] | None = None, exclude: str | Iterable[str] | None = None) -> list[str]:
    """Sorted names of the registered models, filtered by Unix shell-style patterns like torchvision's."""
    names = set(BUILTIN_MODELS)
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
