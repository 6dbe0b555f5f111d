"""Pretrained weights: torchvision's files (verified downloads), the Hugging Face hub, state-dict loading, export.

Importing it makes the builders' ``weights=`` fetch through :func:`download.load_weights`, which
checks every cached file's hash (the models layer itself fetches nothing).
"""

from ..models import register_weights_loader
from .download import CorruptWeightsError, WeightsUnavailableError, load_weights
from .export import export, export_onnx
from .load import from_pretrained
from .loading import StateDictMismatchError, load_torchvision_state_dict
from .save import push_to_hub, save_pretrained
from .zoo import create_model

register_weights_loader(load_weights)

__all__ = [
    "CorruptWeightsError",
    "StateDictMismatchError",
    "WeightsUnavailableError",
    "create_model",
    "export",
    "export_onnx",
    "from_pretrained",
    "load_torchvision_state_dict",
    "push_to_hub",
    "save_pretrained",
]
