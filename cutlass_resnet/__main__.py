"""``python -m cutlass_resnet``: the ``cutlass-resnet`` command."""

import sys

from .cli import main

sys.exit(main())
