"""Throughput and latency of the fused models against torchvision: ``cutlass-resnet bench`` as a script.

python scripts/bench.py --arch resnet50 --batch-size 1 32 256 --dtype fp16 bf16 --output bench.json
"""

import sys

from cutlass_resnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
