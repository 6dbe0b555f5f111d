"""Verified downloads of torchvision's weight files: a cached file is loaded only if its hash is right.

``torch.hub.load_state_dict_from_url`` checks the hash in a file's name when it downloads it,
but loads whatever is in the cache afterwards. Here every load checks the cached file, a bad one
is reported and fetched again once, and nothing is unpickled beyond tensors (``weights_only``).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

import torch
from torch import Tensor
from torchvision.models import WeightsEnum

from .._io import file_lock, file_mode, sha256_of
from ..ops.build import cache_root

__all__ = [
    "CorruptWeightsError",
    "WeightsUnavailableError",
    "download_timeout",
    "load_checkpoint",
    "load_state_dict_from_url",
    "load_verified",
    "load_weights",
    "offline",
    "MIN_RATE",
    "Transfer",
    "TooSlow",
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


#: Bytes a second a download must average once its first CUTLASS_RESNET_DOWNLOAD_TIMEOUT seconds have passed.
MIN_RATE = 16 * 1024


class TooSlow(OSError):
    """A download that broke the download policy (:class:`Transfer`): it would not end in a bounded time."""


class Transfer:
    """The one policy every download is held to, torchvision's and the hub's: the connection and each read wait
    at most :func:`download_timeout` seconds, and :meth:`check` ends the transfer when no new byte has arrived for
    that long (bytes fetched again after a restart are not new) or when, past that long, it averages under
    :data:`MIN_RATE`: a server that drips, or that restarts the same bytes, ends in a bounded time."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.start = self.since = time.monotonic()
        self.most = 0

    def check(self, size: int) -> None:
        """Raise :class:`TooSlow` when the transfer, ``size`` bytes so far, breaks the policy."""
        now = time.monotonic()
        if size > self.most:
            self.most, self.since = size, now
        elapsed = now - self.start
        if now - self.since > self.timeout:
            raise TooSlow(f"no new data for {self.timeout:g} s (CUTLASS_RESNET_DOWNLOAD_TIMEOUT)")
        if elapsed > self.timeout and self.most < MIN_RATE * elapsed:
            raise TooSlow(
                f"{self.most} bytes in {elapsed:.0f} s, under the {MIN_RATE // 1024} KiB/s a download must keep up "
                f"after its first {self.timeout:g} s (CUTLASS_RESNET_DOWNLOAD_TIMEOUT)"
            )


def download_timeout() -> float:
    """Seconds a download may wait for the server, connecting or between two reads:
    ``CUTLASS_RESNET_DOWNLOAD_TIMEOUT``, default 60."""
    text = os.environ.get("CUTLASS_RESNET_DOWNLOAD_TIMEOUT", "").strip()
    try:
        seconds = float(text) if text else 60.0
    except ValueError:
        raise ValueError(f"CUTLASS_RESNET_DOWNLOAD_TIMEOUT must be a number of seconds, got {text!r}") from None
    if not seconds > 0:
        raise ValueError(f"CUTLASS_RESNET_DOWNLOAD_TIMEOUT must be positive, got {text!r}")
    return seconds


def _hash_prefix(filename: str) -> str | None:
    """The sha256 prefix torchvision puts in a file name (``resnet50-11ad3fa6.pth``), if it has one."""
    match = torch.hub.HASH_REGEX.search(filename)
    return match.group(1) if match and len(match.group(1)) >= 8 else None


def _load(path: Path, verified: bool) -> dict[str, Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read it: say which file, and what it is not
        what = "has the expected hash but cannot be loaded" if verified else "cannot be loaded as a checkpoint"
        raise CorruptWeightsError(f"{path} {what}: {exc}") from exc


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
        f"fetch {url} another way (a browser, another machine) and copy it to {path} (TORCH_HOME sets the "
        f"folder), or use a local copy: --weights PATH on the command line, "
        f"load_torchvision_state_dict(model, torch.load(PATH, weights_only=True)) in Python"
    )

    def fetch() -> Path:
        if offline():
            raise WeightsUnavailableError(f"{filename} is not cached and HF_HUB_OFFLINE is set: {how}")
        try:
            download_file(url, path, prefix, progress=progress)
        except OSError as exc:
            raise WeightsUnavailableError(f"could not download {url} ({exc}): {how}") from exc
        return path

    check = lambda p: load_checkpoint(p, prefix)  # noqa: E731 - the name's prefix, of the file we fetched
    if path.exists():
        return load_verified(path, check, fetch)
    return check(fetch())


def download_file(url: str, path: Path, hash_prefix: str, progress: bool = True) -> None:
    """Download ``url`` to ``path``: through a temporary file beside it (``<name>.<id>.partial``), renamed into
    place only once whole and matching ``hash_prefix``, under a lock (in the package's cache) that every download
    of ``path`` takes; what killed downloads left is removed first. Waits at most :func:`download_timeout` for
    the server at a time."""
    from tqdm.auto import tqdm

    timeout = download_timeout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path, cache_root() / "locks"):  # not in torch's checkpoints folder, which holds only its files
        for stale in path.parent.glob(f"{path.name}.*.partial"):  # torch.hub names its partial files so too
            with contextlib.suppress(OSError):
                stale.unlink()
        if path.exists() and sha256_of(path).startswith(hash_prefix):
            return  # another process downloaded it while we waited
        partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
        try:
            transfer = Transfer(timeout)
            with urlopen(Request(url, headers={"User-Agent": "cutlass-resnet"}), timeout=timeout) as response:
                size = int(response.headers.get("Content-Length") or 0) or None
                digest, written = hashlib.sha256(), 0
                bar = tqdm(total=size, unit="B", unit_scale=True, disable=not progress, desc=path.name)
                with bar, open(partial, "wb") as f:
                    while chunk := response.read1(1 << 20):  # what has arrived: the policy is checked as it comes
                        f.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
                        bar.update(len(chunk))
                        transfer.check(written)
            if size is not None and written != size:
                raise OSError(f"the connection closed after {written} of {size} bytes")
            if not digest.hexdigest().startswith(hash_prefix):
                raise CorruptWeightsError(
                    f"the download of {url} does not match its name's sha256 prefix (it has {digest.hexdigest()[:8]}"
                    f"..., the name says {hash_prefix}...); nothing was kept"
                )
            os.chmod(partial, file_mode())
            os.replace(partial, path)
        except HTTPError as exc:
            if 300 <= exc.code < 400:  # urllib follows redirects: one it gives up on is a loop
                raise OSError(f"the server redirects in a loop (HTTP {exc.code}): try again later") from exc
            raise OSError(str(exc)) from exc  # "HTTP Error 404: Not Found"
        except (TimeoutError, URLError, http.client.HTTPException) as exc:
            reason = exc if isinstance(exc, TimeoutError) else getattr(exc, "reason", None)
            if isinstance(reason, TimeoutError):  # while reading, or (inside a URLError) while connecting
                raise OSError(f"no answer from the server for {timeout:g} s (CUTLASS_RESNET_DOWNLOAD_TIMEOUT)") from exc
            raise OSError(str(reason or exc)) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()


def load_checkpoint(path: str | os.PathLike[str], hash_prefix: str | None = None) -> dict[str, Tensor]:
    """A torchvision checkpoint on disk, tensors only. ``hash_prefix``: the sha256 it must start with (for files
    fetched from torchvision's URLs, whose names carry it); a file a user names is never judged by its name."""
    path = Path(path)
    if hash_prefix is not None and not (actual := sha256_of(path)).startswith(hash_prefix):
        raise CorruptWeightsError(f"{path} has sha256 {actual[:8]}..., not the {hash_prefix}... its name says")
    return _load(path, verified=hash_prefix is not None)


def load_weights(weights: WeightsEnum, progress: bool = True) -> dict[str, Tensor]:
    """The state dict of one of torchvision's weights enum members, fetched and verified as above."""
    return load_state_dict_from_url(weights.url, progress=progress)
