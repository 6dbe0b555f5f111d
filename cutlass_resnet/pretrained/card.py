"""The model card (``README.md``) of a saved model: what it is, where its weights came from, how to load it."""

from __future__ import annotations

import contextlib
from typing import Any

from .config import TIMM_TAGS, WEIGHTS_NAME

__all__ = ["model_card"]


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
