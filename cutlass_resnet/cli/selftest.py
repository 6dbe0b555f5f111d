"""``cutlass-resnet selftest``: parity of every model of the zoo with torchvision, and every kernel on a GPU.

Each model is built from a torchvision model's weights (random, as no pretrained weights are
downloaded here, with BatchNorm statistics measured on random images so that every
BatchNorm is non-trivial), run unfused and fused, and compared with torchvision in fp32.
On the CPU this exercises the reference implementation of the conv op. On a GPU it then runs
every CUTLASS kernel on every distinct conv shape of the zoo, and every fused model in fp16 and
bf16, against float64 (failing kernels are disabled for that GPU). The GPU part has never run:
no GPU was available where it was written.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass

import torch
import torchvision

from .. import models
from ..nn import fuse_bn, plan
from ..ops import library, select
from ..ops.select import kernel_table, launch_form
from ..ops.selfcheck import (
    PASSES,
    SelfCheckUnavailable,
    check_cases,
    check_kernel,
    forget_verdicts,
    isolated_check,
    record_verdict,
    verdict_key,
    verdicts_path,
)
from ..pretrained import load_torchvision_state_dict
from ..testing import ARCHS, relative_error, torchvision_model_with_statistics
from .common import EXIT_FAILED, EXIT_OK

__all__ = ["add_arguments", "kernel_sweep", "parity", "run"]


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


def kernel_sweep(
    device: torch.device, capability: tuple[int, int] | None = None, batch_size: int = 2, image_size: int = 224
) -> list[tuple[str, object, str | None]]:
    """Every compiled kernel on every distinct conv shape of the zoo that it implements, on ``device``.

    Returns (kernel, problem, None or why it failed). A failing kernel is recorded in the
    kernel cache and never dispatched again on this GPU.
    """
    if not library.load():
        return [("extension", None, f"the CUTLASS extension is unavailable: {library.load_error()}")]
    gpu = capability or torch.cuda.get_device_capability(device)
    problems = set()
    for arch in ARCHS:
        with torch.device("meta"):
            model = fuse_bn(getattr(models, arch)().eval())
        shape = (batch_size, 3, image_size, image_size)
        problems.update(e.problem for e in plan(model, shape, torch.float16, gpu))
    results = []
    for problem in sorted(problems, key=str):
        problem, kind, _, _ = launch_form(problem)  # padded stem, merged groups
        for kernel in kernel_table():
            if not kernel.serves(kind, gpu) or kernel.can_implement(problem) != 0:
                continue
            reason = check_kernel(kernel.name, device, problem)
            if reason is not None:
                record_verdict(verdict_key(kernel.name, device.index or 0), reason)
            results.append((kernel.name, problem, reason))
    return results


def gpu_model_parity(arch: str, device: torch.device, dtype: torch.dtype, batch_size: int = 8) -> tuple[float, float]:
    """(ours, torchvision's) max relative error of fused-``dtype`` logits against torchvision in float64.

    Ours runs the CUTLASS kernels (the reference where none applies); torchvision runs cuDNN in
    ``dtype``, channels_last: its error is the yardstick.
    """
    reference = torchvision_model_with_statistics(arch, image_size=64).to(device)
    x = torch.randn(batch_size, 3, 224, 224, device=device, generator=torch.Generator(device).manual_seed(0))
    with torch.no_grad():
        expected = copy.deepcopy(reference).double()(x.double())
        theirs = copy.deepcopy(reference).to(dtype).to(memory_format=torch.channels_last)(x.to(dtype))
        model = fuse_bn(getattr(models, arch)().eval())
        load_torchvision_state_dict(model, reference.state_dict())
        ours = model.to(device=device, dtype=dtype)(x.to(dtype))
    return relative_error(ours, expected), relative_error(theirs, expected)


def matrix_checks(device: torch.device, sanitizer: str | None = None) -> int:
    """Every kernel that serves this GPU, over its self-check matrix, each in a child process (under
    ``compute-sanitizer --tool sanitizer`` if given); verdicts recorded; returns the failure count."""
    if not library.load():
        print(f"the CUTLASS extension is unavailable: {library.load_error()}")
        return 1
    capability = torch.cuda.get_device_capability(device)
    under = f" under compute-sanitizer --tool {sanitizer}" if sanitizer else ""
    print(
        "\nEach kernel's self-check matrix (bias/residual/ReLU on and off, partial tiles, 1x1/3x3/7x7 at stride "
        f"1 and 2, groups, a batch chunk) in a child process{under}:"
    )
    failures = 0
    names = [k.name for k in kernel_table() if k.serves(k.problem_kind, capability)] + list(PASSES)
    for name in names:
        start = time.perf_counter()
        try:
            reason = isolated_check(name, device.index or 0, library.library_path(), sanitizer=sanitizer)
        except SelfCheckUnavailable as exc:
            print(f"{name:<32} not checked: {exc}")
            failures += 1
            continue
        record_verdict(verdict_key(name, device.index or 0), reason)
        failures += reason is not None
        seconds = time.perf_counter() - start
        cases = f"{len(check_cases(select.kernel(name))):>4} cases" if name not in PASSES else "      pass"
        print(f"{name:<32} {cases} {seconds:6.1f}s  {reason or 'ok'}", flush=True)
    return failures


def gpu_selftest(archs: list[str], sanitizer: str | None = None) -> int:
    """The kernels' matrices, the zoo sweep and the fused fp16/bf16 models against torchvision; the failure count."""
    device = torch.device("cuda", torch.cuda.current_device())
    name, cap = torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device)
    print(f"\nGPU self-check on {name} (sm_{cap[0]}{cap[1]}): error against float64 at most twice aten's, same dtype")
    matrix_failures = matrix_checks(device, sanitizer)
    if matrix_failures:  # a kernel that crashed its check must not run in this process
        print(f"{matrix_failures} kernel(s) failed their matrix: the zoo sweep and the model checks are skipped")
        return matrix_failures
    print("\nEvery kernel on every distinct conv shape of the zoo (batch 2):")
    sweep = kernel_sweep(device)
    failures = [(k, p, r) for k, p, r in sweep if r is not None]
    for kernel in sorted({k for k, _, _ in sweep}):
        runs = [r for k, _, r in sweep if k == kernel]
        print(f"{kernel:<32} {len(runs):>4} shapes  {'ok' if not any(runs) else f'{sum(map(bool, runs))} FAILED'}")
    for _, _, reason in failures:
        print(f"  {reason}")
    print(f"\nFused models on {name}, batch 8 at 224: max relative error of the logits against torchvision in float64")
    header = f"{'model':<18} {'dtype':<9} {'torchvision':>11} {'ours':>10}  result"
    print(header + "\n" + "-" * len(header))
    model_failures = 0
    for arch in archs:
        for dtype in (torch.float16, torch.bfloat16):
            ours, theirs = gpu_model_parity(arch, device, dtype)
            ok = ours <= 2 * theirs
            model_failures += not ok
            print(f"{arch:<18} {str(dtype)[6:]:<9} {theirs:>11.2e} {ours:>10.2e}  {'ok' if ok else 'FAIL'}", flush=True)
    return len(failures) + model_failures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--arch", nargs="+", choices=ARCHS, default=list(ARCHS), metavar="ARCH", help="models to check (default all)"
    )
    parser.add_argument("--image-size", type=int, default=64, help="input height and width (default 64)")
    parser.add_argument("--batch-size", type=int, default=2, help="images per check (default 2)")
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU checks")
    parser.add_argument(
        "--recheck", action="store_true", help="forget the kernels' recorded self-check verdicts and check them again"
    )
    parser.add_argument(
        "--sanitize",
        nargs="?",
        const="memcheck",
        choices=["memcheck", "racecheck", "initcheck", "synccheck"],
        help="run each kernel's check under compute-sanitizer with this tool (default memcheck)",
    )


def run(args: argparse.Namespace) -> int:
    """CPU parity table, then (with a GPU) every kernel and model; 1 if anything failed."""
    if args.image_size < 1 or args.batch_size < 1:
        raise ValueError("--image-size and --batch-size must be >= 1")
    torch.set_grad_enabled(False)
    if args.recheck:
        forget_verdicts()
        print(f"Forgot the recorded kernel verdicts ({verdicts_path()}): each kernel checks itself again.")
    failures = 0
    if not args.skip_cpu:
        failures += cpu_parity(args.arch, args.image_size, args.batch_size)
    if torch.cuda.is_available():
        failures += gpu_selftest(args.arch, args.sanitize)
    else:
        print("No GPU is visible: no CUTLASS kernel was exercised.")
    return EXIT_FAILED if failures else EXIT_OK


def cpu_parity(archs: list[str], image_size: int, batch_size: int) -> int:
    """The CPU table; returns the number of models that failed."""
    print(
        f"cutlass-resnet parity with torchvision {torchvision.__version__}, torch {torch.__version__}, "
        f"fp32, CPU reference conv (no CUTLASS kernel runs here), input "
        f"{batch_size}x3x{image_size}x{image_size}.\nMax relative error of the fp32 logits "
        f"against torchvision in float64; each must be at most twice torchvision's own fp32 error."
    )
    header = f"{'model':<18} {'torchvision':>11} {'unfused':>10} {'fused':>10} {'fused-load':>10} {'time':>7}  result"
    print(header)
    print("-" * len(header))
    failures = 0
    for arch in archs:
        p = parity(arch, image_size=image_size, batch_size=batch_size)
        failures += not p.ok
        print(
            f"{arch:<18} {p.torchvision:>11.2e} {p.unfused:>10.2e} {p.fused:>10.2e} {p.fused_on_load:>10.2e} "
            f"{p.seconds:>6.1f}s  {'ok' if p.ok else 'FAIL'}",
            flush=True,
        )
    print(f"{len(archs) - failures} passed, {failures} failed")
    return failures
