"""What the commands share: exit codes, the dtype names, the errors that map to exit codes."""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from .._io import output_target
from ..models import get_model, list_models, model_name_of
from ..ops.select import capability_of
from ..pretrained import from_pretrained
from ..pretrained.load import HUB_PREFIXES
from ..pretrained.zoo import create_model

__all__ = [
    "check_output_file",
    "check_output_folder",
    "DTYPES",
    "DeprecatedAlias",
    "EXIT_FAILED",
    "EXIT_NO_GPU",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_WEIGHTS",
    "gpu_capability",
    "NoGPUError",
    "UsageError",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_WEIGHTS, EXIT_NO_GPU = 0, 1, 2, 3, 4
#: The dtypes by their command-line names.
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class UsageError(Exception):
    """Bad input from the command line: a missing file, an impossible value."""


class DeprecatedAlias(argparse.Action):
    """An old option name, hidden from ``--help``: its value goes to the new option's ``dest``, with a
    FutureWarning naming the new one (``add_argument("--batch", action=DeprecatedAlias, dest="batch_size",
    new="--batch-size", ...)``)."""

    def __init__(self, option_strings, dest, new: str, **kwargs) -> None:  # noqa: ANN001 - argparse's signature
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        command = parser.prog.split()[-1]
        warnings.warn(f"`{command} {option_string}` is deprecated: use {self.new}", FutureWarning, stacklevel=2)
        setattr(namespace, self.dest, values)


def gpu_capability(text: str | None) -> tuple[int, int]:
    """``--gpu-arch``'s compute capability: 8.0, 9.0, 9.0a or sm_90 (default: the visible GPU's, or 8.0)."""
    if text is None:
        return torch.cuda.get_device_capability() if torch.cuda.is_available() else (8, 0)
    try:
        return capability_of(text)
    except ValueError:
        raise ValueError(f"--gpu-arch takes a compute capability such as 8.0 or 9.0, got {text!r}") from None


class NoGPUError(RuntimeError):
    """A GPU command was asked for and no CUDA GPU is visible."""


def _probe(folder: Path, failure: str) -> None:
    """A file can be created in ``folder`` (a probe, removed at once), else a UsageError: ``failure`` and why."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".cutlass-resnet.", suffix=".probe"):
            pass
    except OSError as exc:
        raise UsageError(f"{failure} ({exc.strerror or exc})") from None


def check_output_file(path: str | Path, option: str) -> Path:
    """``path`` if a file can be written there (checked before any work, by writing a probe beside it), else a
    UsageError naming the option."""
    path = Path(path)
    try:
        target, in_place = output_target(path)
    except IsADirectoryError:
        raise UsageError(f"{option} {path}: that is a folder; give a file name") from None
    if in_place:
        return path
    if not target.parent.is_dir():
        raise UsageError(f"{option} {path}: the folder {target.parent} does not exist")
    _probe(target.parent, f"{option} {path}: cannot write into {target.parent}")
    return path


def check_output_folder(path: str | Path, option: str) -> Path:
    """``path`` if a folder can be written there (it, or the nearest folder above it that exists, takes a probe
    file; nothing is created), else a UsageError naming the option."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}: that is a file; give a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"{option} {path}: {existing} is a file, so the folder cannot be made")
    _probe(existing, f"{option} {path}: cannot create the folder")
    return path


def load_model(weights: str, arch: str | None, fuse: bool, dtype: torch.dtype) -> tuple[nn.Module, str]:
    """The model ``--weights`` names (DEFAULT or a torchvision weights name, a file or folder, or a hub repo
    ``hf:OWNER/NAME[@REV]``), in eval mode, and its architecture (``--arch``, else what the weights say). An
    ``--arch`` from torchvision's classification models or timm's (``timm:NAME``) is converted onto the op."""
    if arch is not None and arch not in list_models():
        if weights.startswith(HUB_PREFIXES):
            raise UsageError(
                f"--weights {weights}: this package's hub repos hold its ResNets; timm's: --arch timm:hf-hub:REPO"
            )
        if ("/" in weights or "." in weights) and not Path(weights).is_file():
            raise UsageError(f"no such weights file: {weights}")
        return create_model(arch, weights, fuse_bn=fuse, dtype=dtype).to(dtype=dtype), arch
    if weights.startswith(HUB_PREFIXES) or Path(weights).exists():
        model = from_pretrained(weights, arch=arch, fuse_bn=fuse, dtype=dtype)
    elif "/" in weights or weights.endswith((".safetensors", ".pth", ".pt")):
        raise UsageError(f"no such weights file or folder: {weights} (hub repos are written hf:OWNER/NAME[@REV])")
    else:
        model = get_model(arch or "resnet50", weights=weights, fuse_bn=fuse, dtype=dtype)
    return model.to(dtype=dtype).eval(), arch or model_name_of(model)
