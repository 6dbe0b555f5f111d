"""CUDA graphs for inference: ``cuda_graph(model, example_input)``, one captured graph per input shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

__all__ = ["CUDAGraphModel", "cuda_graph"]


class CUDAGraphModel(nn.Module):
    """``model`` replayed from CUDA graphs, for inference: a forward of a shape, dtype and device seen before is a
    copy into the graph's input and one replay (its output a tensor, or a tuple or dict of them), so the host
    does no per-layer work at all. A new shape is captured on its first call (after warm-up runs, which also
    self-check each kernel and let each conv remember its kernel, so that the capture launches from C++ alone),
    up to ``max_graphs`` of them."""

    def __init__(self, model: nn.Module, warmup: int = 3, max_graphs: int = 8, clone_output: bool = True) -> None:
        super().__init__()
        self.model = model
        self.warmup, self.max_graphs, self.clone_output = warmup, max_graphs, clone_output
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, Tensor, Any]] = {}
        self._pool = None

    def forward(self, x: Tensor) -> Any:
        if not x.is_cuda:
            raise ValueError(f"a CUDA graph replays CUDA work: the input is on {x.device}; move it with x.cuda()")
        key = (tuple(x.shape), x.stride(), x.dtype, x.device)
        if key not in self._graphs:
            if len(self._graphs) >= self.max_graphs:
                raise RuntimeError(
                    f"{len(self._graphs)} input shapes are captured already (max_graphs={self.max_graphs}); "
                    f"pad inputs to a shape seen before, or raise max_graphs"
                )
            self._graphs[key] = self._capture(x)
        graph, static_input, static_output = self._graphs[key]
        static_input.copy_(x)
        graph.replay()
        if not self.clone_output:
            return static_output
        return tree_map(lambda t: t.clone() if isinstance(t, Tensor) else t, static_output)

    @torch.no_grad()
    def _capture(self, x: Tensor) -> tuple[torch.cuda.CUDAGraph, Tensor, Any]:
        static_input = x.clone()
        stream = torch.cuda.Stream(device=x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                self.model(static_input)
        torch.cuda.current_stream(x.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_output = self.model(static_input)
        self._pool = graph.pool()  # the shapes' graphs share one memory pool
        return graph, static_input, static_output


def cuda_graph(model: nn.Module | Callable[[Tensor], Tensor], example_input: Tensor, **kwargs: int) -> CUDAGraphModel:
    """``model`` as a :class:`CUDAGraphModel`, with ``example_input``'s shape captured now (the others on first
    use). Inference only: nothing is recorded for autograd. The output is a copy (``clone_output=False``
    returns the graph's own output tensor, which the next replay overwrites).

    Args:
        model: a CUDA model (or callable) of one tensor.
        example_input: a CUDA input whose shape is captured now (warm-up runs first, which self-check the
            kernels and remember each conv's choice).
        **kwargs: :class:`CUDAGraphModel`'s options (``warmup``, ``max_graphs``, ``clone_output``).
    """
    if not example_input.is_cuda:
        raise ValueError(
            f"cuda_graph needs a CUDA model and input, got an input on {example_input.device}: "
            f"model.cuda() and x.cuda() first"
        )
    graphed = CUDAGraphModel(model, **kwargs)
    graphed(example_input)
    return graphed
