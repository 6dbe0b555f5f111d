"""The op ``cutlass_resnet::conv2d_fprop`` and everything under it: kernel choice, dispatch, self-check, build.

Importing this package registers the op with its CPU (reference), fake and autograd
implementations, the CUDA implementation that runs the CUTLASS kernels (``csrc/``), and its ONNX translations.
"""

from . import onnx  # noqa: F401 - registers the op's ONNX translations
from .conv import SUPPORTED_DTYPES, accumulator_dtype, conv2d_fprop, output_size, reference_conv2d_fprop
from .dispatch import dry_run, emulate, emulating  # importing dispatch registers the kernel implementation

__all__ = [
    "SUPPORTED_DTYPES",
    "accumulator_dtype",
    "conv2d_fprop",
    "dry_run",
    "emulate",
    "emulating",
    "output_size",
    "reference_conv2d_fprop",
]
