"""Each kernel checks itself once per GPU and build before it is trusted; the verdicts are kept on disk.

A verdict is ``""`` (passed) or why the kernel was disabled, in ``<cache>/kernels/verdicts.json``,
keyed by GPU, compute capability, build and kernel. :func:`read_verdicts` is the one reader of
that file and :func:`record_verdict` the one writer.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import torch

from .._io import write_text
from . import build
from .select import KernelKind, Problem, device_info, kernel

__all__ = ["check_kernel", "kernel_verdict", "read_verdicts", "record_verdict", "verdict_key", "verdicts_path"]

# The problem each kind of kernel checks itself on, unless given one.
CHECK_PROBLEMS = {
    KernelKind.REGULAR: Problem(2, 12, 12, 64, 64, 3, 3, (1, 1), (1, 1)),
    KernelKind.STEM: Problem(2, 20, 20, 4, 64, 7, 7, (2, 2), (3, 3)),
    KernelKind.GROUPED: Problem(2, 12, 12, 64, 64, 3, 3, (1, 1), (1, 1), groups=2),
    KernelKind.REGULAR_SM90A: Problem(2, 12, 12, 64, 64, 3, 3, (1, 1), (1, 1)),
}


def verdicts_path() -> Path:
    """Where each kernel's self-check result is kept, per GPU and build: ``<cache>/kernels/verdicts.json``."""
    return build.cache_root() / "kernels" / "verdicts.json"


def read_verdicts() -> dict[str, str]:
    """Every recorded verdict: key -> "" (passed) or why the kernel is disabled."""
    path = verdicts_path()
    return json.loads(path.read_text()) if path.exists() else {}


def record_verdict(key: str, reason: str | None) -> dict[str, str]:
    """Persist one self-check result (None: passed), atomically and under a file lock; return all."""
    from filelock import FileLock

    path = verdicts_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        records = read_verdicts()
        records[key] = reason or ""
        write_text(path, json.dumps(records, indent=1, sort_keys=True))
    return records


def verdict_key(kernel_name: str, device_index: int) -> str:
    """``<GPU name>|sm_<cc>|<build>|<kernel>``: a verdict holds for one kernel of one build on one kind of GPU."""
    major, minor = device_info(device_index)[0]
    name = torch.cuda.get_device_name(device_index) if torch.cuda.is_available() else "no-gpu"
    return f"{name}|sm_{major}{minor}|{build.build_id()}|{kernel_name}"


def _device(index: int) -> torch.device:
    return torch.device("cuda", index)


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def kernel_verdict(kernel_name: str, device_index: int) -> str | None:
    """None when the kernel may run on this GPU; else why not. Checked once, then remembered on disk.

    Never checked while a CUDA graph is being captured (the check synchronizes): until a plain
    run has checked it, the kernel is not used inside a graph.
    """
    if _capturing():
        known = read_verdicts().get(verdict_key(kernel_name, device_index))
        if known is None:
            return f"{kernel_name} is not self-checked yet: run the model once before capturing a CUDA graph"
        return known or None
    return _checked_verdict(kernel_name, device_index)


@cache
def _checked_verdict(kernel_name: str, device_index: int) -> str | None:
    key = verdict_key(kernel_name, device_index)
    records = read_verdicts()
    if key not in records:
        records = record_verdict(key, check_kernel(kernel_name, _device(device_index)))
    return records[key] or None


def check_kernel(kernel_name: str, device: torch.device, problem: Problem | None = None) -> str | None:
    """Run the kernel once on random data and compare with float64; None when it is right.

    Right means the brief's rule: error at most twice that of aten's own computation in the
    same dtype (plus half an ulp of the largest output).
    """
    info = kernel(kernel_name)
    dtype = info.dtype
    pr = problem or CHECK_PROBLEMS[info.kind]
    g = torch.Generator().manual_seed(0)

    def operand(*shape, scale=1.0):
        t = (torch.randn(shape, generator=g) * scale).to(device=device, dtype=dtype)
        return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t

    c = pr.c // pr.groups
    x, w = operand(pr.n, pr.c, pr.h, pr.w), operand(pr.k, c, pr.r, pr.s, scale=(c * pr.r * pr.s) ** -0.5)
    bias = operand(pr.k)
    residual = None if info.kind == KernelKind.GROUPED else operand(pr.n, pr.k, pr.p, pr.q)
    conv = (list(pr.stride), list(pr.padding), list(pr.dilation), pr.groups)
    F = torch.nn.functional
    try:
        y = info.launch(x, w, bias, residual, *conv, True)
        aten = F.conv2d(x, w, bias, *conv) + (0 if residual is None else residual)
        expected = F.conv2d(x.double(), w.double(), bias.double(), *conv)
        expected = torch.relu(expected + (0 if residual is None else residual.double()))
        aten = torch.relu(aten)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as exc:  # noqa: BLE001 - any failure disables the kernel
        return f"{kernel_name} failed its self-check: {exc}"
    error = (y.double() - expected).abs().max().item()
    aten_error = (aten.double() - expected).abs().max().item()
    floor = 0.5 * torch.finfo(dtype).eps * expected.abs().max().item()
    if not error <= 2 * aten_error + floor:
        return f"{kernel_name} failed its self-check on {pr} (error {error:.3g}, aten's {aten_error:.3g})"
    return None
