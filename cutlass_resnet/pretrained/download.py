"""Verified downloads of torchvision's weight files: a cached file is loaded only if its hash is right.

``torch.hub.load_state_dict_from_url`` checks the hash in a file's name when it downloads it,
but loads whatever is in the cache afterwards. Here every load checks the cached file, a bad one
is reported and fetched again once, and nothing is unpickled beyond tensors (``weights_only``).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torch import Tensor
from torchvision.models import WeightsEnum

__all__ = [
    "CorruptWeightsError",
    "WeightsUnavailableError",
    "load_checkpoint",
    "load_state_dict_from_url",
    "load_verified",
    "load_weights",
    "offline",
    "sha256_of",
]

T = TypeVar("T")


class WeightsUnavailableError(OSError):
    """A weight file is neither cached nor downloadable (offline, no network, not on the server)."""


class CorruptWeightsError(ValueError):
    """A weight file does not match its known hash, or is not a readable checkpoint."""


def offline() -> bool:
    """``HF_HUB_OFFLINE=1`` turns every download off, torchvision's as well as the hub's."""
    from huggingface_hub import constants  # read as huggingface_hub reads it: once, at import

    return bool(constants.HF_HUB_OFFLINE)


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_prefix(filename: str) -> str | None:
    """The sha256 prefix torchvision puts in a file name (``resnet50-11ad3fa6.pth``), if it has one."""
    match = torch.hub.HASH_REGEX.search(filename)
    return match.group(1) if match and len(match.group(1)) >= 8 else None


def _load(path: Path) -> dict[str, Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a file with the right hash that still fails to load: say which
        raise CorruptWeightsError(f"{path} has the expected hash but cannot be loaded: {exc}") from exc


def load_verified(path: Path, load: Callable[[Path], T], refetch: Callable[[], Path] | None) -> T:
    """``load(path)``; when it finds the file corrupt and ``refetch`` can fetch it again, say so and
    load the fresh copy, once. Both sources (torchvision's host and the hub) go through here."""
    try:
        return load(path)
    except CorruptWeightsError as exc:
        if refetch is None:
            raise
        warnings.warn(
            f"cutlass_resnet: the cached file {path} is corrupted ({exc}); downloading it again", stacklevel=3
        )
    return load(refetch())


def load_state_dict_from_url(
    url: str, *, model_dir: str | os.PathLike[str] | None = None, progress: bool = True
) -> dict[str, Tensor]:
    """torchvision's weights at ``url``, from ``$TORCH_HOME/hub/checkpoints`` or downloaded there, verified.

    The sha256 prefix in the file name (``resnet50-11ad3fa6.pth``) is checked on every load. A
    cached file that fails it is reported with its path and downloaded again, once; a download
    that fails it is never kept. Concurrent downloads each write a temporary file and rename
    it into place, so the cache ends with one whole copy.
    """
    filename = Path(urlparse(url).path).name
    prefix = _hash_prefix(filename)
    if prefix is None:
        raise ValueError(f"{filename!r} has no '-<sha256 prefix>.' in its name, so it cannot be verified")
    folder = Path(model_dir) if model_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / filename
    how = (
        f"download {url} on a machine with internet access and copy it to {path} "
        f"(TORCH_HOME sets the folder), or use a local copy: cutlass-resnet predict --weights PATH, or in "
        f"Python load_torchvision_state_dict(model, torch.load(PATH, weights_only=True))"
    )

    def fetch() -> Path:
        if offline():
            raise WeightsUnavailableError(f"{filename} is not cached and HF_HUB_OFFLINE is set: {how}")
        folder.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix, progress=progress)
        except (URLError, OSError) as exc:
            raise WeightsUnavailableError(f"could not download {url} ({exc}): {how}") from exc
        except RuntimeError as exc:  # torch.hub's hash check: the temporary file is already removed
            raise CorruptWeightsError(f"the download of {url} does not match its name's sha256 prefix: {exc}") from exc
        return path

    if path.exists():
        return load_verified(path, load_checkpoint, fetch)
    return load_checkpoint(fetch())


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """A torchvision checkpoint on disk, tensors only; a sha256 prefix in its name is checked first."""
    path = Path(path)
    prefix = _hash_prefix(path.name)
    if prefix is not None and not (actual := sha256_of(path)).startswith(prefix):
        raise CorruptWeightsError(f"{path} has sha256 {actual[:8]}..., not the {prefix}... its name says")
    return _load(path)


def load_weights(weights: WeightsEnum, progress: bool = True) -> dict[str, Tensor]:
    """The state dict of one of torchvision's weights enum members, fetched and verified as above."""
    return load_state_dict_from_url(weights.url, progress=progress)
