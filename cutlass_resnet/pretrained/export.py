"""torchvision weights -> safetensors folders with a model card each (unfused fp32, BatchNorm-fused fp16/bf16); and
any model -> standard ONNX (:func:`export_onnx`).

``cutlass-resnet export --arch resnet50 --weights IMAGENET1K_V2 --out weights`` writes
``weights/resnet50.tv2_in1k/``, ``.../resnet50.tv2_in1k.fused-fp16/`` and ``...fused-bf16/``,
each with ``model.safetensors``, ``config.json`` and ``README.md``, ready for ``push_to_hub``
or ``from_pretrained(folder)``. Folder tags follow timm's names for torchvision's weights.
"""

from __future__ import annotations

import copy
import os
from functools import partial
from pathlib import Path

import torch

from .._io import output_path
from ..models import ResNet, check_resnet, get_model, get_model_weights, is_quantized, model_name_of, verify_weights
from ..nn import fuse_bn
from ..nn.conv import aten_forward
from .card import model_card
from .config import TIMM_TAGS
from .load import HUB_PREFIXES, from_pretrained
from .save import save_pretrained

__all__ = ["VARIANTS", "export", "export_onnx"]

#: variant -> (BatchNorm folded, dtype)
VARIANTS: dict[str, tuple[bool, torch.dtype]] = {
    "fp32": (False, torch.float32),
    "fused-fp16": (True, torch.float16),
    "fused-bf16": (True, torch.bfloat16),
}


def export(
    arch: str | None,
    weights: str = "DEFAULT",
    out_dir: str | Path = "weights",
    variants: list[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Export ``weights`` in each variant; returns the folders written.

    ``weights``: a name of ``arch``'s torchvision weights (``DEFAULT``, ``IMAGENET1K_V2``), or what
    :func:`from_pretrained` reads (a checkpoint, a folder, ``hf:REPO``), whose architecture ``arch`` may then
    leave to the file. A file saved fused has no fp32 (unfused) variant."""
    local = str(weights).startswith(HUB_PREFIXES) or Path(weights).exists()
    if local:
        base = from_pretrained(weights, arch=arch).float()
        if is_quantized(base):
            raise ValueError(
                f"{weights} holds an int8 model: it has no fp32/fp16/bf16 variants (export_onnx writes it as QDQ ONNX)"
            )
        arch, tag, source = model_name_of(base), Path(str(weights).rstrip("/")).stem.split("@")[0], str(weights)
        how = f"cutlass-resnet export --arch {arch} --weights {weights}"
    else:
        if arch is None:
            raise ValueError(f"name the model whose torchvision weights {weights!r} are: --arch / arch=")
        member = verify_weights(get_model_weights(arch), weights)
        tag, source = TIMM_TAGS.get(member.name, member.name.lower()), str(member)
        how = f"cutlass-resnet export --arch {arch} --weights {member.name}"
    folders = []
    for variant in variants or ([v for v in VARIANTS if v != "fp32"] if local and base.fused else list(VARIANTS)):
        fused, dtype = VARIANTS[variant]
        if local:
            if base.fused and not fused:
                raise ValueError(f"{weights} holds a fused model (BatchNorm folded away): it has no {variant} variant")
            model = copy.deepcopy(base)
            model = fuse_bn(model, dtype) if fused else model.to(dtype)
        else:
            model = get_model(arch, weights=member, progress=progress, fuse_bn=fused, dtype=dtype).eval()
        name = f"{arch}.{tag}" + ("" if variant == "fp32" else f".{variant}")
        card = partial(model_card, how=f"{how} --variant {variant}")
        folders.append(save_pretrained(model, Path(out_dir) / name, source=source, card=card))
    return folders


def export_onnx(
    model: ResNet,
    path: str | os.PathLike[str],
    *,
    image_size: int | tuple[int, int] = 224,
    dynamic_batch: bool = True,
    opset_version: int | None = None,
    dynamo: bool = False,
) -> Path:
    """Write ``model`` as standard ONNX for ONNX Runtime or TensorRT: Conv (BatchNorm folded in, fused or not),
    Add, Relu, MaxPool, GlobalAveragePool, Flatten, Gemm; fp32; input ``images`` (N, 3, H, W) with a dynamic N
    (``dynamic_batch``), output ``logits``. The model is not changed (a copy is exported); the file is written
    whole or not at all. TensorRT: ``trtexec --onnx=FILE --fp16`` (see docs/deployment.md).

    ``dynamo=False`` (the default) uses torch's TorchScript-based exporter, which writes exactly those
    operators; torch deprecates it, and ``dynamo=True`` uses the torch.export-based one, whose graph computes
    the flattened shape with a few more operators (Shape, Gather, Reshape) and pools with ReduceMean.

    Args:
        model: a ResNet of this package, fused or not.
        path: the ``.onnx`` file to write.
        image_size: the input's height and width (one number for a square).
        dynamic_batch: whether N is dynamic (else the exported batch is 1).
        opset_version: the ONNX opset (default: the exporter's).
        dynamo: use torch.export's exporter instead of the TorchScript one.

    A quantized model (:func:`cutlass_resnet.quantize`) is written with QuantizeLinear/DequantizeLinear pairs
    carrying its scales (int8, zero point 0) on every conv's input and residual and per channel on its weights,
    around float Conv, Add and Relu: the form TensorRT builds an INT8 engine from
    (``trtexec --onnx=FILE --int8``), and ONNX Runtime runs. Its logits differ from the int8 model's by the
    float accumulation's effect on rounding (a step here and there, compounding over the layers).
    """
    if is_quantized(check_resnet(model, "export_onnx")) and dynamo:
        raise ValueError(
            "export_onnx: a quantized model is exported by the TorchScript-based exporter (dynamo=False), whose "
            "fake-quantize translation writes QuantizeLinear/DequantizeLinear pairs"
        )
    model = copy.deepcopy(model).float().cpu().eval()
    if not model.fused:
        fuse_bn(model)  # folded in float64, rounded once to fp32
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    example = torch.zeros(2 if dynamic_batch else 1, 3, height, width)  # batch 1 would be specialized
    axes = {"images": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    path = Path(path)
    with aten_forward(), torch.no_grad(), output_path(path) as tmp:
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            dynamo=dynamo,
            input_names=["images"],
            output_names=["logits"],
            opset_version=opset_version or (18 if dynamo else 17),
            **(
                {"dynamic_shapes": ({0: torch.export.Dim("batch")},) if dynamic_batch else None}
                if dynamo
                else {"dynamic_axes": axes}
            ),
        )
    return path
