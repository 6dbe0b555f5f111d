"""``cutlass-resnet plan ARCH``: what every conv of a model would run on a GPU (kernel, or why aten's convolution
runs it), the share of the conv FLOPs on CUTLASS kernels and the time model's estimate; no weights, no GPU."""

from __future__ import annotations

import argparse
import json

import torch

from ..nn import plan
from ..ops import build
from ..pretrained.zoo import create_model
from .common import DTYPES, EXIT_OK, UsageError, gpu_capability

__all__ = ["add_arguments", "run"]


def _shapes_only(arch: str, dtype: torch.dtype) -> torch.nn.Module:
    """The model with random weights, fused: on the meta device (no memory, no init time) where it builds there."""
    try:
        with torch.device("meta"):
            return create_model(arch, fuse_bn=True, dtype=dtype)
    except (NotImplementedError, RuntimeError):  # a builder that computes with tensors (RegNet's widths)
        return create_model(arch, fuse_bn=True, dtype=dtype)


def run(args: argparse.Namespace) -> int:
    """Print the plan of one model as a table, or as JSON."""
    if args.batch_size < 1 or args.image_size < 1:
        raise UsageError("--batch-size and --image-size must be >= 1")
    if (args.model is None) == (args.arch is None):
        raise UsageError("name one model: plan ARCH or plan --arch ARCH")
    args.arch = args.arch or args.model
    capability = gpu_capability(args.gpu_arch)
    dtype = torch.int8 if args.dtype == "int8" else DTYPES[args.dtype]
    model = _shapes_only(args.arch, torch.float16 if dtype == torch.int8 else dtype)
    entries = plan(model, (args.batch_size, 3, args.image_size, args.image_size), dtype, capability)
    on_kernels = sum(e.choice.kernel is not None for e in entries)
    summary = {
        "arch": args.arch,
        "gpu_arch": build.nvcc_target(capability),
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "dtype": args.dtype,
        "convs": len(entries),
        "convs_on_kernels": on_kernels,
        "kernel_share": entries.kernel_share,
        "estimate_us": entries.estimate_us,
        "images_per_s": entries.images_per_s,
    }
    if args.json:
        rows = [
            {
                "module": e.module,
                "problem": str(e.problem),
                "flops": e.problem.flops,
                "kernel": e.choice.kernel,
                "reason": e.choice.reason,
                "residual": e.residual,
                "estimate_us": e.estimate_us,
            }
            for e in entries
        ]
        print(json.dumps({**summary, "entries": rows}, indent=1))
        return EXIT_OK
    print(
        f"{args.arch}: batch {args.batch_size} at {args.image_size}x{args.image_size}, {args.dtype} on "
        f"{summary['gpu_arch']} (the time model's estimates; nothing runs)"
    )
    for e in entries:
        print(f"  {e}")
    speed = ""
    if entries.estimate_us:
        speed = f"; estimate {entries.estimate_us / 1000:.3f} ms, {entries.images_per_s:,.0f} img/s (convs alone)"
    share = f"{entries.kernel_share:.1%} of the conv FLOPs"
    print(f"{len(entries)} convs, {on_kernels} on CUTLASS kernels: {share}{speed}")
    return EXIT_OK


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = "cutlass_resnet's or torchvision's classification model name, or timm:NAME (built without weights)"
    p.add_argument("model", nargs="?", metavar="ARCH", help=f"the model: {what}")
    p.add_argument("--arch", help=f"the model, as ARCH: {what}")
    p.add_argument("--gpu-arch", help="the GPU to plan for, e.g. 8.0 or 9.0 (default: the visible one, or 8.0)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward (default 1)")
    p.add_argument("--image-size", type=int, default=224, help="input height and width (default 224)")
    p.add_argument(
        "--dtype",
        choices=["fp16", "bf16", "int8"],
        default="fp16",
        help="the kernels' dtype (default fp16); int8: the int8 kernels (quantized convs)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
