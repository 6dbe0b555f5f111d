"""Throughput and latency of the fused CUTLASS models against torchvision, side by side in one run.

For each model, batch size and dtype: ours (fused, CUTLASS kernels; replayed as a CUDA graph
at small batch), torchvision eager (cuDNN, channels_last, same dtype) and torchvision under
torch.compile(mode="max-autotune"). Prints a table and writes JSON. Needs a CUDA GPU.

    python scripts/bench.py --arch resnet50 --batch 1 32 256 --dtype fp16 bf16 --json bench.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from collections.abc import Callable
from functools import partial

import torch
import torchvision

import cutlass_resnet
from cutlass_resnet.selftest import ARCHS

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def time_ms(fn: Callable[[], object], warmup: int, iters: int) -> float:
    """Median milliseconds per call, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def as_graph(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Capture one forward as a CUDA graph (after warm-up runs, which also run each kernel's self-check)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = model(x)

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay


def bench(args: argparse.Namespace) -> list[dict]:
    device = torch.device("cuda")
    rows = []
    for arch in args.arch:
        reference = getattr(torchvision.models, arch)().eval()
        for name in args.dtype:
            dtype = DTYPES[name]
            ours = cutlass_resnet.fuse_bn(getattr(cutlass_resnet, arch)().eval())
            cutlass_resnet.load_torchvision_state_dict(ours, reference.state_dict())
            ours = ours.to(device=device, dtype=dtype)
            theirs = reference.to(device=device, dtype=dtype, memory_format=torch.channels_last)
            compiled = None if args.no_compile else torch.compile(theirs, mode="max-autotune")
            for batch in args.batch:
                x = torch.randn(batch, 3, args.image_size, args.image_size, device=device, dtype=dtype)
                x = x.contiguous(memory_format=torch.channels_last)
                impls = {
                    "cutlass-resnet": as_graph(ours, x) if batch <= args.graph_max_batch else partial(ours, x),
                    "torchvision": partial(theirs, x),
                }
                if compiled is not None:
                    impls["torch.compile"] = partial(compiled, x)
                for impl, fn in impls.items():
                    ms = time_ms(fn, args.warmup, args.iters)
                    row = dict(arch=arch, dtype=name, batch=batch, impl=impl, ms=ms, images_per_s=batch * 1000 / ms)
                    rows.append(row)
                    print(
                        f"{arch:<18} {name:<5} {batch:>5} {impl:<15} {ms:>9.3f} ms {row['images_per_s']:>10.1f} img/s",
                        flush=True,
                    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 32, 256])
    parser.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), default=["fp16", "bf16"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--graph-max-batch", type=int, default=32, help="CUDA graphs for our path up to this batch")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (its autotuning takes minutes)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench.py needs a CUDA GPU, and none is visible; nothing was measured", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    torch.set_grad_enabled(False)
    rows = bench(args)
    if args.json:
        meta = dict(
            gpu=torch.cuda.get_device_name(),
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
            command=" ".join(sys.argv),
            torch=torch.__version__,
            torchvision=torchvision.__version__,
            cutlass_resnet=cutlass_resnet.__version__,
        )
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, results=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
