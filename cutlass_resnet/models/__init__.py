"""Model definitions: torchvision's ResNet family on cutlass_resnet.nn.Conv2d."""

from .resnet import *  # noqa: F403
from .resnet import __all__  # noqa: F401
