"""``cutlass-resnet export``: torchvision's weights to safetensors folders with model cards."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..models import list_models
from ..pretrained.export import VARIANTS, export
from .common import EXIT_OK, check_output_folder

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", choices=list_models())
    p.add_argument("--weights", default="DEFAULT", help="a name of the arch's torchvision weights (default DEFAULT)")
    p.add_argument("--out", default="weights", type=Path, help="parent folder of the exports (default weights/)")
    p.add_argument("--variant", action="append", choices=list(VARIANTS), help="repeatable; default: all")


def run(args: argparse.Namespace) -> int:
    """Export each variant; print each folder written."""
    check_output_folder(args.out, "--out")  # before the download
    for folder in export(args.arch, args.weights, args.out, args.variant):
        print(folder)
    return EXIT_OK
