"""``cutlass-resnet build``: compile the CUTLASS kernels into the cache ahead of time, for a later process to load."""

from __future__ import annotations

import argparse

from ..ops import build, library
from .common import EXIT_OK, DeprecatedAlias, UsageError

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gpu-arch", nargs="+", metavar="TARGET", help="nvcc targets, e.g. 8.0 9.0a (default: the visible GPUs)"
    )
    new = "--gpu-arch (--arch names a model)"
    p.add_argument("--arch", nargs="+", action=DeprecatedAlias, dest="gpu_arch", new=new)


def run(args: argparse.Namespace) -> int:
    """Build (or find) the library for the nvcc targets; print its path."""
    targets = build.parse_targets(" ".join(args.gpu_arch)) if args.gpu_arch else library.default_targets()
    build.check_targets(targets)  # before any lock or compiler
    if not targets:
        raise UsageError("no GPU is visible: name the nvcc targets with --gpu-arch, e.g. --gpu-arch 8.0 9.0a")
    print(build.build(targets, verbose=args.verbose))
    return EXIT_OK
