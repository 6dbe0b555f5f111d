"""What the commands share: exit codes, the dtype names, the errors that map to exit codes."""

from __future__ import annotations

import torch

__all__ = ["DTYPES", "EXIT_FAILED", "EXIT_NO_GPU", "EXIT_OK", "EXIT_USAGE", "EXIT_WEIGHTS", "NoGPUError", "UsageError"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_WEIGHTS, EXIT_NO_GPU = 0, 1, 2, 3, 4
#: The dtypes by their command-line names.
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class UsageError(Exception):
    """Bad input from the command line: a missing file, an impossible value."""


class NoGPUError(RuntimeError):
    """A GPU command was asked for and no CUDA GPU is visible."""
