"""Every compiled kernel's resources, without a GPU: no register spills in the archs CI builds (sm_80,
sm_90a, read with cuobjdump), and shared memory within the per-block limit of every GPU each kernel may
run on (sm_80 to sm_120, computed from the kernels' own shared storage)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

from cutlass_resnet.ops.kernels import INSTANTIATIONS, REGISTERS
from cutlass_resnet.ops.select import kernel_table
from cutlass_resnet.ops.selfcheck import check_problem

# Largest dynamic shared memory one block may opt into, per compute capability (CUDA programming guide).
SHARED_MEMORY_LIMIT = {
    (8, 0): 163 * 1024,
    (8, 6): 99 * 1024,
    (8, 7): 163 * 1024,
    (8, 9): 99 * 1024,
    (9, 0): 227 * 1024,
    (10, 0): 227 * 1024,
    (12, 0): 99 * 1024,
}


def cuobjdump() -> Path:
    """cuobjdump ships inside the triton package torch depends on (not in a minimal CUDA toolkit)."""
    spec = importlib.util.find_spec("triton")
    path = Path(spec.origin).parent / "backends" / "nvidia" / "bin" / "cuobjdump" if spec else None
    if path is None or not path.exists():
        if os.environ.get("CI") == "true":
            raise AssertionError("cuobjdump not found in the triton package")
        pytest.skip("cuobjdump not found")
    return path


def resource_usage(library: str) -> dict[str, list[dict[str, int]]]:
    """arch -> one {REG, STACK, SHARED, LOCAL, function} per kernel function, from ``cuobjdump -res-usage``."""
    out = subprocess.run([cuobjdump(), "-res-usage", library], capture_output=True, text=True, check=True).stdout
    usage: dict[str, list[dict[str, int]]] = {}
    arch = function = None
    for line in out.splitlines():
        if match := re.match(r"arch = (sm_\w+)", line.strip()):
            arch = match.group(1)
        elif match := re.match(r"Function (\S+):", line.strip()):
            function = match.group(1)
        elif line.strip().startswith("REG:") and arch is not None:
            resources = {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", line)}
            usage.setdefault(arch, []).append({**resources, "function": function})
    return usage


def test_no_kernel_spills_registers(extension):
    usage = resource_usage(extension.library_path())
    sm80 = sum(not k.hopper for k in kernel_table())
    assert len(usage["sm_80"]) >= sm80 and len(usage["sm_90a"]) >= len(kernel_table())
    for arch, functions in usage.items():
        for resources in functions:
            assert resources["STACK"] == 0 and resources["LOCAL"] == 0, f"{arch}: a kernel spills: {resources}"
            assert resources["REG"] <= 255


def test_shared_memory_fits_every_gpu_a_kernel_may_run_on(extension):
    runs_on = {}
    for k in kernel_table():
        shared = k.describe(check_problem(k)).shared_memory
        runs_on[k.name] = [cc for cc in SHARED_MEMORY_LIMIT if k.serves(k.problem_kind, cc)]
        for cc in runs_on[k.name]:
            assert shared <= SHARED_MEMORY_LIMIT[cc], f"{k.name} needs {shared} B of shared memory, sm_{cc} has less"
    assert runs_on["sm90_f16_t128x128x64"] == [(9, 0)]
    assert runs_on["sm80_f16_t128x128_64x3"] == list(SHARED_MEMORY_LIMIT)


def test_the_time_model_counts_each_kernel_s_registers(extension):
    """The registers per thread the time model bounds CTAs per SM with (``kernels.REGISTERS``) are those of the
    kernels built here: each kernel's conv function in its own object file, for sm_80 and sm_90a."""
    folder = Path(extension.library_path()).parent
    objects = {p.name.removesuffix(".cuda.o"): p for p in folder.glob("k*.cuda.o")}
    if not objects:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"{folder} holds no object files: the build keeps them beside its library")
        pytest.skip("the library was copied without its object files")
    built = {}
    for i in INSTANTIATIONS:
        usage = resource_usage(str(objects[i.file.removesuffix(".cu")]))
        targets = ("sm_90a",) if i.sm == 90 else ("sm_80", "sm_90a")
        built[i.name] = {t: next(f["REG"] for f in usage[t] if "splitk_reduce" not in f["function"]) for t in targets}
    assert built == REGISTERS
