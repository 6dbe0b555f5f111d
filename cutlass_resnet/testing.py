"""References for checking the zoo against torchvision: used by ``cutlass-resnet selftest`` and the tests."""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn

from .models import list_models
from .models import resnet as _resnet

__all__ = ["ARCHS", "relative_error", "torchvision_model_with_statistics"]

#: The zoo's model names, in torchvision's order (resnet18 ... wide_resnet101_2).
ARCHS = tuple(name for name in _resnet.__all__ if name in list_models())


def torchvision_model_with_statistics(
    arch: str, *, seed: int = 0, image_size: int = 64, batch_size: int = 8, **kwargs
) -> nn.Module:
    """A torchvision ``arch`` in eval mode with random weights and non-trivial BatchNorms.

    The affine BatchNorm parameters are random, with the last BatchNorm of each residual
    branch scaled down as training leaves it (a random net with full-size branches is so
    chaotic that fp16 rounding alone changes its logits by tens of percent), and the running
    statistics are measured on a batch of random images, so activations stay of order one.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(torchvision.models, arch)(**kwargs)
        last = {id(b.bn3 if hasattr(b, "bn3") else b.bn2) for b in model.modules() if hasattr(b, "downsample")}
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        with torch.no_grad():
            for bn in norms:
                bn.weight.uniform_(*((0.1, 0.3) if id(bn) in last else (0.5, 1.5)))
                bn.bias.normal_(0.0, 0.2)
                bn.reset_running_stats()
                bn.momentum = None  # cumulative average: the statistics of the calibration batch
            model.train()
            model(torch.randn(batch_size, 3, image_size, image_size))
        for bn in norms:
            bn.momentum = 0.1
    return model.eval()


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """max|actual - expected| / max|expected|, computed in float64."""
    expected = expected.double()
    return ((actual.double() - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()
