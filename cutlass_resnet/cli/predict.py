"""``cutlass-resnet predict``: top-k ImageNet classes of images with torchvision's, the hub's or local weights."""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..models import list_models
from ..nn import cuda_graph
from ..ops import build
from ..pretrained.preprocess import eval_transform, labels_of
from .common import DTYPES, EXIT_OK, UsageError, load_model

__all__ = ["add_arguments", "run", "sample_image"]


def sample_image() -> Path:
    """The photo shipped with the package: scikit-image's "Chelsea the cat" (CC0), see data/README.md."""
    return Path(str(resources.files("cutlass_resnet") / "data" / "chelsea.jpg"))


def _open_images(paths: list[Path]) -> list[Any]:
    """Every image decoded to RGB, before any weights are fetched: a bad path fails fast."""
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in paths:
        if not path.is_file():
            raise UsageError(f"no such image: {path}")
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except Image.DecompressionBombError as exc:
            raise UsageError(f"{path} is too large to decode safely ({exc}); resize it first") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise UsageError(f"cannot read {path} as an image: {exc}") from None
    return images


def run(args: argparse.Namespace) -> int:
    """Classify the images; print a table or JSON."""
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is visible (use --device cpu or auto)")
    else:
        device = torch.device(args.device)
    dtype = DTYPES.get(args.dtype) or (torch.float16 if device.type == "cuda" else torch.float32)
    paths = args.images or [sample_image()]
    images = _open_images(paths)
    model, arch = load_model(args.weights, args.arch, args.fuse, dtype)
    model = model.to(device=device)
    transform, labels, classes = eval_transform(model), labels_of(model), model.fc.out_features
    if not 1 <= args.topk <= classes:
        raise UsageError(f"--topk must be between 1 and {classes} (the model's class count), got {args.topk}")
    x = torch.stack([transform(image) for image in images]).to(device=device, dtype=dtype)
    with torch.no_grad():
        run_model = cuda_graph(model, x) if device.type == "cuda" else model  # no per-layer host work on a GPU
        probabilities = torch.softmax(run_model(x).float(), dim=1)
    top = probabilities.topk(args.topk, dim=1)
    if device.type != "cuda":
        kernel_path = "reference convolution (CPU)"
    elif build.loaded():  # a conv no kernel takes still falls back, with its own warning
        kernel_path = "CUTLASS kernels"
    else:
        kernel_path = f"aten's convolution: CUTLASS kernels unavailable ({build.load_error()})"
    info = dict(arch=arch, weights=model.pretrained_source, device=str(device), dtype=str(dtype)[6:], fused=model.fused)
    results = [
        dict(
            image=str(path),
            top=[
                dict(index=int(i), label=labels[i] if labels else f"class {int(i)}", probability=float(p))
                for p, i in zip(top.values[n], top.indices[n], strict=True)
            ],
        )
        for n, path in enumerate(paths)
    ]
    if args.json:
        print(json.dumps(dict(model=info, predictions=results), indent=1))
        return EXIT_OK
    form = f"{'fused ' if model.fused else ''}{info['dtype']}"
    print(f"{arch} ({info['weights']}), {form} on {device}, {kernel_path}")
    for result in results:
        print(result["image"])
        for rank, entry in enumerate(result["top"], 1):
            print(f"  {rank:>2}. {entry['probability']:7.2%}  {entry['label']}")
    return EXIT_OK


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="*", type=Path, metavar="IMAGE", help="image files (default: the sample photo)")
    p.add_argument("--arch", choices=list_models(), help="default: resnet50, or what the weights file says")
    p.add_argument(
        "--weights",
        default="DEFAULT",
        help="DEFAULT, a torchvision weights name, a file or folder, or hf:REPO[@REV] (or hf-hub:REPO[@REV])",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--dtype", choices=["auto", *DTYPES], default="auto", help="auto: fp16 on a GPU, fp32 on the CPU")
    p.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=True, help="fold BatchNorm (default)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
