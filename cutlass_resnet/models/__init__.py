"""Model definitions: torchvision's ResNet family on cutlass_resnet.nn.Conv2d, and their registry."""

from ._api import (
    get_model,
    get_model_builder,
    get_model_weights,
    list_models,
    model_name_of,
    register_model,
    verify_weights,
)
from ._api import (
    load_weights as load_weights,
)
from ._api import (
    register_weights_loader as register_weights_loader,
)
from .quantize import is_quantized, quantize
from .resnet import *  # noqa: F403
from .resnet import __all__ as _resnet_all
from .resnet import check_resnet as check_resnet

# check_resnet, load_weights and register_weights_loader serve the layers above, not users.
__all__ = [
    "get_model",
    "get_model_builder",
    "get_model_weights",
    "is_quantized",
    "list_models",
    "model_name_of",
    "quantize",
    "register_model",
    "verify_weights",
    *_resnet_all,
]
