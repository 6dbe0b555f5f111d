"""``cutlass-resnet export``: torchvision's weights to safetensors folders with model cards, or a model to ONNX."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

from ..models import list_models
from ..pretrained.export import VARIANTS, export, export_onnx
from ..pretrained.load import HUB_PREFIXES
from .common import EXIT_OK, UsageError, check_output_file, check_output_folder, load_model

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", choices=list_models(), metavar="ARCH", help="the model (with torchvision's weights)")
    p.add_argument("arch_given", nargs="?", choices=list_models(), help=argparse.SUPPRESS)  # 0.1.0's `export ARCH`
    p.add_argument(
        "--weights",
        default="DEFAULT",
        help="a name of the arch's torchvision weights (default DEFAULT), or a checkpoint, folder or hf:REPO",
    )
    p.add_argument("--onnx", type=Path, metavar="FILE", help="write the model (BatchNorm folded) as ONNX instead")
    p.add_argument("--image-size", type=int, default=224, help="--onnx: the input's height and width (default 224)")
    p.add_argument("--out", default="weights", type=Path, help="parent folder of the exports (default weights/)")
    p.add_argument("--variant", action="append", choices=list(VARIANTS), help="repeatable; default: all")


def run(args: argparse.Namespace) -> int:
    """Export each variant (or, with --onnx, the ONNX file); print each path written."""
    if args.arch_given is not None:
        if args.arch not in (None, args.arch_given):
            raise UsageError(f"the model is named twice ({args.arch_given} and --arch {args.arch}): give --arch only")
        warnings.warn("`export ARCH` is deprecated: use export --arch ARCH", FutureWarning, stacklevel=2)
        args.arch = args.arch_given
    local = args.weights.startswith(HUB_PREFIXES) or Path(args.weights).exists()
    if args.arch is None and not local:
        raise UsageError("name the model: --arch ARCH (or give --weights a checkpoint, folder or hf:REPO)")
    if not local and ("/" in args.weights or args.weights.endswith((".safetensors", ".pth", ".pt", ".bin"))):
        raise UsageError(f"no such weights file or folder: {args.weights} (hub repos are written hf:OWNER/NAME[@REV])")
    if args.onnx:
        check_output_file(args.onnx, "--onnx")  # before the download
        if args.image_size < 32:
            raise ValueError("--image-size must be at least 32 (the network downsamples 32 times)")
        model, _ = load_model(args.weights, args.arch, True, torch.float32)
        print(export_onnx(model, args.onnx, image_size=args.image_size))
        return EXIT_OK
    check_output_folder(args.out, "--out")  # before the download
    for folder in export(args.arch, args.weights, args.out, args.variant):
        print(folder)
    return EXIT_OK
