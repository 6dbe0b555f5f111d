"""torchvision weights -> safetensors folders with a model card each: unfused fp32 and BatchNorm-fused fp16/bf16.

``python scripts/export_weights.py resnet50 --weights IMAGENET1K_V2 --out weights`` writes
``weights/resnet50.tv2_in1k/``, ``.../resnet50.tv2_in1k.fused-fp16/`` and ``...fused-bf16/``,
each with ``model.safetensors``, ``config.json`` and ``README.md``, ready for ``push_to_hub``
or ``from_pretrained(folder)``. Folder tags follow timm's names for torchvision's weights.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from ..models import get_model, get_model_weights, verify_weights
from .hub import TIMM_TAGS, model_card, save_pretrained

__all__ = ["VARIANTS", "export"]

#: variant -> (BatchNorm folded, dtype)
VARIANTS: dict[str, tuple[bool, torch.dtype]] = {
    "fp32": (False, torch.float32),
    "fused-fp16": (True, torch.float16),
    "fused-bf16": (True, torch.bfloat16),
}


def export(
    arch: str,
    weights: str = "DEFAULT",
    out_dir: str | Path = "weights",
    variants: list[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Export torchvision's ``weights`` of ``arch`` in each variant; returns the folders written."""
    member = verify_weights(get_model_weights(arch), weights)
    folders = []
    for variant in variants or list(VARIANTS):
        fused, dtype = VARIANTS[variant]
        model = get_model(arch, weights=member, progress=progress, fuse_bn=fused, dtype=dtype).eval()
        name = f"{arch}.{TIMM_TAGS.get(member.name, member.name.lower())}" + (
            "" if variant == "fp32" else f".{variant}"
        )
        how = f"python scripts/export_weights.py {arch} --weights {member.name} --variant {variant}"
        card = partial(model_card, how=how)
        folders.append(save_pretrained(model, Path(out_dir) / name, source=str(member), card=card))
    return folders
