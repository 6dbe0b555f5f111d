"""torchvision's ResNet weights to safetensors with model cards: ``cutlass-resnet export`` as a script.

python scripts/export_weights.py --arch resnet50 --weights IMAGENET1K_V2 --out weights
"""

import sys

from cutlass_resnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
