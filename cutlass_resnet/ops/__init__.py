"""The op ``cutlass_resnet::conv2d_fprop`` and everything under it: kernel choice, dispatch, self-check, build.

Importing this package registers the op with its CPU (reference), fake and autograd
implementations, the CUDA implementation that runs the CUTLASS kernels (``csrc/``), and its ONNX translations;
and the INT8 op ``conv2d_fprop_int8`` (int8.py).
"""

from . import onnx  # noqa: F401 - registers the op's ONNX translations
from .conv import SUPPORTED_DTYPES, accumulator_dtype, conv2d_fprop, output_size, reference_conv2d_fprop
from .dispatch import dry_run, emulate, emulating  # importing dispatch registers the kernel implementation
from .int8 import conv2d_fprop_int8, dequantize, epilogue_constants, quantize_per_tensor, reference_conv2d_fprop_int8

__all__ = [
    "SUPPORTED_DTYPES",
    "accumulator_dtype",
    "conv2d_fprop",
    "conv2d_fprop_int8",
    "dequantize",
    "dry_run",
    "emulate",
    "emulating",
    "epilogue_constants",
    "output_size",
    "quantize_per_tensor",
    "reference_conv2d_fprop",
    "reference_conv2d_fprop_int8",
]
