"""torch.hub entry points: ``torch.hub.load("<owner>/cutlass-resnet", "resnet50", weights="DEFAULT", fuse_bn=True)``."""

dependencies = ["torch", "torchvision", "safetensors", "huggingface_hub"]

from cutlass_resnet import (  # noqa: E402, F401
    from_pretrained,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnext50_32x4d,
    resnext101_32x8d,
    resnext101_64x4d,
    wide_resnet50_2,
    wide_resnet101_2,
)
