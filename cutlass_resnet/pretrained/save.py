"""Saving a model as a folder (``model.safetensors``, ``config.json``, a card), whole or not at all, and
pushing it to the hub."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi
from safetensors.torch import save_file

from .._io import replace_folder, sha256_of
from .._version import __version__
from ..models import ResNet, check_resnet, is_quantized, model_name_of
from .card import model_card
from .config import CONFIG_NAME, WEIGHTS_NAME, pretrained_cfg_of

__all__ = ["push_to_hub", "save_pretrained"]


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
            **({"quantization": model.quantization} if is_quantized(model) else {}),
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
