"""``cutlass-resnet build``: compile the CUTLASS kernels into the cache ahead of time, for a later process to load."""

from __future__ import annotations

import argparse

from ..ops import build
from .common import EXIT_OK, UsageError

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", nargs="+", help="nvcc archs, e.g. 8.0 9.0a (default: the visible GPUs)")


def run(args: argparse.Namespace) -> int:
    """Build (or find) the library for the archs; print its path."""
    archs = args.arch or build.default_nvcc_archs()
    if not archs:
        raise UsageError("no GPU is visible: name the targets with --arch, e.g. --arch 8.0 9.0a")
    print(build.build(archs, verbose=args.verbose))
    return EXIT_OK
