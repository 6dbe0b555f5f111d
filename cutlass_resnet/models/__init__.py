"""Model definitions: torchvision's ResNet family on cutlass_resnet.nn.Conv2d, and their registry."""

from ._api import get_model, get_model_builder, get_model_weights, list_models, register_model, verify_weights
from .resnet import *  # noqa: F403
from .resnet import __all__ as _resnet_all

__all__ = [
    "get_model",
    "get_model_builder",
    "get_model_weights",
    "list_models",
    "register_model",
    "verify_weights",
    *_resnet_all,
]
