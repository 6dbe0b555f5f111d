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
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from torchvision.models import WeightsEnum

from .._io import atomic_path, write_text
from .._version import __version__
from ..models import ResNet, check_resnet, get_model, get_model_weights, list_models, model_name_of
from ..nn import fuse_bn as _fuse_bn
from .download import (
    CorruptWeightsError,
    WeightsUnavailableError,
    load_checkpoint,
    load_verified,
    offline,
    sha256_of,
)
from .loading import load_torchvision_state_dict

__all__ = [
    "CONFIG_NAME",
    "TIMM_TAGS",
    "WEIGHTS_NAME",
    "from_pretrained",
    "model_card",
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


# ---------------------------------------------------------------------------------------------- saving


def save_pretrained(model: ResNet, save_directory: str | os.PathLike[str], *, source: str | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``save_directory``; :func:`from_pretrained` reads them.

    Unfused models keep torchvision's keys (any torchvision or timm ResNet loads them); fused
    ones keep their folded conv weights and biases. Each file is written whole or not at all.
    """
    arch = model_name_of(check_resnet(model, "save_pretrained"))
    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(state_dict, tmp, metadata={"format": "pt"})
        digest = sha256_of(tmp)
    config = {
        "architecture": arch,
        "num_classes": model.fc.out_features,
        "fused": model.fused,
        "dtype": str(model.fc.weight.dtype).removeprefix("torch."),
        "source": source or model.pretrained_source,
        "library_name": "cutlass_resnet",
        "library_version": __version__,
        "sha256": {WEIGHTS_NAME: digest},
    }
    write_text(folder / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return folder


def model_card(config: dict[str, Any], how: str) -> str:
    """A model card (README.md) for a saved model: what it is, where its weights come from, how it was made."""
    source = config.get("source") or "random initialisation"
    metrics = ""
    with contextlib.suppress(Exception):  # metrics only when the source is one of torchvision's enums
        from torchvision.models import get_weight

        meta = get_weight(source).meta
        top1, top5 = (meta["_metrics"]["ImageNet-1K"][k] for k in ("acc@1", "acc@5"))
        metrics = f"\ntorchvision reports ImageNet-1K acc@1 {top1} / acc@5 {top5} for these weights (before fusion).\n"
    fused = f"BatchNorm folded into the convs, {config['dtype']}" if config["fused"] else f"unfused, {config['dtype']}"
    return f"""---
library_name: cutlass_resnet
license: bsd-3-clause
tags: [image-classification, resnet, cutlass]
datasets: [imagenet-1k]
---

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

License: the code that made this file is BSD-3-Clause; the weights come from torchvision, whose
pretrained models may carry terms of the dataset they were trained on (ImageNet).
"""


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
    """Upload ``model`` (safetensors, config, model card) to a hub repo, created if needed; returns the commit URL."""
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp, source=source)
        config = json.loads((Path(tmp) / CONFIG_NAME).read_text())
        write_text(Path(tmp) / "README.md", model_card(config, f"cutlass_resnet.push_to_hub(model, {repo_id!r})"))
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            revision=revision,
            commit_message=commit_message or f"Upload {config['architecture']} with cutlass_resnet",
        )
    return str(info.commit_url)


# --------------------------------------------------------------------------------------------- loading


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    digest.update(path.read_bytes())
    return digest.hexdigest()


def _problem(path: Path, sha256: str | None) -> str | None:
    """Why ``path`` must not be loaded, or None: a wrong hash, or a safetensors header that does not parse.

    Without a known sha256, a file from the hub cache is checked against its blob name, which
    the hub sets to the file's sha256 (large files) or git blob sha1 (small files).
    """
    blob = Path(os.path.realpath(path)).name
    if sha256 is None and re.fullmatch(r"[0-9a-f]{64}", blob):
        sha256 = blob
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256.lower():
            return f"its sha256 is {actual}, expected {sha256.lower()}"
    elif re.fullmatch(r"[0-9a-f]{40}", blob) and (actual := _git_blob_sha1(path)) != blob:
        return f"its git sha1 is {actual}, expected {blob}"
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except (SafetensorError, OSError) as exc:
            return f"it is not a readable safetensors file ({exc})"
    return None


def _download(repo_id: str, filename: str, *, optional: bool = False, **kwargs: Any) -> Path | None:
    """``hf_hub_download`` with errors that say what is missing and how to provide it."""
    where = f"{filename!r} of {repo_id!r} at revision {kwargs.get('revision') or 'main'}"
    try:
        return Path(
            hf_hub_download(repo_id, filename, library_name="cutlass_resnet", library_version=__version__, **kwargs)
        )
    except LocalEntryNotFoundError as exc:
        if optional:
            return None
        why = "HF_HUB_OFFLINE is set" if offline() else f"the hub cannot be reached ({exc.__cause__ or exc})"
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
    except (HfHubHTTPError, OSError) as exc:
        raise WeightsUnavailableError(f"could not download {where}: {exc}") from exc


def _verified(sha256: str | None) -> Callable[[Path], Path]:
    """A check for :func:`load_verified`: the path when :func:`_problem` finds nothing wrong with it."""

    def check(path: Path) -> Path:
        problem = _problem(path, sha256)
        if problem:
            raise CorruptWeightsError(f"refusing to load {path}: {problem}")
        return path

    return check


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
    is read; a corrupted cached copy is downloaded again once. ``fuse_bn=None`` keeps the file's
    form; ``True`` folds an unfused file (in float64); ``dtype`` defaults to the file's.
    """
    local = Path(pretrained)
    name = str(pretrained)
    config_path: Path | None = None
    refetch = None
    if local.exists():
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

        def refetch() -> Path:
            return _download(name, filename, force_download=True, **hub)

    config = json.loads(config_path.read_text()) if config_path is not None and config_path.exists() else {}
    if checkpoint:  # tensors only, never code; a sha256 prefix in its name is checked
        state_dict = load_checkpoint(weights_path)
    else:
        sha256 = sha256 or config.get("sha256", {}).get(Path(filename).name)
        state_dict = load_file(load_verified(weights_path, _verified(sha256), refetch))
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
        _fuse_bn(model)  # the structure only: the file holds the folded weights
    load_torchvision_state_dict(model, state_dict)
    stored_dtype = state_dict["fc.weight"].dtype
    if fuse_bn and not stored_fused:
        _fuse_bn(model, dtype or stored_dtype)  # folded in float64, rounded once
    model.pretrained_source = config.get("source") or (name if local.exists() else f"hf:{name}@{revision or 'main'}")
    return model.to(device=device, dtype=dtype or stored_dtype).eval()
