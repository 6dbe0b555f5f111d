"""Post-training INT8 quantization of a ResNet: calibrate, then swap every fused conv for its int8 twin.

Activations stay int8 NHWC from the stem to the last block: each conv's epilogue requantizes its output with the
scale calibrated for it, which is the input scale of the convs that read it (max pooling keeps the stem's); the
stem quantizes the image once; the pooling and the classifier run in the model's float dtype after one
dequantize.
"""

from __future__ import annotations

import collections
import copy
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..nn import Conv2d, fuse_bn
from ..nn.quantized import Calibrator, Dequantize, QuantizedConv2d
from .resnet import Bottleneck, ResNet, check_resnet

__all__ = ["is_quantized", "quantize", "quantized_like"]


def _batches(calibration_data: Tensor | Iterable) -> Iterable[Tensor]:
    """Image batches from a tensor (one batch), or an iterable of tensors or of (images, labels) pairs."""
    if isinstance(calibration_data, Tensor):
        yield calibration_data
        return
    for batch in calibration_data:
        if isinstance(batch, (tuple, list)) and batch:
            batch = batch[0]
        if isinstance(batch, dict) and "image" in batch:
            batch = batch["image"]
        if not isinstance(batch, Tensor):
            raise TypeError(
                f"quantize: calibration batches must be image tensors (N, C, H, W) or (images, labels) pairs, "
                f"got {type(batch).__name__}"
            )
        yield batch


def _calibrate(model: ResNet, calibration_data: Tensor | Iterable, method: str, percentile: float) -> dict[str, float]:
    """The scale of the model's input (key ``""``) and of every conv's output, by conv name."""
    parameter = next(model.parameters())
    calibrators = {"": Calibrator(method, percentile)}
    hooks = [model.conv1.register_forward_pre_hook(lambda _m, args: calibrators[""].collect(args[0]))]
    for name, m in model.named_modules():
        if isinstance(m, Conv2d):
            calibrators[name] = Calibrator(method, percentile)
            hooks.append(m.register_forward_hook(lambda _m, _args, y, name=name: calibrators[name].collect(y)))
    seen = 0
    try:
        with torch.no_grad():
            for batch in _batches(calibration_data):
                if batch.is_floating_point() and not torch.isfinite(batch).all():
                    raise ValueError("quantize: a calibration batch holds NaN or infinite values; pass real images")
                model(batch.to(device=parameter.device, dtype=parameter.dtype))
                seen += batch.shape[0]
    finally:
        for hook in hooks:
            hook.remove()
    if not seen:
        raise ValueError("quantize: calibration_data gave no images; pass a few hundred images of the task's data")
    return {name: c.scale() for name, c in calibrators.items()}


def _swap(owner: nn.Module, attr: str, name: str, scales: dict[str, float], x: float, r: float | None = None) -> float:
    """Replace ``owner.attr`` (the conv called ``name``) by its int8 twin reading scale ``x``; its output scale."""
    setattr(owner, attr, QuantizedConv2d.from_float(getattr(owner, attr), x, scales[name], r))
    return scales[name]


def _swap_convs(q: ResNet, scales: dict[str, float]) -> None:
    """Every conv of the fused ``q`` by its int8 twin, each reading the scale its producer writes; the head
    dequantizes the last block's output."""
    with torch.no_grad():
        s = _swap(q, "conv1", "conv1", scales, scales[""])
        for layer_name in ("layer1", "layer2", "layer3", "layer4"):
            for index, block in enumerate(getattr(q, layer_name)):
                prefix = f"{layer_name}.{index}."
                identity = s
                if block.downsample is not None:
                    identity = _swap(block.downsample, "0", prefix + "downsample.0", scales, s)
                names = ("conv1", "conv2", "conv3") if isinstance(block, Bottleneck) else ("conv1", "conv2")
                for attr in names:
                    s = _swap(block, attr, prefix + attr, scales, s, identity if attr == names[-1] else None)
        q.avgpool = nn.Sequential(Dequantize(s, q.fc.weight.dtype), q.avgpool)


def quantized_like(model: ResNet, quantization: dict | None = None) -> ResNet:
    """``model`` (fused here, in place) with the int8 convs of :func:`quantize` at placeholder scales: the
    structure a quantized state dict loads into."""
    fuse_bn(check_resnet(model, "quantized_like").eval())
    _swap_convs(model, collections.defaultdict(lambda: 1.0))
    model.quantization = dict(quantization or {})
    return model


def quantize(
    model: ResNet,
    calibration_data: Tensor | Iterable,
    method: str = "entropy",
    *,
    percentile: float = 99.99,
) -> ResNet:
    """An INT8 copy of ``model`` calibrated on ``calibration_data``; ``model`` itself is left as it is.

    Args:
        model: a ResNet of this package (fused or not: the copy is fused first).
        calibration_data: image batches as the model takes them (normalised, (N, C, H, W)): a tensor, or an
            iterable of tensors or (images, labels) pairs such as a DataLoader. A few hundred images.
        method: how each activation's range is chosen from what it saw: ``"entropy"`` (TensorRT's KL-divergence
            calibration), ``"percentile"`` or ``"max"``. The first two use NVIDIA Model Optimizer's histogram
            calibrator (``pip install 'cutlass-resnet[int8]'``), ``"max"`` torch's MinMaxObserver.
        percentile: the percentile of ``|x|`` kept by ``method="percentile"``.

    Weights are quantized per output channel (symmetric, ``amax / 127``); activations per tensor. The result's
    convs are :class:`cutlass_resnet.nn.QuantizedConv2d`; :func:`cutlass_resnet.nn.quantized_scales` lists their
    scales.
    """
    model = check_resnet(model, "quantize")
    if is_quantized(model):
        raise ValueError("quantize: the model is already quantized; quantize its float original")
    Calibrator(method, percentile)  # an unknown method or a missing calibrator library fails before any work
    q = copy.deepcopy(model).eval()
    fuse_bn(q)
    scales = _calibrate(q, calibration_data, method, percentile)
    _swap_convs(q, scales)
    q.quantization = {"method": method, **({"percentile": percentile} if method == "percentile" else {})}
    return q


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` has int8 convs (from :func:`quantize`)."""
    return any(isinstance(m, QuantizedConv2d) for m in model.modules())
