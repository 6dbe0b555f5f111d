"""Export torchvision's ResNet weights to safetensors with model cards (see cutlass_resnet.export)."""

import sys

from cutlass_resnet.export import main

if __name__ == "__main__":
    sys.exit(main())
