"""Throughput and latency of the fused models against torchvision, side by side in one run.

For each model, batch size and dtype: ours (fused; CUTLASS kernels on a GPU, replayed as a
CUDA graph at small batch), torchvision eager (cuDNN, channels_last, same dtype) and, unless
``--no-compile``, torchvision under ``torch.compile(mode="max-autotune")``. Prints a table,
writes JSON (``--json``) and a bar chart (``--plot``, needs matplotlib). On the CPU
(``--device cpu``) it times the reference path, which says nothing about the kernels.

    cutlass-resnet bench --arch resnet50 --batch 1 32 256 --dtype fp16 bf16 --json bench.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torchvision

from .._io import atomic_path, write_text
from ..models import get_model, list_models
from ..nn import fuse_bn
from ..pretrained import load_torchvision_state_dict
from .common import DTYPES, EXIT_OK, NoGPUError

__all__ = ["add_arguments", "bench", "plot", "run"]


def time_ms(fn: Callable[[], object], warmup: int, iters: int, device: torch.device) -> float:
    """Median milliseconds per call: CUDA events on a GPU, the wall clock on the CPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            start_s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start_s) * 1000)
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


def bench(args: argparse.Namespace, log: Callable[[str], None] = print) -> list[dict]:
    """One row per (model, dtype, batch, implementation): median ms and images/s."""
    device = torch.device(args.device)
    rows = []
    log(f"{'model':<18} {'dtype':<5} {'batch':>5} {'implementation':<15} {'latency':>12} {'throughput':>14}")
    for arch in args.arch:
        reference = getattr(torchvision.models, arch)().eval()
        for name in args.dtype:
            dtype = DTYPES[name]
            ours = fuse_bn(get_model(arch).eval())
            load_torchvision_state_dict(ours, reference.state_dict())
            ours = ours.to(device=device, dtype=dtype)
            theirs = reference.to(device=device, dtype=dtype, memory_format=torch.channels_last)
            compiled = None if args.no_compile else torch.compile(theirs, mode="max-autotune")
            for batch in args.batch:
                x = torch.randn(batch, 3, args.image_size, args.image_size, device=device, dtype=dtype)
                x = x.contiguous(memory_format=torch.channels_last)
                graph = device.type == "cuda" and batch <= args.graph_max_batch
                impls = {
                    "cutlass-resnet": as_graph(ours, x) if graph else partial(ours, x),
                    "torchvision": partial(theirs, x),
                }
                if compiled is not None:
                    impls["torch.compile"] = partial(compiled, x)
                for impl, fn in impls.items():
                    ms = time_ms(fn, args.warmup, args.iters, device)
                    row = dict(arch=arch, dtype=name, batch=batch, impl=impl, ms=ms, images_per_s=batch * 1000 / ms)
                    rows.append(row)
                    log(f"{arch:<18} {name:<5} {batch:>5} {impl:<15} {ms:>9.3f} ms {row['images_per_s']:>10.1f} img/s")
    return rows


def plot(rows: list[dict], path: str | Path, title: str) -> None:
    """Images/s per implementation, one group of bars per (model, dtype, batch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r["arch"], r["dtype"], r["batch"]) for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    value = {(r["arch"], r["dtype"], r["batch"], r["impl"]): r["images_per_s"] for r in rows}
    width = 0.8 / len(impls)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups)), 4.0))
    for i, impl in enumerate(impls):
        xs = [g + i * width for g in range(len(groups))]
        ax.bar(xs, [value.get((*group, impl), 0.0) for group in groups], width, label=impl)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{a}\n{d} b{b}" for a, d, b in groups], fontsize=7)
    ax.set_ylabel("images / s")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's options (``scripts/bench.py`` is the same command)."""
    p.add_argument("--arch", nargs="+", choices=list_models(), default=["resnet50"], metavar="ARCH")
    p.add_argument("--batch", nargs="+", type=int, default=[1, 32, 256], metavar="N")
    p.add_argument("--dtype", nargs="+", choices=list(DTYPES), help="default: fp16 bf16 on a GPU, fp32 on the CPU")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu times the reference path only")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--graph-max-batch", type=int, default=32, help="CUDA graphs for our path up to this batch")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (its autotuning takes minutes)")
    p.add_argument("--json", help="write the results and how they were obtained here")
    p.add_argument("--plot", help="write a bar chart of images/s here (PNG; needs matplotlib)")


def run(args: argparse.Namespace) -> int:
    """Validate, measure, report. Raises NoGPUError for a GPU run without a GPU, ValueError for bad values."""
    if min(args.batch) < 1 or args.image_size < 1 or args.iters < 1 or args.warmup < 0:
        raise ValueError("--batch, --image-size and --iters must be >= 1, --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise NoGPUError("bench needs a CUDA GPU and none is visible; nothing was measured (--device cpu: the CPU)")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--plot needs matplotlib: pip install matplotlib") from None
    args.dtype = args.dtype or (["fp16", "bf16"] if args.device == "cuda" else ["fp32"])
    torch.backends.cudnn.benchmark = True
    with torch.no_grad():
        rows = bench(args, log=lambda line: print(line, flush=True))
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (reference path, no CUTLASS kernel)"
    meta = dict(
        device=where,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        command=" ".join(sys.argv),
        torch=torch.__version__,
        torchvision=torchvision.__version__,
    )
    if args.json:
        write_text(args.json, json.dumps(dict(meta=meta, results=rows), indent=1) + "\n")
    if args.plot:
        plot(rows, args.plot, f"cutlass-resnet vs torchvision on {where}, {meta['date'][:10]}")
    return EXIT_OK
