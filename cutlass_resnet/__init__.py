"""torchvision's ResNet model zoo on CUTLASS implicit-GEMM convolutions with fused epilogues.

>>> from cutlass_resnet import resnet50
>>> model = resnet50(weights="DEFAULT", fuse_bn=True, dtype=torch.float16, device="cuda")
"""

from torchvision.models import Weights, WeightsEnum, get_weight

from . import kernels, nn, ops
from .download import CorruptWeightsError, WeightsUnavailableError
from .fuse import fuse_bn
from .hub import from_pretrained, push_to_hub, save_pretrained
from .kernels import plan
from .loading import load_torchvision_state_dict
from .models import *  # noqa: F403
from .models import __all__ as _models_all

__version__ = "0.1.0"

__all__ = [
    "nn",
    "ops",
    "kernels",
    "plan",
    "fuse_bn",
    "load_torchvision_state_dict",
    "from_pretrained",
    "save_pretrained",
    "push_to_hub",
    "get_weight",
    "Weights",
    "WeightsEnum",
    "CorruptWeightsError",
    "WeightsUnavailableError",
    "__version__",
    *_models_all,
]
