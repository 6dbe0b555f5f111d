"""torchvision's ResNet model zoo on CUTLASS implicit-GEMM convolutions with fused epilogues.

>>> from cutlass_resnet import resnet50, fuse_bn
>>> model = fuse_bn(resnet50().eval())
"""

from . import kernels, nn, ops
from .fuse import fuse_bn
from .kernels import plan
from .loading import load_torchvision_state_dict
from .models import *  # noqa: F403
from .models import __all__ as _models_all

__version__ = "0.1.0"

__all__ = ["nn", "ops", "kernels", "plan", "fuse_bn", "load_torchvision_state_dict", "__version__", *_models_all]
