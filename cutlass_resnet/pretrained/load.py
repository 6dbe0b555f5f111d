"""``from_pretrained``: a ResNet from a hub repo, a folder, a ``.safetensors`` file or a torchvision checkpoint,
verified before it is read, its architecture from the config, the name or the shapes."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from ..models import ResNet, get_model, list_models, model_name_of
from ..models.quantize import quantized_like
from ..nn import fusion
from .config import CHECKPOINT_SUFFIXES, CONFIG_NAME, PICKLE_WEIGHTS_NAME, WEIGHTS_NAME, check_config
from .download import CorruptWeightsError, WeightsUnavailableError, load_checkpoint, load_verified, offline
from .hub import download, verified, why_rejected
from .loading import load_torchvision_state_dict

__all__ = ["HUB_PREFIXES", "from_pretrained", "parse_source"]


def _read_config(path: Path, where: str, refetch: Callable[[], Path] | None) -> dict[str, Any]:
    """The config at ``path``: a cached copy that fails the hub's hash is fetched again (once); one that passes
    it but does not parse or fit the schema is what the server holds, an error naming the key."""
    path = load_verified(path, verified(None, None), refetch)
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
            holding ``model.safetensors`` (or timm's ``pytorch_model.bin``) and ``config.json``, or a weights file
            (``.safetensors``; ``.pth``, ``.pt`` or ``.bin``, read as tensors only).
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
        if not weights_path.exists() and filename == WEIGHTS_NAME and (local / PICKLE_WEIGHTS_NAME).is_file():
            weights_path = local / PICKLE_WEIGHTS_NAME  # timm's save_for_hf without safe_serialization
        if not weights_path.exists():
            raise WeightsUnavailableError(f"{weights_path} does not exist; pass filename= to pick another file")
        checkpoint = weights_path.suffix in CHECKPOINT_SUFFIXES
        torchvision_file = checkpoint and not local.is_dir() and weights_path.name != PICKLE_WEIGHTS_NAME
        config_path = None if torchvision_file else weights_path.with_name(CONFIG_NAME)
    else:
        checkpoint = False
        hub = {"revision": revision, "cache_dir": cache_dir, "token": token}
        config_path = download(name, CONFIG_NAME, optional=True, **hub)
        weights_path = download(name, filename, force_download=force_download, **hub)

        def refetch(what: str = filename) -> Path:
            if offline():
                raise CorruptWeightsError(
                    f"the cached {what!r} of {name!r} is corrupted and HF_HUB_OFFLINE is set, so it cannot be "
                    f"downloaded again: unset HF_HUB_OFFLINE (or delete the file from the hub cache) and retry"
                )
            return download(name, what, force_download=True, **hub)

        def refetch_config() -> Path:
            return refetch(CONFIG_NAME)

    where = f"{CONFIG_NAME} of {name!r}"
    config = {}
    if config_path is not None and config_path.exists():
        config = _read_config(config_path, where, refetch_config)
    if checkpoint:  # tensors only, never code; a file a user names is not judged by its name
        if sha256 is not None and (defect := why_rejected(weights_path, sha256)):
            raise CorruptWeightsError(f"refusing to load {weights_path}: {defect}")
        state_dict = load_checkpoint(weights_path)
    else:
        sha256 = sha256 or config.get("sha256", {}).get(Path(filename).name)
        state_dict = load_file(load_verified(weights_path, verified(sha256, Path(filename).name), refetch))
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
    if "conv1.input_scale" in state_dict:  # an int8 model (cutlass_resnet.quantize): its scales are buffers
        quantized_like(model, config.get("quantization"))
        model.load_state_dict(state_dict)
    else:
        if stored_fused:
            fusion.fuse_bn(model)  # the structure only: the file holds the folded weights
        load_torchvision_state_dict(model, state_dict)
    stored_dtype = state_dict["fc.weight"].dtype
    if fuse_bn and not stored_fused:
        fusion.fuse_bn(model, dtype or stored_dtype)  # folded in float64, rounded once
    model.pretrained_source = config.get("source") or (name if kind == "local" else f"hf:{name}@{revision or 'main'}")
    model.pretrained_cfg = config.get("pretrained_cfg")  # timm's name: its preprocessing, used by predict
    return model.to(device=device, dtype=dtype or stored_dtype).eval()
