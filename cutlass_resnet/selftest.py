"""Parity of every model of the zoo with torchvision: ``python -m cutlass_resnet.selftest``.

Each model is built from a torchvision model's weights (random, as no pretrained weights are
downloaded here, with BatchNorm statistics measured on random images so that every
BatchNorm is non-trivial), run unfused and fused, and compared with torchvision in fp32.
So far this exercises the reference implementation of the conv op (CPU, or cuDNN on a GPU),
not the CUTLASS kernels.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch
import torchvision
from torch import Tensor, nn

from . import models
from .fuse import fuse_bn
from .loading import load_torchvision_state_dict

__all__ = ["ARCHS", "torchvision_model_with_statistics", "relative_error", "parity", "main"]

ARCHS = tuple(name for name in models.__all__ if name[0].islower())


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


@dataclass
class Parity:
    """Relative errors of the logits against torchvision in float64."""

    arch: str
    torchvision: float  #: torchvision's own fp32 error: the yardstick
    unfused: float
    fused: float
    fused_on_load: float
    seconds: float

    @property
    def ok(self) -> bool:
        return max(self.unfused, self.fused, self.fused_on_load) <= 2 * self.torchvision


def parity(arch: str, *, image_size: int = 64, batch_size: int = 2, seed: int = 0) -> Parity:
    """Compare ``arch`` unfused, fused, and fused-on-load in fp32 with torchvision in float64.

    The rule: each error is at most twice that of torchvision's own fp32 forward.
    """
    start = time.perf_counter()
    reference = torchvision_model_with_statistics(arch, seed=seed, image_size=image_size)
    state_dict = reference.state_dict()
    builder = getattr(models, arch)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        yardstick = reference(x)
        expected = reference.double()(x.double())
        del reference
        model = builder().eval()
        load_torchvision_state_dict(model, state_dict)
        unfused = relative_error(model(x), expected)
        fused = relative_error(fuse_bn(model)(x), expected)
        model = fuse_bn(builder().eval())
        load_torchvision_state_dict(model, state_dict)
        fused_on_load = relative_error(model(x), expected)
    return Parity(arch, relative_error(yardstick, expected), unfused, fused, fused_on_load, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cutlass_resnet",
        description="Build every model, load a torchvision model's weights into it, fuse it, and print "
        "the parity measured against torchvision (fp32, CPU).",
    )
    parser.add_argument("--arch", nargs="+", choices=ARCHS, default=list(ARCHS), help="models to check")
    parser.add_argument("--image-size", type=int, default=64, help="input height and width (default 64)")
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args(argv)
    if args.image_size < 1 or args.batch_size < 1:
        parser.error("--image-size and --batch-size must be >= 1")

    torch.set_grad_enabled(False)
    print(
        f"cutlass-resnet parity with torchvision {torchvision.__version__}, torch {torch.__version__}, "
        f"fp32, CPU reference conv (no CUTLASS kernel runs here), input "
        f"{args.batch_size}x3x{args.image_size}x{args.image_size}.\nMax relative error of the fp32 logits "
        f"against torchvision in float64; each must be at most twice torchvision's own fp32 error."
    )
    header = f"{'model':<18} {'torchvision':>11} {'unfused':>10} {'fused':>10} {'fused-load':>10} {'time':>7}  result"
    print(header)
    print("-" * len(header))
    failures = 0
    for arch in args.arch:
        p = parity(arch, image_size=args.image_size, batch_size=args.batch_size)
        failures += not p.ok
        print(
            f"{arch:<18} {p.torchvision:>11.2e} {p.unfused:>10.2e} {p.fused:>10.2e} {p.fused_on_load:>10.2e} "
            f"{p.seconds:>6.1f}s  {'ok' if p.ok else 'FAIL'}",
            flush=True,
        )
    print(f"{len(args.arch) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
