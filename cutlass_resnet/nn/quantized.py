"""INT8 layers on :func:`cutlass_resnet.ops.conv2d_fprop_int8` and the calibration that sets their scales.

Symmetric quantization, zero point 0 throughout (what TensorRT builds INT8 engines from): per-output-channel
weight scales ``amax / 127`` (weights in [-127, 127]), per-tensor activation scales ``amax / 127`` from
calibration batches. ``amax`` comes from torch's observers (``method="max"``) or NVIDIA Model Optimizer's
histogram calibrator (``"percentile"``, ``"entropy"``: TensorRT's KL-divergence calibration).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

from ..ops import dequantize, epilogue_constants, quantize_per_tensor
from . import conv as _conv
from .conv import Conv2d

__all__ = ["CALIBRATION_METHODS", "Calibrator", "Dequantize", "QuantizedConv2d", "quantize_weight", "quantized_scales"]

CALIBRATION_METHODS = ("entropy", "percentile", "max")
_CL = torch.channels_last


def _scale(amax: Tensor) -> Tensor:
    """``amax / 127`` in fp32, 1.0 where ``amax`` is 0 (a channel or tensor that is all zeros)."""
    amax = amax.detach().double()
    return torch.where(amax > 0, amax / 127, torch.ones_like(amax)).float()


def quantize_weight(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Per-output-channel symmetric int8 (``[-127, 127]``, channels_last) and the fp32 scales."""
    observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    observer(weight.detach().float())
    scale = _scale(torch.maximum(-observer.min_val, observer.max_val))
    q = torch.round(weight.detach().double() / scale.double().view(-1, 1, 1, 1)).clamp_(-127, 127)
    return q.to(torch.int8).contiguous(memory_format=_CL), scale


@contextlib.contextmanager
def _quiet_modelopt() -> Iterator[None]:
    """Model Optimizer's import warns about torch.jit and, without a GPU, logs that it found no CUDA runtime."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


class Calibrator:
    """One activation's ``amax`` from the batches it sees: ``collect`` each, then ``scale()``."""

    def __init__(self, method: str = "entropy", percentile: float = 99.99) -> None:
        if method not in CALIBRATION_METHODS:
            raise ValueError(f"calibration method {method!r} is not one of {', '.join(CALIBRATION_METHODS)}")
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        self.method, self.percentile = method, percentile
        if method == "max":
            self._observer = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
            return
        try:
            with _quiet_modelopt():
                from modelopt.torch.quantization.calib import HistogramCalibrator
        except ImportError as error:
            raise ImportError(
                f"calibration method {method!r} uses NVIDIA Model Optimizer's histogram calibrator: "
                "pip install 'cutlass-resnet[int8]' (or nvidia-modelopt), or use method='max'"
            ) from error
        self._observer = HistogramCalibrator(num_bits=8, unsigned=False)

    def collect(self, x: Tensor) -> None:
        x = x.detach().float()
        if self.method == "max":
            self._observer(x)
        else:
            with _quiet_modelopt():
                self._observer.collect(x)

    def amax(self) -> float:
        if self.method == "max":
            return float(torch.maximum(-self._observer.min_val, self._observer.max_val))
        with _quiet_modelopt():
            if self.method == "percentile":
                amax = self._observer.compute_amax("percentile", percentile=self.percentile)
            else:
                # every 4th of the 2048 bins as a candidate range: a quarter of the KL evaluations (seconds
                # for ResNet-50) for ranges 0.2% apart
                amax = self._observer.compute_amax("entropy", stride=4)
        return 0.0 if amax is None else float(amax)  # None: nothing but zeros seen

    def scale(self) -> float:
        return float(_scale(torch.tensor(self.amax())))


class QuantizedConv2d(nn.Module):
    """A fused conv (BatchNorm folded, ReLU and residual add in the epilogue) on int8 NHWC activations.

    Takes int8 (or, the stem, a floating image it quantizes with ``input_scale``) and an int8 ``residual``;
    returns int8 quantized with ``output_scale``: ``relu(acc * s_x * s_w[k] + bias + s_r * residual) / s_y``.
    Buffers: ``weight`` (int8 KRSC), ``weight_scale`` (per output channel), ``bias`` (fp32), ``input_scale``,
    ``output_scale`` and ``residual_scale`` (0 without a residual).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (0, 0),
        dilation: tuple[int, int] = (1, 1),
        groups: int = 1,
        relu: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.groups, self.relu = groups, relu
        shape = (out_channels, in_channels // groups, *kernel_size)
        self.register_buffer("weight", torch.zeros(shape, dtype=torch.int8).contiguous(memory_format=_CL))
        self.register_buffer("weight_scale", torch.ones(out_channels))
        self.register_buffer("bias", torch.zeros(out_channels))
        for name in ("input_scale", "output_scale", "residual_scale"):
            self.register_buffer(name, torch.tensor(1.0 if name != "residual_scale" else 0.0))
        self.register_buffer("alpha", torch.ones(out_channels), persistent=False)
        self.register_buffer("beta", torch.zeros(out_channels), persistent=False)
        self.gamma, self._input_scale = 0.0, 1.0

    @classmethod
    def from_float(
        cls, conv: nn.Conv2d, input_scale: float, output_scale: float, residual_scale: float | None = None
    ) -> QuantizedConv2d:
        """The int8 twin of a fused :class:`cutlass_resnet.nn.Conv2d` (zero padding), weights per channel."""
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(
                f"an int8 conv takes explicit zero padding, got padding={conv.padding!r}, "
                f"padding_mode={conv.padding_mode!r}"
            )
        relu = isinstance(conv, Conv2d) and conv.relu
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, relu)  # fmt: skip
        weight, weight_scale = quantize_weight(conv.weight)
        device = conv.weight.device
        q.weight.copy_(weight.to(device))
        q.weight_scale.copy_(weight_scale.to(device))
        if conv.bias is not None:
            q.bias.copy_(conv.bias.detach().float())
        q.input_scale.fill_(input_scale)
        q.output_scale.fill_(output_scale)
        q.residual_scale.fill_(residual_scale or 0.0)
        return q.to(device)._refresh()

    def _refresh(self) -> QuantizedConv2d:
        residual = float(self.residual_scale) or None
        self._input_scale = float(self.input_scale)  # read on every call, without a device sync
        alpha, beta, self.gamma = epilogue_constants(
            self._input_scale, self.weight_scale, float(self.output_scale), self.bias, residual
        )
        self.alpha.copy_(alpha)
        self.beta.copy_(beta)
        return self

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202
        """Moves between devices; a cast of the model (``model.half()``) leaves the scales and the epilogue's
        constants fp32, as the kernels take them."""
        for name, buffer in self._buffers.items():
            if buffer is not None:
                moved = fn(buffer)
                self._buffers[name] = moved if moved.dtype == buffer.dtype else buffer.to(moved.device)
        return self

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._refresh()

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, relu={self.relu}, "
            f"input_scale={float(self.input_scale):.4g}, output_scale={float(self.output_scale):.4g}"
        )

    def forward(self, input: Tensor, residual: Tensor | None = None) -> Tensor:
        if _conv._ATEN_FORWARD:
            return self._qdq_forward(input, residual)
        if input.is_floating_point():
            input = quantize_per_tensor(input, self._input_scale)
        if residual is not None and not self.gamma:
            raise ValueError("this int8 conv was calibrated without a residual; quantize the model again")
        return torch.ops.cutlass_resnet.conv2d_fprop_int8(
            input.contiguous(memory_format=_CL),
            self.weight,
            self.alpha,
            self.beta,
            None if residual is None else residual.contiguous(memory_format=_CL),
            self.gamma,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.relu,
        )

    def _qdq_forward(self, input: Tensor, residual: Tensor | None) -> Tensor:
        """The same conv in float between quantize-dequantize pairs, what ONNX exporters write as
        QuantizeLinear/DequantizeLinear around a float Conv (TensorRT's explicit quantization): on the input, the
        weight (per channel) and the residual; the next layer's input pair requantizes the output."""
        x = _fake_quantize(input.float(), self.input_scale)
        zero_points = torch.zeros(self.out_channels, dtype=torch.int32, device=self.weight.device)
        w = self.weight.float() * self.weight_scale.view(-1, 1, 1, 1)
        w = torch.fake_quantize_per_channel_affine(w, self.weight_scale, zero_points, 0, -128, 127)
        y = torch.nn.functional.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if residual is not None:
            y = y + _fake_quantize(residual.float(), self.residual_scale)
        return torch.relu(y) if self.relu else y


def _fake_quantize(x: Tensor, scale: Tensor) -> Tensor:
    zero_point = torch.zeros((), dtype=torch.int32, device=scale.device)
    return torch.fake_quantize_per_tensor_affine(x, scale.reshape(()), zero_point, -128, 127)


class Dequantize(nn.Module):
    """int8 -> ``dtype`` with a per-tensor ``scale`` (ONNX DequantizeLinear), where the float layers resume."""

    def __init__(self, scale: float = 1.0, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("_like", torch.empty(0, dtype=dtype), persistent=False)  # cast with the model

    @property
    def dtype(self) -> torch.dtype:
        return self._like.dtype

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202
        """The scale stays fp32 when the model is cast; the output dtype follows the cast."""
        scale = self.scale
        super()._apply(fn, recurse)
        self.scale = scale.to(self._like.device)
        return self

    def extra_repr(self) -> str:
        return f"scale={float(self.scale):.4g}, dtype={self.dtype}"

    def forward(self, input: Tensor) -> Tensor:
        if _conv._ATEN_FORWARD:  # the last conv's output as a quantize-dequantize pair (see QuantizedConv2d)
            return _fake_quantize(input.float(), self.scale).to(self.dtype)
        return dequantize(input, self.scale, self.dtype)


def quantized_scales(model: nn.Module) -> dict[str, dict[str, float | list[float] | None]]:
    """Every int8 conv's scales by module name: input, output, residual (None without one), weight (per
    channel)."""
    return {
        name: {
            "input": float(m.input_scale),
            "output": float(m.output_scale),
            "residual": float(m.residual_scale) or None,
            "weight": m.weight_scale.tolist(),
        }
        for name, m in model.named_modules()
        if isinstance(m, QuantizedConv2d)
    }
