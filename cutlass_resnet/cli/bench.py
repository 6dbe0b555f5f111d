"""Throughput and latency of the fused models against torchvision, side by side in one run; and the host path.

For each model, batch size and dtype: ours (fused; CUTLASS kernels on a GPU) and torchvision eager (cuDNN,
channels_last, same dtype), both replayed from CUDA graphs (:func:`cutlass_resnet.cuda_graph`, the same
capture for both), and unless ``--no-compile`` torchvision under ``torch.compile(mode="max-autotune")``.
Prints p50/p90/p99 latency and images/s (at p50) beside the time model's estimate of our convs, writes
JSON (``--json``) and a chart of images/s against batch for each contender (``--plot``, needs matplotlib).
On the CPU (``--device cpu``) it times the reference path, which says nothing about the kernels.

``--dry-run`` measures the host path instead, on any machine: every conv of the fused model called as the
model calls it, doing everything but the kernel launch (``cutlass_resnet.ops.dispatch.dry_run``), in
microseconds per conv (``host_us_per_conv`` in the JSON).

``--input FOLDER`` measures the input pipeline alone, on any machine: each decoder's images per second per
decoding worker (one process, one thread), side by side (``decoders`` in the JSON).

    cutlass-resnet bench --arch resnet50 --batch 1 8 32 128 256 --dtype fp16 bf16 --json bench.json
    cutlass-resnet bench --dry-run --json host.json
    cutlass-resnet bench --input photos/ --json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torchvision

from .._io import output_path, write_text
from ..images import BatchDecoder, Loader, read_bytes
from ..models import get_model, get_model_weights, list_models, quantize
from ..nn import Conv2d, cuda_graph, fuse_bn, plan
from ..ops import build, dispatch, library
from ..predict import expand_paths
from ..pretrained import load_torchvision_state_dict
from .common import DTYPES, EXIT_OK, DeprecatedAlias, NoGPUError, UsageError, check_output_file, gpu_capability

__all__ = ["add_arguments", "bench", "host_path", "percentiles", "plot", "run"]


def time_ms(fn: Callable[[], object], warmup: int, iters: int, device: torch.device) -> list[float]:
    """Milliseconds of each of ``iters`` calls: CUDA events on a GPU, the wall clock on the CPU."""
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
    return times


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50, p90 and p99 of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    at = lambda q: ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]  # noqa: E731
    return {"p50_ms": at(0.50), "p90_ms": at(0.90), "p99_ms": at(0.99)}


def _estimate_ms(
    model: torch.nn.Module, batch: int, size: int, dtype: torch.dtype, device: torch.device
) -> float | None:
    """The time model's estimate of our convs on this GPU (None on the CPU, or where a conv falls back)."""
    if device.type != "cuda":
        return None
    entries = plan(model, (batch, 3, size, size), dtype, torch.cuda.get_device_capability(device))
    total = entries.estimate_us
    return None if total is None else total / 1000


def bench(args: argparse.Namespace, log: Callable[[str], None] = print) -> list[dict]:
    """One row per (model, dtype, batch, implementation): latency percentiles and images/s."""
    device = torch.device(args.device)
    rows = []
    head = f"{'model':<18} {'dtype':<5} {'batch':>5} {'implementation':<15} {'p50':>10} {'p90':>10} {'p99':>10}"
    log(head + f" {'throughput':>14} {'estimate':>10}")
    for arch in args.arch:
        reference = getattr(torchvision.models, arch)().eval()
        for name in args.dtype:
            int8 = name == "int8"  # against torchvision in fp16 on a GPU (fp32 on the CPU)
            dtype = (torch.float16 if device.type == "cuda" else torch.float32) if int8 else DTYPES[name]
            ours = fuse_bn(get_model(arch).eval())
            load_torchvision_state_dict(ours, reference.state_dict())
            if int8:  # calibrated on noise: the scales change the numbers, not the time
                noise = torch.randn(8, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(0))
                ours = quantize(ours, noise, "max")
            # as the kernels read filters
            ours = ours.to(device=device, dtype=torch.float32 if int8 else dtype, memory_format=torch.channels_last)
            theirs = reference.to(device=device, dtype=dtype, memory_format=torch.channels_last)
            compiled = None if args.no_compile else torch.compile(theirs, mode="max-autotune")
            for batch in args.batch_size:
                x = torch.randn(batch, 3, args.image_size, args.image_size, device=device, dtype=dtype)
                x = x.contiguous(memory_format=torch.channels_last)
                x_ours = x.float() if int8 else x
                graphs = device.type == "cuda" and not args.no_graphs
                impls = {
                    "cutlass-resnet": cuda_graph(ours, x_ours, clone_output=False) if graphs else ours,
                    "torchvision": cuda_graph(theirs, x, clone_output=False) if graphs else theirs,
                }
                if compiled is not None:
                    impls["torch.compile"] = compiled
                estimate = _estimate_ms(ours, batch, args.image_size, torch.int8 if int8 else dtype, device)
                for impl, fn in impls.items():
                    inputs = x_ours if impl == "cutlass-resnet" else x
                    times = percentiles(time_ms(partial(fn, inputs), args.warmup, args.iters, device))
                    row = dict(arch=arch, dtype=name, batch=batch, impl=impl, **times)
                    row["images_per_s"] = batch * 1000 / row["p50_ms"]
                    row["graph"] = graphs and impl != "torch.compile"
                    row["estimate_ms"] = estimate if impl == "cutlass-resnet" else None
                    rows.append(row)
                    shown = "" if row["estimate_ms"] is None else f"{row['estimate_ms']:>7.3f} ms"
                    latency = " ".join(f"{times[q]:>7.3f} ms" for q in ("p50_ms", "p90_ms", "p99_ms"))
                    speed = f"{row['images_per_s']:>10.1f} img/s"
                    log(f"{arch:<18} {name:<5} {batch:>5} {impl:<15} {latency} {speed} {shown:>10}")
    return rows


def host_path(
    arch: str,
    dtype: torch.dtype,
    batch: int,
    image_size: int,
    capability: tuple[int, int],
    iters: int,
    warmup: int,
    device: torch.device | str = "cpu",
) -> dict:
    """Microseconds of host time per conv of fused ``arch``, each conv called as the model calls it, in a dry run
    (everything but the launch) on ``device``'s tensors as on a GPU of ``capability``: the median of ``iters``
    rounds."""
    build.cache_root()  # a cache path that cannot be one is the user's to mend: said as such, not as a failed load
    if not library.load_for(capability):
        raise RuntimeError(f"the dry run needs the CUTLASS extension: {library.load_error()}")
    model = fuse_bn(get_model(arch).eval()).to(device=device, dtype=dtype, memory_format=torch.channels_last)
    calls: list[tuple[torch.nn.Module, tuple, dict]] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, a, kw: calls.append((mod, a, kw)), with_kwargs=True)
        for m in model.modules()
        if isinstance(m, Conv2d)
    ]
    x = torch.randn(batch, 3, image_size, image_size, dtype=dtype, device=device)
    with torch.no_grad(), dispatch.dry_run(capability):
        try:
            model(x)  # the first calls choose each problem's kernel in Python
        finally:
            for h in hooks:
                h.remove()
        rounds = []
        for i in range(warmup + iters):
            start = time.perf_counter()
            for module, a, kw in calls:
                module(*a, **kw)
            if i >= warmup:
                rounds.append((time.perf_counter() - start) / len(calls) * 1e6)
    return dict(arch=arch, dtype=str(dtype)[6:], batch=batch, capability=list(capability), device=str(device),
                convs=len(calls), host_us_per_conv=statistics.median(rounds))  # fmt: skip


def plot(rows: list[dict], path: str | Path, title: str) -> None:
    """Images/s against batch size, one line per implementation, one panel per (model, dtype)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["arch"], r["dtype"]) for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 4.0), squeeze=False)
    for ax, (arch, dtype) in zip(axes[0], panels, strict=True):
        for impl in dict.fromkeys(r["impl"] for r in rows):
            mine = [r for r in rows if (r["arch"], r["dtype"], r["impl"]) == (arch, dtype, impl)]
            points = sorted((r["batch"], r["images_per_s"]) for r in mine)
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=impl)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("images / s")
        ax.set_title(f"{arch} {dtype}", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with output_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's options (``scripts/bench.py`` is the same command)."""
    p.add_argument(
        "--arch", nargs="+", choices=list_models(), default=["resnet50"], metavar="ARCH", help="default resnet50"
    )
    p.add_argument(
        "--batch-size", nargs="+", type=int, metavar="N", help="batch sizes (default: 1 8 32 128 256; --dry-run: 1)"
    )
    p.add_argument("--batch", nargs="+", type=int, action=DeprecatedAlias, dest="batch_size", new="--batch-size")
    p.add_argument(
        "--dtype",
        nargs="+",
        choices=[*DTYPES, "int8"],
        help="default: fp16 bf16 on a GPU, fp32 on the CPU; int8: ours quantized, against torchvision in fp16 (fp32 "
        "on the CPU)",
    )
    p.add_argument(
        "--device", choices=["cuda", "cpu"], default="cuda", help="cuda (default), or cpu: the reference path only"
    )
    p.add_argument("--image-size", type=int, default=224, help="input height and width (default 224)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs before measuring (default 10)")
    p.add_argument("--iters", type=int, default=50, help="timed runs per row (default 50)")
    p.add_argument("--no-graphs", action="store_true", help="run eager instead of replaying CUDA graphs")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (its autotuning takes minutes)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="time the host path per conv instead (no kernel launched; on the CPU too)",
    )
    p.add_argument(
        "--input",
        metavar="FOLDER",
        help="measure the input pipeline alone: each decoder's images/s per decoding worker on these images",
    )
    p.add_argument("--gpu-arch", help="--dry-run: the GPU to plan for, e.g. 9.0 (default: the visible one, or 8.0)")
    p.add_argument(
        "--json",
        nargs="?",
        const=True,
        default=False,
        metavar="FILE",
        help="print the results and how they were obtained as JSON (--json FILE, deprecated: as --output FILE)",
    )
    p.add_argument("--output", metavar="FILE", help="write the JSON results here")
    p.add_argument("--plot", metavar="PNG", help="write a chart of images/s against batch here (needs matplotlib)")


def run(args: argparse.Namespace) -> int:
    """Validate, measure, report. Raises NoGPUError for a GPU run without a GPU, ValueError for bad values."""
    if isinstance(args.json, str):  # the old form: the file to write
        message = "`bench --json FILE` is deprecated: use --output FILE (--json prints)"
        warnings.warn(message, FutureWarning, stacklevel=2)
        args.output, args.json = args.output or args.json, False
    args.batch_size = args.batch_size or ([1] if args.dry_run else [1, 8, 32, 128, 256])
    if min(args.batch_size) < 1 or args.image_size < 1 or args.iters < 1 or args.warmup < 0:
        raise ValueError("--batch-size, --image-size and --iters must be >= 1, --warmup >= 0")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--plot needs matplotlib: pip install matplotlib") from None
    for option in ("output", "plot"):  # before minutes of measuring
        if getattr(args, option):
            check_output_file(getattr(args, option), f"--{option}")
    meta = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        command=" ".join(sys.argv),
        torch=torch.__version__,
        torchvision=torchvision.__version__,
    )
    if args.dry_run:
        if "int8" in (args.dtype or []):
            raise UsageError(
                "--dry-run times the fp16/bf16 kernels' host path; int8 is not timed there (drop --dry-run)"
            )
        return _run_dry(args, meta)
    if args.input is not None:
        return _run_input(args, meta)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise NoGPUError("bench needs a CUDA GPU and none is visible; nothing was measured (--device cpu: the CPU)")
    args.dtype = args.dtype or (["fp16", "bf16"] if args.device == "cuda" else ["fp32"])
    torch.backends.cudnn.benchmark = True
    with torch.no_grad():
        rows = bench(args, log=partial(_log, args))
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (reference path, no CUTLASS kernel)"
    meta["device"] = where
    _report(args, dict(meta=meta, results=rows))
    if args.plot:
        plot(rows, args.plot, f"cutlass-resnet vs torchvision on {where}, {meta['date'][:10]}")
    return EXIT_OK


def _log(args: argparse.Namespace, line: str) -> None:
    """A line of the table: on stdout, or on stderr where --json keeps stdout for the JSON."""
    print(line, file=sys.stderr if args.json else sys.stdout, flush=True)


def _report(args: argparse.Namespace, document: dict) -> None:
    """The JSON results: to ``--output``, and on stdout with ``--json``."""
    text = json.dumps(document, indent=1) + "\n"
    if args.output:
        write_text(args.output, text)
    if args.json:
        sys.stdout.write(text)


def decode_rates(paths: list[str], transform, decoders: list[str], rounds: int = 3) -> dict[str, dict[str, float]]:
    """Images per second of one decoding worker (this process, one thread) for each decoder, from file to the
    model's input (uint8 for ``torchvision``, normalised fp32 for ``pil``): the best of ``rounds`` passes over
    ``paths``, the decoders taking turns within each round so that they share the machine's moments."""
    loads = {name: Loader(name, transform) for name in decoders}
    readable = []
    for path in paths:
        try:
            loads[decoders[0]](path)
            readable.append(path)
        except Exception:  # noqa: BLE001 - an unreadable file is not part of a decoder's rate
            continue
    if not readable:
        raise UsageError("--input: no readable images there")
    best = dict.fromkeys(decoders, float("inf"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(rounds):
            for name, load in loads.items():
                start = time.perf_counter()
                for path in readable:
                    load(path)
                best[name] = min(best[name], time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return {
        name: {"images_per_s": len(readable) / seconds, "ms_per_image": seconds / len(readable) * 1000}
        for name, seconds in best.items()
    } | {"images": len(readable)}


def gpu_decode_rate(paths: list[str], transform, device: torch.device, batch_size: int = 32) -> dict[str, float]:
    """Images per second of batched decoding on ``device`` (nvJPEG; :class:`~cutlass_resnet.images.
    BatchDecoder`), from files' bytes in memory to resized, cropped uint8 batches there; best of three passes."""
    decoder = BatchDecoder(transform, device)
    data = [read_bytes(p) for p in paths]
    batches = [data[i : i + batch_size] for i in range(0, len(data), batch_size)]
    decoder(batches[0])  # warm up
    best = float("inf")
    for _ in range(3):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        count = sum(len(decoder(batch)[0]) for batch in batches)
        torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return {"images_per_s": count / best, "ms_per_image": best / count * 1000}


def _run_input(args: argparse.Namespace, meta: dict) -> int:
    """The input pipeline alone: each decoder's images per second per decoding worker, side by side."""
    paths = expand_paths([args.input])
    if not paths:
        raise UsageError(f"--input {args.input}: no images there (folders are searched for image extensions)")
    transform = get_model_weights(args.arch[0]).DEFAULT.transforms()
    rates = decode_rates(paths, transform, ["torchvision", "pil"])
    images = rates.pop("images")
    if torch.cuda.is_available():
        rates["nvjpeg"] = gpu_decode_rate(paths, transform, torch.device("cuda"))
    gpu = " (nvjpeg: batches of 32 on the GPU)" if "nvjpeg" in rates else ""
    _log(args, f"decoding {images} images of {args.input} to {args.arch[0]}'s input, one worker, one thread{gpu}:")
    for name, rate in rates.items():
        _log(args, f"  {name:<12} {rate['images_per_s']:>8.1f} images/s  {rate['ms_per_image']:>6.2f} ms/image")
    speedup = rates["torchvision"]["images_per_s"] / rates["pil"]["images_per_s"]
    _log(args, f"  torchvision decodes {speedup:.2f}x the images per second of pil")
    meta["device"] = f"CPU, one decoding worker ({os.cpu_count()} cores visible)"
    _report(args, dict(meta=meta, input=str(args.input), images=images, decoders=rates))
    return EXIT_OK


def _run_dry(args: argparse.Namespace, meta: dict) -> int:
    capability = gpu_capability(args.gpu_arch)
    dtypes = args.dtype or ["fp16"]
    if "fp32" in dtypes:
        raise ValueError("--dry-run: the kernels are fp16 and bf16 (--dtype fp16 bf16)")
    device = torch.device("cuda" if torch.cuda.is_available() and args.device == "cuda" else "cpu")
    _log(args, f"host time per conv, dry run on {device} as on sm_{capability[0]}{capability[1]} (no kernel launched):")
    rows = []
    for arch in args.arch:
        for name in dtypes:
            for batch in args.batch_size:
                row = host_path(arch, DTYPES[name], batch, args.image_size, capability, args.iters, args.warmup, device)
                rows.append(row)
                us = row["host_us_per_conv"]
                _log(args, f"{arch:<18} {name:<5} {batch:>5} {row['convs']:>3} convs {us:>8.2f} us/conv")
    meta["device"] = "dry run on the host (no kernel launched)"
    meta["host"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    summary = statistics.median(r["host_us_per_conv"] for r in rows)
    _report(args, dict(meta=meta, host_us_per_conv=summary, results=rows))
    return EXIT_OK
