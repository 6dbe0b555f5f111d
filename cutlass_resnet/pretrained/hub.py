"""Models to and from the Hugging Face hub (or a local folder) as safetensors: never unpickled, always verified.

A repo holds ``model.safetensors`` with torchvision-format keys (unfused) or our fused keys,
and optionally ``config.json``: ours (``architecture``, ``num_classes``, ``fused``, ``dtype``,
``source``, ``sha256``) or timm's (``architecture``, ``num_classes``), so timm's republished
torchvision weights (``timm/resnet50.tv_in1k``, ``.tv2_in1k``) load as they are. A local
torchvision checkpoint (``.pth``/``.pt``, tensors only) loads through the same function.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import getproxies, proxy_bypass

import httpx2
import torch
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from torchvision.models import WeightsEnum
from torchvision.transforms import InterpolationMode

from .._io import replace_folder
from .._version import __version__
from ..models import ResNet, check_resnet, get_model, get_model_weights, list_models, model_name_of
from ..nn import fusion
from .download import (
    CorruptWeightsError,
    TooSlow,
    Transfer,
    WeightsUnavailableError,
    download_timeout,
    load_checkpoint,
    load_verified,
    offline,
    sha256_of,
)
from .loading import load_torchvision_state_dict

__all__ = [
    "CONFIG_NAME",
    "PRETRAINED_CFG_FIELDS",
    "TIMM_TAGS",
    "WEIGHTS_NAME",
    "from_pretrained",
    "model_card",
    "parse_source",
    "pretrained_cfg_of",
    "push_to_hub",
    "save_pretrained",
    "torchvision_weights_of",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CHECKPOINT_SUFFIXES = (".pth", ".pt")
#: timm's tags for torchvision's weights: ``timm/resnet50.tv2_in1k`` holds ``ResNet50_Weights.IMAGENET1K_V2``.
TIMM_TAGS = {"IMAGENET1K_V1": "tv_in1k", "IMAGENET1K_V2": "tv2_in1k"}


def torchvision_weights_of(model: ResNet) -> WeightsEnum | None:
    """The torchvision weights a model's weights come from, when its ``pretrained_source`` says
    (``ResNet50_Weights.IMAGENET1K_V2``, or a timm repo such as ``hf:timm/resnet50.tv2_in1k@main``)."""
    source = model.pretrained_source or ""
    enum = get_model_weights(model_name_of(model))
    if source.startswith(f"{enum.__name__}."):
        return enum.__members__.get(source.split(".", 1)[1])
    tag = source.split("@")[0].rsplit(".", 1)[-1]
    return next((enum[name] for name, t in TIMM_TAGS.items() if t == tag and name in enum.__members__), None)


#: ImageNet's normalisation and torchvision's V1 evaluation transform: what a model of unknown origin gets.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: The fields of timm's PretrainedCfg this package writes or reads (timm refuses unknown ones).
PRETRAINED_CFG_FIELDS = (
    "tag", "custom_load", "input_size", "test_input_size", "fixed_input_size", "interpolation", "crop_pct",
    "test_crop_pct", "crop_mode", "mean", "std", "num_classes", "label_names", "pool_size", "first_conv",
    "classifier", "license", "origin_url",
)  # fmt: skip


def pretrained_cfg_of(model: ResNet) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` of ``model``: the one it was loaded with, else its torchvision weights'
    evaluation transform (else torchvision's V1 one), and where its stem and classifier are."""
    cfg = {k: v for k, v in (getattr(model, "pretrained_cfg", None) or {}).items() if k in PRETRAINED_CFG_FIELDS}
    if not cfg:
        member = torchvision_weights_of(model)
        crop, resize, interpolation, mean, std = 224, 256, "bilinear", IMAGENET_MEAN, IMAGENET_STD
        if member is not None:
            t = member.transforms()
            crop, resize, interpolation = t.crop_size[0], t.resize_size[0], t.interpolation.value
            mean, std = tuple(t.mean), tuple(t.std)
            cfg = {
                "tag": TIMM_TAGS.get(member.name, member.name.lower()),
                "origin_url": "https://github.com/pytorch/vision",
            }
        cfg.update(
            input_size=[3, crop, crop], interpolation=interpolation, crop_pct=round(crop / resize, 4),
            crop_mode="center", mean=list(mean), std=list(std), license="bsd-3-clause",
        )  # fmt: skip
    cfg.update(num_classes=model.fc.out_features, first_conv="conv1", classifier="fc")
    return cfg


# ---------------------------------------------------------------------------------------------- saving


def save_pretrained(
    model: ResNet,
    save_directory: str | os.PathLike[str],
    *,
    source: str | None = None,
    card: Callable[[dict[str, Any]], str] | None = None,
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (and, with ``card``, ``README.md`` from the config) into
    ``save_directory``; :func:`from_pretrained` reads them.

    Unfused models keep torchvision's keys (any torchvision or timm ResNet loads them); fused ones keep their
    folded conv weights and biases. The files replace the folder's old ones together (a new folder beside it,
    swapped in whole): an interrupted save leaves the previous model as it was; other files in the folder stay.

    Args:
        model: a ResNet of this package, fused or not.
        save_directory: the folder (created if needed).
        source: where the weights came from, kept in the config (e.g. a torchvision enum's name).
        card: makes ``README.md`` from the config (push_to_hub passes one); none is written without it.
    """
    arch = model_name_of(check_resnet(model, "save_pretrained"))
    folder = Path(save_directory)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file: save_pretrained writes a folder")
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    written = (WEIGHTS_NAME, CONFIG_NAME, *(["README.md"] if card else []))
    with replace_folder(folder, written) as new:
        save_file(state_dict, new / WEIGHTS_NAME, metadata={"format": "pt"})
        config = {  # timm's keys (architecture, num_classes, num_features, pretrained_cfg), then ours
            "architecture": arch,
            "num_classes": model.fc.out_features,
            "num_features": model.fc.in_features,
            "pretrained_cfg": pretrained_cfg_of(model),
            "fused": model.fused,
            "dtype": str(model.fc.weight.dtype).removeprefix("torch."),
            "source": source or model.pretrained_source,
            "library_name": "cutlass_resnet",
            "library_version": __version__,
            "sha256": {WEIGHTS_NAME: sha256_of(new / WEIGHTS_NAME)},
        }
        (new / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        if card:
            (new / "README.md").write_text(card(config))
    return folder


def model_card(config: dict[str, Any], how: str) -> str:
    """A model card (README.md) for a saved model: what it is, where its weights come from, how it was made; its
    metadata block written and checked by ``huggingface_hub.ModelCardData``."""
    from huggingface_hub import ModelCard, ModelCardData

    source = config.get("source") or "random initialisation"
    metrics, base_model = "", None
    with contextlib.suppress(Exception):  # metrics only when the source is one of torchvision's enums
        from torchvision.models import get_weight

        member = get_weight(source)
        top1, top5 = (member.meta["_metrics"]["ImageNet-1K"][k] for k in ("acc@1", "acc@5"))
        metrics = f"\ntorchvision reports ImageNet-1K acc@1 {top1} / acc@5 {top5} for these weights (before fusion).\n"
        if member.name in TIMM_TAGS:  # timm's republished copy of these weights on the hub
            base_model = f"timm/{config['architecture']}.{TIMM_TAGS[member.name]}"
    if source.startswith("hf:"):
        base_model = source[3:].split("@")[0]
    data = ModelCardData(
        library_name="cutlass_resnet",
        license="bsd-3-clause",
        tags=["image-classification", "resnet", "cutlass", "timm"],
        datasets=["imagenet-1k"],
        pipeline_tag="image-classification",
        base_model=base_model,
    )
    fused = f"BatchNorm folded into the convs, {config['dtype']}" if config["fused"] else f"unfused, {config['dtype']}"
    timm = (
        'Unfused, it also loads in timm (`timm.create_model("hf-hub:<this repo>", pretrained=True)`).'
        if not config["fused"]
        else "Fused, it loads in cutlass-resnet only (its BatchNorms are folded away)."
    )
    body = f"""
# {config["architecture"]} ({fused})

torchvision's `{config["architecture"]}` for [cutlass-resnet](https://pypi.org/project/cutlass-resnet/), from
`{source}`.
{metrics}
* file: `{WEIGHTS_NAME}`, sha256 `{config["sha256"][WEIGHTS_NAME]}`
* classes: {config["num_classes"]}; fused: {config["fused"]}; dtype: {config["dtype"]}
* made with cutlass_resnet {config["library_version"]}: `{how}`

```python
from cutlass_resnet import from_pretrained
model = from_pretrained("<this repo>")
```

{timm}

License: the code that made this file is BSD-3-Clause; the weights come from torchvision, whose
pretrained models may carry terms of the dataset they were trained on (ImageNet).
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def push_to_hub(
    model: ResNet,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    source: str | None = None,
) -> str:
    """Upload ``model`` (safetensors, config, model card) to a hub repo, created if needed; returns the commit URL.

    Args:
        model: a ResNet of this package, fused or not.
        repo_id: the hub repo (``"user/name"``).
        private: create the repo private (only when it does not exist yet).
        token: a hub token (default: huggingface_hub's login).
        revision: the branch to commit to.
        commit_message: the commit's message.
        source: where the weights came from, kept in the config.
    """
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    how = f"cutlass_resnet.push_to_hub(model, {repo_id!r})"
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_pretrained(model, Path(tmp) / "model", source=source, card=lambda c: model_card(c, how))
        config = json.loads((folder / CONFIG_NAME).read_text())
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            commit_message=commit_message or f"Upload {config['architecture']} with cutlass_resnet",
        )
    return str(info.commit_url)


# --------------------------------------------------------------------------------------------- loading


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    digest.update(path.read_bytes())
    return digest.hexdigest()


def _why_rejected(path: Path, sha256: str | None) -> str | None:
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
            f"torch.load(f, weights_only=True), 'model.safetensors'), or pass a local .pth to from_pretrained"
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
    no progress (it goes on in the background, and a later call resumes what it fetched)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["path"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    said = _HubWarnings()
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


def _download(repo_id: str, filename: str, *, optional: bool = False, **kwargs: Any) -> Path | None:
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
            f"cache), or pass a local folder or .safetensors file to from_pretrained"
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


def _verified(sha256: str | None, name: str | None) -> Callable[[Path], Path]:
    """A check for :func:`load_verified`: the path when its hash matches (else the cached copy is fetched again)
    and, for the weights file ``name`` (None: not a weights file), it is a safetensors file."""

    def check(path: Path) -> Path:
        defect = _why_rejected(path, sha256)
        if defect:
            raise CorruptWeightsError(f"refusing to {'load' if name else 'read'} {path}: {defect}")
        if name is not None:
            _check_safetensors(path, name)
        return path

    return check


def _whole(low: int, high: int) -> tuple[Callable[[Any], bool], str]:
    return lambda v: type(v) is int and low <= v <= high, f"a whole number from {low} to {high}"


def _of(*kinds: type) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, kinds) and (bool in kinds) == isinstance(v, bool)


def _numbers(count: int, positive: bool) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        return (
            isinstance(v, list)
            and len(v) == count
            and all(_of(int, float)(x) and math.isfinite(x) and (x > 0 or not positive) for x in v)
        )

    return check


def _input_size(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 3 and v[0] == 3 and all(type(x) is int and 1 <= x <= 4096 for x in v[1:])


_CROP = (lambda v: _of(int, float)(v) and 0 < v <= 1, "a number above 0, at most 1")
_INPUT_SIZE = (_input_size, "[3, height, width], height and width from 1 to 4096")

#: What a config's keys must hold, where present: (check, what to say). One schema for config.json (ours and
#: timm's) and the pretrained_cfg in it, checked once, before any weights are read or any image is.
_CONFIG_SCHEMA: dict[str, tuple[Callable[[Any], bool], str]] = {
    "architecture": (_of(str), "a model name"),
    "num_classes": _whole(1, 1_000_000),
    "fused": (_of(bool), "true or false"),
    "dtype": (_of(str), "a dtype name"),
    "source": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "sha256": (_of(dict), "an object of file names and sha256 hex digests"),
    "num_features": _whole(1, 1_000_000),
    "pretrained_cfg": (_of(dict), "an object (timm's pretrained_cfg)"),
}
_PRETRAINED_CFG_SCHEMA: dict[str, tuple[Callable[[Any], bool], str]] = {
    "input_size": _INPUT_SIZE,
    "test_input_size": _INPUT_SIZE,
    "crop_pct": _CROP,
    "test_crop_pct": _CROP,
    "mean": (_numbers(3, positive=False), "three numbers, one a channel"),
    "std": (_numbers(3, positive=True), "three numbers above 0, one a channel"),
    "interpolation": (lambda v: v in {m.value for m in InterpolationMode}, "an interpolation such as 'bilinear'"),
    "crop_mode": (lambda v: v in ("center", "squash", "border"), "'center', 'squash' or 'border'"),
    "label_names": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of names"),
}


def check_config(config: object, where: str) -> dict[str, Any]:
    """``config`` if it is a config.json this package can read (ours or timm's), else an error naming the key and
    its value: types and ranges of the keys it uses, its ``pretrained_cfg`` included."""
    if not isinstance(config, dict):
        raise CorruptWeightsError(f"{where} holds {type(config).__name__}, not a JSON object")
    checks = [(key, config, rule) for key, rule in _CONFIG_SCHEMA.items()]
    if isinstance(config.get("pretrained_cfg"), dict):
        checks += [(f"pretrained_cfg.{k}", config["pretrained_cfg"], r) for k, r in _PRETRAINED_CFG_SCHEMA.items()]
    for name, holder, (valid, what) in checks:
        key = name.rsplit(".", 1)[-1]
        if key in holder and holder[key] is not None and not valid(holder[key]):
            raise CorruptWeightsError(f"{where}: {name!r} must be {what}, got {_shown(holder[key])}")
    for file, digest in config.get("sha256", {}).items():
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise CorruptWeightsError(f"{where}: sha256[{file!r}] must be a sha256 hex digest, got {digest!r}")
    return config


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _read_config(path: Path, where: str, refetch: Callable[[], Path] | None) -> dict[str, Any]:
    """The config at ``path``: a cached copy that fails the hub's hash is fetched again (once); one that passes
    it but does not parse or fit the schema is what the server holds, an error naming the key."""
    path = load_verified(path, _verified(None, None), refetch)
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptWeightsError(f"{where} ({path}) is not JSON: {exc}") from exc
    return check_config(config, where)


HUB_PREFIXES = ("hf-hub:", "hf:")  # timm's spelling, and ours


def parse_source(pretrained: str | os.PathLike[str]) -> tuple[str, str, str | None]:
    """("local", path, None) or ("hub", repo id, revision or None) of what :func:`from_pretrained` is given:
    ``hf-hub:owner/name[@rev]`` and ``hf:owner/name[@rev]`` are hub repos whatever exists on disk; otherwise an
    existing path is local, and anything else a repo id (``owner/name[@rev]``)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    text = os.fspath(pretrained)
    prefix = next((p for p in HUB_PREFIXES if text.startswith(p)), None)
    if prefix is None and Path(text).exists():
        return "local", text, None
    repo, _, revision = text.removeprefix(prefix or "").partition("@")
    try:
        validate_repo_id(repo)
    except HFValidationError:
        if prefix is None:
            raise WeightsUnavailableError(
                f"{text!r} is neither a file or folder nor a hub repo id (owner/name)"
            ) from None
        raise ValueError(f"{text!r}: {repo!r} is not a hub repo id (owner/name[@revision])") from None
    return "hub", repo, revision or None


def _model_name(arch: str | None, config: dict[str, Any], name: str, state_dict: dict[str, Tensor]) -> str:
    """From ``arch=``, else the config, else the repo name (timm's ``<arch>.<tag>``), else the weights' shapes."""
    candidates = [arch, config.get("architecture"), Path(name).name.split(".")[0]]
    for candidate in filter(None, candidates):
        if candidate in list_models():
            return candidate
        if candidate in (arch, config.get("architecture")):
            raise ValueError(f"unknown architecture {candidate!r}; cutlass_resnet has {', '.join(list_models())}")
    try:
        return model_name_of(state_dict)
    except ValueError:
        raise ValueError(
            f"cannot tell the architecture of {name!r}: pass arch=, one of {', '.join(list_models())}"
        ) from None


def from_pretrained(
    pretrained: str | os.PathLike[str],
    *,
    revision: str | None = None,
    filename: str = WEIGHTS_NAME,
    arch: str | None = None,
    num_classes: int | None = None,
    fuse_bn: bool | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    sha256: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force_download: bool = False,
    token: str | None = None,
) -> ResNet:
    """A ResNet in eval mode from a hub repo (``"timm/resnet50.tv2_in1k"``), a folder, a ``.safetensors`` file
    or a torchvision checkpoint (``.pth``/``.pt``).

    The architecture comes from ``arch=``, else ``config.json``, else the repo name, else the
    shapes of the weights; the class count from the weights. The file is verified (``sha256=``,
    the config's sha256, or the hub's own hash; a checkpoint's name's sha256 prefix) before it
    is read; a corrupted cached copy is downloaded again once.

    Args:
        pretrained: a hub repo id (``"timm/resnet50.tv2_in1k"``, ``"hf-hub:..."``, ``"...@revision"``), a folder
            holding ``model.safetensors`` (and ``config.json``), or a weights file.
        revision: the hub revision (branch, tag or commit); also written as ``repo@revision``.
        filename: the weights file in the repo or folder.
        arch: the model's name (``"resnet50"``), where the config and the repo name do not say it.
        num_classes: the classes the weights must have: a mismatch is an error, not a silent resize.
        fuse_bn: ``None`` keeps the file's form; ``True`` folds an unfused file's BatchNorms (in float64);
            ``False`` refuses a fused file.
        dtype: the model's dtype (default: the file's).
        device: where the model is put (default: the CPU).
        sha256: the file's expected sha256 (64 hex digits), checked before it is read.
        cache_dir: the hub cache to use (default: huggingface_hub's).
        force_download: download again even where a cached copy exists.
        token: a hub token for private repos (default: huggingface_hub's login).
    """
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ValueError(f"sha256= takes a whole sha256 digest, 64 hex digits; got {sha256!r}")
    kind, name, at = parse_source(pretrained)
    if at is not None and revision is not None and at != revision:
        raise ValueError(f"{pretrained!r} names revision {at!r} but revision={revision!r}: give one of them")
    revision = revision or at
    local = Path(name)
    config_path: Path | None = None
    refetch = refetch_config = None
    if kind == "local":
        weights_path = local / filename if local.is_dir() else local
        if not weights_path.exists():
            raise WeightsUnavailableError(f"{weights_path} does not exist; pass filename= to pick another file")
        checkpoint = weights_path.suffix in CHECKPOINT_SUFFIXES
        config_path = None if checkpoint else weights_path.with_name(CONFIG_NAME)
    else:
        checkpoint = False
        hub = {"revision": revision, "cache_dir": cache_dir, "token": token}
        config_path = _download(name, CONFIG_NAME, optional=True, **hub)
        weights_path = _download(name, filename, force_download=force_download, **hub)

        def refetch(what: str = filename) -> Path:
            if offline():
                raise CorruptWeightsError(
                    f"the cached {what!r} of {name!r} is corrupted and HF_HUB_OFFLINE is set, so it cannot be "
                    f"downloaded again: unset HF_HUB_OFFLINE (or delete the file from the hub cache) and retry"
                )
            return _download(name, what, force_download=True, **hub)

        def refetch_config() -> Path:
            return refetch(CONFIG_NAME)

    where = f"{CONFIG_NAME} of {name!r}"
    config = {}
    if config_path is not None and config_path.exists():
        config = _read_config(config_path, where, refetch_config)
    if checkpoint:  # tensors only, never code; a file a user names is not judged by its name
        if sha256 is not None and (defect := _why_rejected(weights_path, sha256)):
            raise CorruptWeightsError(f"refusing to load {weights_path}: {defect}")
        state_dict = load_checkpoint(weights_path)
    else:
        sha256 = sha256 or config.get("sha256", {}).get(Path(filename).name)
        state_dict = load_file(load_verified(weights_path, _verified(sha256, Path(filename).name), refetch))
    if "fc.weight" not in state_dict:
        raise ValueError(f"{weights_path} is not a ResNet state dict: it has no 'fc.weight'")
    arch = _model_name(arch, config, name, state_dict)
    classes = state_dict["fc.weight"].shape[0]
    if num_classes is not None and num_classes != classes:
        raise ValueError(f"the weights have {classes} classes but num_classes={num_classes}: drop num_classes")
    stored_fused = bool(config.get("fused", "bn1.weight" not in state_dict))
    if stored_fused and fuse_bn is False:
        raise ValueError(
            f"{name} holds a fused model (BatchNorm folded away); it cannot be unfused, load it with fuse_bn=None"
        )
    model = get_model(arch, num_classes=classes).eval()
    if stored_fused:
        fusion.fuse_bn(model)  # the structure only: the file holds the folded weights
    load_torchvision_state_dict(model, state_dict)
    stored_dtype = state_dict["fc.weight"].dtype
    if fuse_bn and not stored_fused:
        fusion.fuse_bn(model, dtype or stored_dtype)  # folded in float64, rounded once
    model.pretrained_source = config.get("source") or (name if kind == "local" else f"hf:{name}@{revision or 'main'}")
    model.pretrained_cfg = config.get("pretrained_cfg")  # timm's name: its preprocessing, used by predict
    return model.to(device=device, dtype=dtype or stored_dtype).eval()
