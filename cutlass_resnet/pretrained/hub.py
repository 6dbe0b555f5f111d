"""Files from the Hugging Face hub: ``hf_hub_download`` held to the download policy, fast when the hub cannot be
reached, errors that say what is missing; and every file verified before it is read (its hash, and weights
only as safetensors: nothing from the hub is unpickled)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import getproxies, proxy_bypass

import httpx2
from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from safetensors import SafetensorError, safe_open

from .._version import __version__
from .download import (
    CorruptWeightsError,
    TooSlow,
    Transfer,
    WeightsUnavailableError,
    download_timeout,
    offline,
    sha256_of,
)

__all__ = ["download", "verified", "why_rejected"]


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    digest.update(path.read_bytes())
    return digest.hexdigest()


def why_rejected(path: Path, sha256: str | None) -> str | None:
    """Why ``path`` must not be read, or None: a hash that does not match.

    Without a known sha256, a file of the hub cache is checked against its blob name, which the hub sets to the
    file's sha256 (large files) or git blob sha1 (small files); a file elsewhere is never judged by its name.
    """
    resolved = Path(os.path.realpath(path))
    blob = resolved.name if resolved.is_relative_to(os.path.realpath(constants.HF_HUB_CACHE)) else ""
    if sha256 is None and re.fullmatch(r"[0-9a-f]{64}", blob):
        actual = sha256_of(path)
        return None if actual == blob else f"its sha256 is {actual}, but the hub cache names it by {blob}"
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256.lower():
            return f"its sha256 is {actual}, expected {sha256.lower()}"
    elif re.fullmatch(r"[0-9a-f]{40}", blob) and (actual := _git_blob_sha1(path)) != blob:
        return f"its git sha1 is {actual}, but the hub cache names it by {blob}"
    return None


def _check_safetensors(path: Path, name: str) -> None:
    """A weights file must be safetensors, whatever its name: nothing from the hub or a folder is unpickled."""
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as exc:
        if Path(name).suffix == ".safetensors":
            why = f"it is not a readable safetensors file ({exc})"
            raise CorruptWeightsError(f"refusing to load {path}: {why}") from exc
        raise WeightsUnavailableError(
            f"{name} is not a safetensors file ({exc}): cutlass_resnet reads only safetensors from the hub and from "
            f"folders, and never unpickles them; convert it where you trust it with safetensors.torch.save_file("
            f"torch.load(f, weights_only=True), 'model.safetensors'), or use a local copy of the file (--weights PATH "
            f"on the command line, from_pretrained(PATH) in Python)"
        ) from exc


def _reachable(endpoint: str, timeout: float) -> bool:
    """Whether the hub's host (or the proxy to it) takes a connection: a refused, unroutable or unresolvable one
    answers at once, where the hub client would retry it for half a minute."""
    url = urlparse(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxy = None if proxy_bypass(host) else getproxies().get(url.scheme) or getproxies().get("all")
    if proxy:
        proxied = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname or "", proxied.port or 80
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 5.0)):
            return True
    except OSError:
        return False


class _HubWarnings(logging.Handler):
    """The hub client's last warning that says what went wrong (its retries say why they retry), in one line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            lines = [line.strip() for line in record.getMessage().splitlines() if line.strip()]
            said = [line for line in lines if not line.startswith(("Retrying", "Trying to resume"))]
            self.last = said[-1] if said else self.last


def _watched(call: Callable[[], str], repo_folder: Path, timeout: float, what: str) -> str:
    """``call()`` (a hub download) in a thread, held to the download policy (:class:`.download.Transfer`): the hub
    client retries stalled and dropped connections many times over, and one that restarts the same bytes makes
    no progress. Given up on, the partial file it started is removed (its thread cannot be stopped: it goes on in
    the background, writing into the unlinked file, until its own retries end)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["path"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    said = _HubWarnings()
    before = set(repo_folder.glob("blobs/*.incomplete"))
    logging.getLogger("huggingface_hub").addHandler(said)
    worker = threading.Thread(target=run, name="cutlass-resnet-hub-download", daemon=True)
    worker.start()
    transfer, size = Transfer(timeout + 1), 0
    try:
        while worker.is_alive():
            worker.join(0.2)
            with contextlib.suppress(OSError):
                size = sum(p.stat().st_size for p in repo_folder.glob("blobs/*.incomplete"))
            if worker.is_alive():
                transfer.check(size)
    except TooSlow as exc:
        for partial in set(repo_folder.glob("blobs/*.incomplete")) - before:
            partial.unlink(missing_ok=True)  # the abandoned thread writes on into the unlinked file, then fails
        last = f" (the hub client's last word: {said.last})" if said.last else ""
        raise WeightsUnavailableError(
            f"could not download {what}: {exc}{last}; try again later, or pass a local folder"
        ) from None
    finally:
        logging.getLogger("huggingface_hub").removeHandler(said)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["path"]


def _remove_stale_downloads(repo_folder: Path, cache: Path) -> None:
    """Remove partial downloads (``blobs/<etag>[.<id>].incomplete``) that no process is writing (none holds the
    hub client's lock on that etag): a killed download's would stay forever."""
    from filelock import FileLock, Timeout

    for partial in repo_folder.glob("blobs/*.incomplete"):
        etag = partial.name.split(".")[0]
        lock = FileLock(str(cache / ".locks" / repo_folder.name / f"{etag}.lock"))
        with contextlib.suppress(Timeout, OSError), lock.acquire(timeout=0):
            partial.unlink()


def download(repo_id: str, filename: str, *, optional: bool = False, **kwargs: Any) -> Path | None:
    """``hf_hub_download`` with a time limit on a silent server, fast when the hub cannot be reached (the cache
    is used), and errors that say what is missing and how to provide it."""
    where = f"{filename!r} of {repo_id!r} at revision {kwargs.get('revision') or 'main'}"
    timeout = download_timeout()
    cache = Path(kwargs.get("cache_dir") or constants.HF_HUB_CACHE)
    repo_folder = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    unreachable = not offline() and not kwargs.get("local_files_only") and not _reachable(constants.ENDPOINT, timeout)
    if unreachable:
        kwargs = {**kwargs, "local_files_only": True, "force_download": False}

    def call() -> str:
        return hf_hub_download(
            repo_id,
            filename,
            library_name="cutlass_resnet",
            library_version=__version__,
            etag_timeout=timeout,
            **kwargs,
        )

    try:
        path = Path(_watched(call, repo_folder, timeout, where))
    except LocalEntryNotFoundError as exc:
        if optional:
            return None
        if offline():
            why = "HF_HUB_OFFLINE is set"
        elif unreachable:
            why = f"the hub cannot be reached at {constants.ENDPOINT}"
        else:
            why = f"the hub cannot be reached ({exc.__cause__ or exc})"
        raise WeightsUnavailableError(
            f"{where} is not in the hub cache and {why}: download it once with network access (HF_HOME sets the "
            f"cache), or use a local folder or file (--weights PATH on the command line, from_pretrained(PATH) in "
            f"Python)"
        ) from exc
    except EntryNotFoundError as exc:
        if optional:
            return None
        raise WeightsUnavailableError(f"the hub has no file {where}; pass filename= to pick another") from exc
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise WeightsUnavailableError(f"{where}: {type(exc).__name__} (a private repo needs token=)") from exc
    except WeightsUnavailableError:
        raise
    except (HfHubHTTPError, OSError, httpx2.HTTPError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise WeightsUnavailableError(f"could not download {where}: {type(exc).__name__}: {first}") from exc
    _remove_stale_downloads(repo_folder, cache)
    return path


def verified(sha256: str | None, name: str | None) -> Callable[[Path], Path]:
    """A check for :func:`load_verified`: the path when its hash matches (else the cached copy is fetched again)
    and, for the weights file ``name`` (None: not a weights file), it is a safetensors file."""

    def check(path: Path) -> Path:
        defect = why_rejected(path, sha256)
        if defect:
            raise CorruptWeightsError(f"refusing to {'load' if name else 'read'} {path}: {defect}")
        if name is not None:
            _check_safetensors(path, name)
        return path

    return check
