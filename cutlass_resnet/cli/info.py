"""``cutlass-resnet info``: versions, GPUs, the kernel library and caches; never compiles anything."""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
import torchvision

from .._version import __version__
from ..ops import build, library
from ..ops.select import kernel_table
from ..ops.selfcheck import read_verdicts
from .common import EXIT_OK

__all__ = ["add_arguments", "run"]


def _info_data() -> dict[str, Any]:
    def package(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    gpus = [
        dict(name=torch.cuda.get_device_name(i), arch=build.nvcc_target(torch.cuda.get_device_capability(i)))
        for i in range(torch.cuda.device_count())
    ]
    prebuilt = library.prebuilt_info()
    cached = sorted(str(p) for p in (build.cache_root() / "kernels").glob("*/cutlass_resnet_C.so"))
    targets = library.default_targets()
    kernel_names: list[str] = []
    if library.find_library(targets) is not None and library.load(targets):  # already compiled: loading builds nothing
        kernel_names = [k.name for k in kernel_table()]
    records = read_verdicts()
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


def run(args: argparse.Namespace) -> int:
    """Print what is installed, found and cached, as text or JSON."""
    data = _info_data()
    if args.json:
        print(json.dumps(data, indent=1))
        return EXIT_OK
    gpus = ", ".join(f"{g['name']} (builds for {g['arch']})" for g in data["gpus"]) or "none visible"
    prebuilt = data["prebuilt_kernels"]
    no_toolkit = f"not found: kernels cannot be compiled here ({build.JIT_INSTALL} brings nvcc)"
    lines = [
        f"cutlass-resnet {data['cutlass_resnet']}",
        f"python {data['python']}, torch {data['torch']} (CUDA {data['torch_cuda']}), torchvision "
        f"{data['torchvision']}, CUTLASS {data['cutlass']}, huggingface_hub {data['huggingface_hub']}",
        f"CUDA toolkit (nvcc): {data['cuda_toolkit'] or no_toolkit}",
        f"GPU: {gpus}",
        f"kernel cache: {data['kernel_cache']}",
        f"  installed kernels: {'built for ' + ', '.join(prebuilt['targets']) if prebuilt else 'none'}",
        f"  cached builds: {', '.join(Path(p).parent.name for p in data['cached_builds']) or 'none yet'}",
        f"  kernels loaded: {', '.join(data['kernels']) or 'none (compiled on first use on a GPU)'}",
        f"  disabled by self-check: {', '.join(data['disabled_kernels']) or 'none'}",
        f"weights cache (torchvision): {data['torchvision_weights_cache']}",
        f"weights cache (Hugging Face): {data['hf_cache']} from {data['hf_endpoint']}"
        + (" (offline)" if data["offline"] else ""),
    ]
    print("\n".join(lines))
    return EXIT_OK


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
