"""The drop-in ``torch.nn.MaxPool2d`` whose inference on CUDA writes no indices."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import dispatch, library, selfcheck

__all__ = ["MaxPool2d"]


class MaxPool2d(nn.MaxPool2d):
    """:class:`torch.nn.MaxPool2d` (same arguments, same results) that, on CUDA (and on the emulated GPU's CPU
    tensors), for fp16/bf16 NHWC inputs where nothing needs a gradient, runs the binding's max-pool: aten's CUDA
    max-pool computes the argmax indices (int64, four times the output's bytes at fp16) whether or not anyone
    reads them."""

    def forward(self, input: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            if isinstance(input, Tensor) and input.dtype == torch.int8 and not self.return_indices:
                return self._int8_forward(input)
            y = self._fast_forward(input)
            if y is not None:
                return y
        return F.max_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )

    @torch.jit.unused
    def _int8_forward(self, input: Tensor) -> Tensor:
        """aten's int8 max-pool indexes in int8 (it refuses a map of more than 127 elements): pooled in fp16 (fp32 on
        the CPU), where int8 values are exact and the maximum is the same."""
        wide = torch.float16 if input.is_cuda else torch.float32
        return self.forward(input.to(wide)).to(torch.int8)

    @torch.jit.unused
    def _fast_forward(self, input: Tensor) -> Tensor | None:
        if (
            type(input) is not Tensor
            or not (input.is_cuda or (input.is_cpu and dispatch.emulating()))
            or input.dtype not in (torch.float16, torch.bfloat16)
            or (torch.is_grad_enabled() and input.requires_grad)
            or self.return_indices
            or self.ceil_mode
            or self.dilation not in (1, (1, 1))
            or input.dim() != 4
            or not input.is_contiguous(memory_format=torch.channels_last)
            or torch.compiler.is_compiling()
            or not library.loaded()
        ):
            return None
        if input.is_cuda and (reason := selfcheck.kernel_verdict("max_pool2d", input.device.index or 0)):
            dispatch.fall_back(f"cutlass_resnet: the max-pool pass is not used: {reason}", reason, "aten's max-pool")
            return None
        pair = nn.modules.utils._pair
        kernel, stride = pair(self.kernel_size), pair(self.stride)  # nn.MaxPool2d sets stride=None to kernel_size
        return torch.ops.cutlass_resnet_C.max_pool2d(input, kernel, stride, pair(self.padding))
