"""The hub repo the pretrained tests serve (timm's republished torchvision resnet18, laid out as timm publishes it)
and what they check it with."""

from __future__ import annotations

from pathlib import Path

import torch
from huggingface_hub import constants
from safetensors.torch import save

REPO = "timm/resnet18.tv_in1k"

FILE = f"/{REPO}/resolve/main/model.safetensors"


def safetensors_bytes(model: torch.nn.Module) -> bytes:
    return save({k: v.detach().contiguous() for k, v in model.state_dict().items()})


def cache_dir() -> Path:
    return Path(constants.HF_HUB_CACHE)


def blob() -> Path:
    (path,) = (cache_dir() / "models--timm--resnet18.tv_in1k" / "blobs").glob("?" * 64)
    return path


def check_parity(model, tv18, x, atol=1e-5):
    with torch.no_grad():
        expected = tv18(x)
        assert torch.allclose(model(x.to(model.fc.weight.dtype)).float(), expected, rtol=0, atol=atol)
