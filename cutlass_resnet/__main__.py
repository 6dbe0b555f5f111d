"""``python -m cutlass_resnet``: the parity check of every model against torchvision."""

import sys

from .selftest import main

sys.exit(main())
