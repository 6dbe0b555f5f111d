"""The ``cutlass-resnet`` command (also ``python -m cutlass_resnet``): predict, bench, selftest, info, export.

Errors print one line (``--verbose`` adds the traceback). Exit codes: 0 success; 1 a check
failed, or an unexpected error; 2 bad arguments or an unreadable input file; 3 weights that
cannot be had (offline, not found) or are corrupt; 4 the command needs a GPU and none is visible.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
import torchvision

from . import __version__, benchmark, build, kernels, selftest
from .download import CorruptWeightsError, WeightsUnavailableError, load_checkpoint
from .export import VARIANTS, export
from .fuse import fuse_bn
from .hub import arch_of, from_pretrained
from .loading import load_torchvision_state_dict
from .models import ResNet, get_model, get_model_weights, list_models

__all__ = ["EXIT_FAILED", "EXIT_NO_GPU", "EXIT_OK", "EXIT_USAGE", "EXIT_WEIGHTS", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_WEIGHTS, EXIT_NO_GPU = 0, 1, 2, 3, 4
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_TIMM_TAGS = {"tv_in1k": "IMAGENET1K_V1", "tv2_in1k": "IMAGENET1K_V2"}


class UsageError(Exception):
    """Bad input from the command line: a missing file, an impossible value."""


def sample_image() -> Path:
    """The photo shipped with the package: scikit-image's "Chelsea the cat" (CC0), see data/README.md."""
    return Path(str(resources.files("cutlass_resnet") / "data" / "chelsea.jpg"))


# ---------------------------------------------------------------------------------------------- predict


def _weights_enum(model: ResNet, arch: str) -> Any:
    """The torchvision weights enum member a model's weights come from, if known (for transforms and labels)."""
    source = model.pretrained_source or ""
    enum = get_model_weights(arch)
    if source.startswith(f"{enum.__name__}."):
        return enum.__members__.get(source.split(".", 1)[1])
    tag = source.split("@")[0].rsplit(".", 1)[-1]  # hf:timm/resnet50.tv2_in1k@main -> tv2_in1k
    return enum.__members__.get(_TIMM_TAGS.get(tag, ""))


def _load_model(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> tuple[ResNet, str]:
    weights, arch = args.weights, args.arch
    fuse = args.fuse
    if weights.startswith("hf:"):
        repo, _, revision = weights[3:].partition("@")
        model = from_pretrained(repo, revision=revision or None, arch=arch, fuse_bn=fuse, dtype=dtype)
    elif Path(weights).exists():
        if Path(weights).suffix in (".pth", ".pt"):  # a torchvision checkpoint: tensors only, never code
            state_dict = load_checkpoint(weights)
            if "fc.weight" not in state_dict:
                raise UsageError(f"{weights} is not a ResNet state dict: it has no 'fc.weight'")
            model = get_model(arch or "resnet50", num_classes=state_dict["fc.weight"].shape[0]).eval()
            load_torchvision_state_dict(model, state_dict)
            model.pretrained_source = weights
            if fuse:
                fuse_bn(model, dtype)
        else:
            model = from_pretrained(weights, arch=arch, fuse_bn=fuse, dtype=dtype)
    elif "/" in weights or weights.endswith((".safetensors", ".pth", ".pt")):
        raise UsageError(f"no such weights file or folder: {weights} (hub repos are written hf:OWNER/NAME)")
    else:
        model = get_model(arch or "resnet50", weights=weights, fuse_bn=fuse, dtype=dtype)
    return model.to(device=device, dtype=dtype).eval(), arch or arch_of(model)


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
        except (UnidentifiedImageError, OSError) as exc:
            raise UsageError(f"cannot read {path} as an image: {exc}") from None
    return images


def _predict(args: argparse.Namespace) -> int:
    from torchvision.transforms._presets import ImageClassification

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is visible (use --device cpu or auto)")
    else:
        device = torch.device(args.device)
    dtype = DTYPES.get(args.dtype) or (torch.float16 if device.type == "cuda" else torch.float32)
    paths = args.images or [sample_image()]
    images = _open_images(paths)
    model, arch = _load_model(args, device, dtype)
    member = _weights_enum(model, arch)
    classes = model.fc.out_features
    if member is not None:
        transform, labels = member.transforms(), member.meta["categories"]
    else:  # torchvision's V1 preprocessing, ImageNet's labels when the class count says ImageNet
        transform = ImageClassification(crop_size=224)
        labels = get_model_weights("resnet50").IMAGENET1K_V1.meta["categories"] if classes == 1000 else None
    if not 1 <= args.topk <= classes:
        raise UsageError(f"--topk must be between 1 and {classes} (the model's class count), got {args.topk}")
    x = torch.stack([transform(image) for image in images]).to(device=device, dtype=dtype)
    with torch.no_grad():
        probabilities = torch.softmax(model(x).float(), dim=1)
    top = probabilities.topk(args.topk, dim=1)
    if device.type != "cuda":
        kernel_path = "reference convolution (CPU)"
    elif build.loaded():  # a conv no kernel takes still falls back, with its own warning
        kernel_path = "CUTLASS kernels"
    else:
        kernel_path = f"reference convolution: CUTLASS kernels unavailable ({build.load_error()})"
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


# ------------------------------------------------------------------------------------------------- info


def _info_data() -> dict[str, Any]:
    def package(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    gpus = [
        dict(name=torch.cuda.get_device_name(i), arch=build.arch_of(torch.cuda.get_device_capability(i)))
        for i in range(torch.cuda.device_count())
    ]
    prebuilt = json.loads(build.PREBUILT_INFO.read_text()) if build.PREBUILT_INFO.exists() else None
    cached = sorted(str(p) for p in (build.cache_root() / "kernels").glob("*/cutlass_resnet_C.so"))
    archs = build.default_archs()
    kernel_names: list[str] = []
    if build.find_library(archs) is not None and build.load(archs):  # already compiled: loading builds nothing
        kernel_names = [name for name, _ in build.kernel_table()]
    verdicts = kernels.verdicts_path()
    records = json.loads(verdicts.read_text()) if verdicts.exists() else {}
    from huggingface_hub import constants

    return {
        "cutlass_resnet": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torchvision": torchvision.__version__,
        "cutlass": package("nvidia-cutlass"),
        "huggingface_hub": package("huggingface_hub"),
        "safetensors": package("safetensors"),
        "cuda_toolkit": build.cuda_home(),
        "gpus": gpus,
        "kernel_cache": str(build.cache_root() / "kernels"),
        "prebuilt_kernels": prebuilt,
        "cached_builds": cached,
        "kernels": kernel_names,
        "disabled_kernels": {key: reason for key, reason in records.items() if reason},
        "torchvision_weights_cache": str(Path(torch.hub.get_dir()) / "checkpoints"),
        "hf_cache": constants.HF_HUB_CACHE,
        "hf_endpoint": constants.ENDPOINT,
        "offline": bool(constants.HF_HUB_OFFLINE),
    }


def _info(args: argparse.Namespace) -> int:
    data = _info_data()
    if args.json:
        print(json.dumps(data, indent=1))
        return EXIT_OK
    gpus = ", ".join(f"{g['name']} (builds for {g['arch']})" for g in data["gpus"]) or "none visible"
    prebuilt = data["prebuilt_kernels"]
    lines = [
        f"cutlass-resnet {data['cutlass_resnet']}",
        f"python {data['python']}, torch {data['torch']} (CUDA {data['torch_cuda']}), torchvision "
        f"{data['torchvision']}, CUTLASS {data['cutlass']}, huggingface_hub {data['huggingface_hub']}",
        f"CUDA toolkit (nvcc): {data['cuda_toolkit'] or 'not found: kernels cannot be compiled here'}",
        f"GPU: {gpus}",
        f"kernel cache: {data['kernel_cache']}",
        f"  installed kernels: {'built for ' + ', '.join(prebuilt['archs']) if prebuilt else 'none'}",
        f"  cached builds: {', '.join(Path(p).parent.name for p in data['cached_builds']) or 'none yet'}",
        f"  kernels loaded: {', '.join(data['kernels']) or 'none (compiled on first use on a GPU)'}",
        f"  disabled by self-check: {', '.join(data['disabled_kernels']) or 'none'}",
        f"weights cache (torchvision): {data['torchvision_weights_cache']}",
        f"weights cache (Hugging Face): {data['hf_cache']} from {data['hf_endpoint']}"
        + (" (offline)" if data["offline"] else ""),
    ]
    print("\n".join(lines))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- commands


def _bench(args: argparse.Namespace) -> int:
    return benchmark.run(args)


def _selftest(args: argparse.Namespace) -> int:
    return selftest.run(args)


def _export(args: argparse.Namespace) -> int:
    for folder in export(args.arch, args.weights, args.out, args.variant):
        print(folder)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="print the traceback of an error")
    parser = argparse.ArgumentParser(
        prog="cutlass-resnet",
        description="torchvision's ResNet zoo on CUTLASS convolutions.",
        epilog="Exit codes: 0 ok, 1 failed, 2 bad arguments or input, 3 weights unavailable or corrupt, 4 no GPU.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"cutlass-resnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("predict", parents=[common], help="top-k ImageNet classes of images (default: a cat photo)")
    p.add_argument("images", nargs="*", type=Path, metavar="IMAGE", help="image files (default: the sample photo)")
    p.add_argument("--arch", choices=list_models(), help="default: resnet50, or what the weights file says")
    p.add_argument(
        "--weights", default="DEFAULT", help="DEFAULT, a torchvision weights name, a file or folder, or hf:REPO[@REV]"
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--dtype", choices=["auto", *DTYPES], default="auto", help="auto: fp16 on a GPU, fp32 on the CPU")
    p.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=True, help="fold BatchNorm (default)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_predict)

    p = sub.add_parser("bench", parents=[common], help="images/s against torchvision eager and torch.compile")
    benchmark.add_arguments(p)
    p.set_defaults(func=_bench)

    p = sub.add_parser("selftest", parents=[common], help="parity with torchvision; on a GPU, every kernel too")
    selftest.add_arguments(p)
    p.set_defaults(func=_selftest)

    p = sub.add_parser("info", parents=[common], help="versions, GPU, kernel and weight caches")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_info)

    p = sub.add_parser("export", parents=[common], help="torchvision weights to safetensors with model cards")
    p.add_argument("arch", choices=list_models())
    p.add_argument("--weights", default="DEFAULT", help="a name of the arch's torchvision weights (default DEFAULT)")
    p.add_argument("--out", default="weights", type=Path, help="parent folder of the exports (default weights/)")
    p.add_argument("--variant", action="append", choices=list(VARIANTS), help="repeatable; default: all")
    p.set_defaults(func=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - every error becomes one line and an exit code
        code = {  # the first match counts: CorruptWeightsError is a ValueError
            WeightsUnavailableError: EXIT_WEIGHTS,
            CorruptWeightsError: EXIT_WEIGHTS,
            benchmark.NoGPUError: EXIT_NO_GPU,
            UsageError: EXIT_USAGE,
            ValueError: EXIT_USAGE,
        }
        status = next((c for kind, c in code.items() if isinstance(exc, kind)), EXIT_FAILED)
        if args.verbose:
            traceback.print_exc()
        what = str(exc) if status != EXIT_FAILED else f"unexpected error: {type(exc).__name__}: {exc}"
        hint = "" if args.verbose else " (--verbose shows the traceback)"
        print(f"cutlass-resnet {args.command}: {what}{hint if status == EXIT_FAILED else ''}", file=sys.stderr)
        return status
