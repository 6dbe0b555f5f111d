"""The distribution builds a wheel that installs into a fresh virtual environment and imports.

With CUTLASS_RESNET_CUDA_ARCHS set, the wheel carries the compiled kernels, and the installed
package loads them instead of compiling.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

import cutlass_resnet

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def checked(command: list, **kwargs) -> subprocess.CompletedProcess:
    """Run ``command``; on failure, the assertion shows what it printed."""
    proc = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, command))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )
    return proc


def build_wheel(tmp_path: Path, **env: str) -> Path:
    """Build from a copy of the source tree, so nothing is written into the checkout."""
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "_C*"),
    )
    command = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp_path / "dist", source]
    clean = {k: v for k, v in os.environ.items() if k not in ("TORCH_CUDA_ARCH_LIST", "CUTLASS_RESNET_CUDA_ARCHS")}
    checked(command, timeout=1200, env={**clean, **env})
    (wheel,) = (tmp_path / "dist").glob("cutlass_resnet-*.whl")
    return wheel


def install(tmp_path: Path, wheel: Path) -> Path:
    """A fresh venv that sees the packages of the interpreter running the tests (torch is a multi-GB install)
    but not our source tree: this interpreter's site-packages go on its path through a .pth file, which
    works whether the tests run in a venv or not (system_site_packages would see the base interpreter's)."""
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    purelib = checked([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    ours = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(purelib) / "_tests_parent_site.pth").write_text("\n".join(ours) + "\n")
    checked([python, "-m", "pip", "install", "--no-index", "--no-deps", wheel], timeout=600)
    return python


def run(python: Path, code: str, tmp_path: Path) -> list[str]:
    env = {**os.environ, "CUTLASS_RESNET_CACHE": str(tmp_path / "cache")}
    return checked([python, "-c", code], cwd=tmp_path, timeout=600, env=env).stdout.splitlines()


def test_wheel_installs_into_a_fresh_venv_and_imports(tmp_path):
    wheel = build_wheel(tmp_path)
    assert wheel.name.startswith(f"cutlass_resnet-{cutlass_resnet.__version__}-py3-none-any")
    python = install(tmp_path, wheel)
    location, shape = run(
        python,
        "import cutlass_resnet, torch; m = cutlass_resnet.resnet18(num_classes=3).eval();"
        "print(cutlass_resnet.__file__); print(tuple(m(torch.randn(1, 3, 16, 16)).shape))",
        tmp_path,
    )
    assert Path(location).is_relative_to(tmp_path / "venv") and shape == "(1, 3)"


def release_wheel(tmp_path: Path, archs: str) -> Path:
    """scripts/build_wheel.sh for ``archs``, run on a copy of the source tree."""
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__"))
    clean = {k: v for k, v in os.environ.items() if k != "TORCH_CUDA_ARCH_LIST"}
    env = {**clean, "CUTLASS_RESNET_CUDA_ARCHS": archs}
    checked(["bash", source / "scripts" / "build_wheel.sh", tmp_path / "dist"], timeout=1800, env=env)
    (wheel,) = (tmp_path / "dist").glob("cutlass_resnet-*.whl")
    return wheel


def test_release_wheel_is_loaded_without_compiling_and_uses_the_stable_abi(tmp_path):
    """The release script's wheel (kernels for 8.0 here; the script's default is every arch): manylinux-tagged,
    its library on the stable ABI with the CUDA runtime linked in, found and loaded without compiling."""
    from cutlass_resnet.ops import build

    if build.cuda_home() is None and os.environ.get("CI") != "true":
        pytest.skip("nvcc is not installed")
    wheel = release_wheel(tmp_path, "8.0")
    assert "-manylinux_" in wheel.name  # a platform wheel, repaired: it holds a compiled library
    python = install(tmp_path, wheel)
    library, *names = run(
        python,
        "from cutlass_resnet.ops import library, select; assert library.load(), library.load_error();"
        "print(library.library_path()); [print(k.name) for k in select.kernel_table()]",
        tmp_path,
    )
    assert Path(library).parent.name == "ops" and Path(library).is_relative_to(tmp_path / "venv")
    undefined = checked(["nm", "-D", "--undefined-only", library]).stdout.split()
    assert not [s for s in undefined if s.startswith(("_ZN3c10", "_ZN2at", "_ZN5torch"))]
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", checked(["readelf", "-d", library]).stdout)
    assert set(needed) <= {
        "libc10.so",
        "libtorch_cpu.so",
        "libstdc++.so.6",
        "libgcc_s.so.1",
        "libc.so.6",
        "libm.so.6",
        "ld-linux-x86-64.so.2",
    }, needed
    assert not (tmp_path / "cache" / "kernels").exists()  # nothing was compiled on first use
    expected = sorted("sm" + p.stem[1:] for p in build.sources(["8.0"]) if p.stem.startswith("k80_"))
    assert sorted(names) == expected  # every Sm80 kernel, no Hopper kernel (not built for 9.0a)
    # No toolkit in sight: the installed kernels are found all the same, and info compiles nothing.
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "nvcc").exists())
    path = os.pathsep.join([str(python.parent), path])
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")}
    env.update(PATH=path, CUTLASS_RESNET_CACHE=str(tmp_path / "cache"))
    info = json.loads(checked(["cutlass-resnet", "info", "--json"], cwd=tmp_path, timeout=300, env=env).stdout)
    assert info["prebuilt_kernels"]["targets"] == ["8.0"] and sorted(info["kernels"]) == expected
    assert not (tmp_path / "cache" / "kernels").exists()


OLDEST_TORCH_CHECK = """
import json, sys, torch, torchvision
import torch.nn.functional as F
import cutlass_resnet as cr

CL = torch.channels_last
g = torch.Generator().manual_seed(0)
x = torch.randn(2, 16, 9, 9, generator=g).contiguous(memory_format=CL)
w = (torch.randn(8, 16, 3, 3, generator=g) / 12).contiguous(memory_format=CL)
b, r = torch.randn(8, generator=g), torch.randn(2, 8, 9, 9, generator=g).contiguous(memory_format=CL)
y = torch.ops.cutlass_resnet.conv2d_fprop(x, w, b, r, [1, 1], [1, 1], [1, 1], 1, True)
expected = (F.conv2d(x.double(), w.double(), b.double(), 1, 1) + r.double()).relu()
xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
grads = torch.autograd.gradcheck(
    lambda a, c: torch.ops.cutlass_resnet.conv2d_fprop(a, c, None, None, [1, 1], [1, 1], [1, 1], 1, False), (xd, wd)
)
reference = torchvision.models.resnet18(num_classes=10).eval()
model = cr.resnet18(num_classes=10).eval()
model.load_state_dict(reference.state_dict())
images = torch.randn(2, 3, 32, 32, generator=g)
with torch.no_grad():
    theirs = reference.double()(images.double())
    unfused = (model(images).double() - theirs).abs().max().item()
    fused = (cr.fuse_bn(model)(images).double() - theirs).abs().max().item()
    fp32 = (reference.float()(images).double() - theirs).abs().max().item()
op = (y.double() - expected).abs().max().item()
versions = dict(torch=torch.__version__, torchvision=torchvision.__version__)
torch.ops.load_library(sys.argv[1])  # the kernels' library, built against the newest torch
ops = torch.ops.cutlass_resnet_C
problem = [8, 256, 14, 14, 256, 3, 3, 1, 1, 1, 1, 1, 1, 1]  # the conv record: N, C, H, W, K, R, S, ...
kernels = [(name, ops.can_implement(i, problem)) for i, name in enumerate(ops.kernels())]
print(json.dumps(dict(**versions, op=op, gradcheck=grads, unfused=unfused, fused=fused, fp32=fp32, kernels=kernels)))
"""


def test_the_package_runs_under_the_oldest_torch_it_claims(extension, tmp_path):
    """pyproject's torch floor (and the torchvision of that torch) in a fresh venv: the op against float64, its
    gradients, a model fused and unfused against torchvision, on the CPU; and the kernels' library built here
    against the newest torch loads and answers as here."""
    from cutlass_resnet.ops.select import Problem, kernel_table

    pyproject = (ROOT / "pyproject.toml").read_text()
    torch_floor = re.search(r'"torch>=([0-9.]+)"', pyproject).group(1)
    vision_floor = re.search(r'"torchvision>=([0-9.]+)"', pyproject).group(1)
    major, minor = (int(v) for v in torch_floor.split(".")[:2])
    assert vision_floor == f"0.{minor + 15}" and major == 2, "torchvision 0.N pairs with torch 2.(N-15)"
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    pins = [f"torch=={torch_floor}.0", f"torchvision=={vision_floor}.0"]  # the registry's CUDA builds, as users get
    command = [python, "-m", "pip", "install", "-q", "--isolated", "--no-deps", *pins]  # --isolated: no local +cpu
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        if os.environ.get("CI") == "true":
            raise AssertionError(proc.stdout + proc.stderr)
        pytest.skip(f"{' '.join(pins)} cannot be installed here")
    purelib = checked([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    parents = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"]])
    (Path(purelib) / "_parent_site.pth").write_text("\n".join(parents) + "\n")  # the other dependencies
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUTLASS_RESNET_CACHE": str(tmp_path / "cache")}
    library = extension.library_path()
    out = checked([python, "-c", OLDEST_TORCH_CHECK, library], cwd=tmp_path, timeout=600, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["torch"].startswith(torch_floor + ".") and result["torchvision"].startswith(vision_floor + ".")
    assert result["op"] < 1e-5 and result["gradcheck"]
    assert max(result["unfused"], result["fused"]) <= 2 * result["fp32"] + 1e-6
    problem = Problem(8, 14, 14, 256, 256, 3, 3, padding=(1, 1))
    assert problem.as_list() == [8, 256, 14, 14, 256, 3, 3, 1, 1, 1, 1, 1, 1, 1]
    assert [tuple(k) for k in result["kernels"]] == [(k.name, k.can_implement(problem)) for k in kernel_table()]


def test_sdist_holds_what_the_tests_and_docs_need(tmp_path):
    """The sdist carries the whole test suite (helpers included), docs, scripts and hubconf.py; its tests collect."""
    import tarfile

    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__"))
    checked([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", tmp_path / "dist", source])
    (sdist,) = (tmp_path / "dist").glob("cutlass_resnet-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        archive.extractall(tmp_path / "unpacked", filter="data")
    tests = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py")}
    wanted = {"LICENSE", "hubconf.py", "setup.py", "docs/architecture.md", "scripts/bench.py", "weights/README.md"}
    assert tests | wanted | {"cutlass_resnet/ops/csrc/conv_api.h", "cutlass_resnet/data/chelsea.jpg"} <= names
    assert not any("__pycache__" in name or name.endswith(".so") for name in names)
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    proc = checked([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"], cwd=unpacked)
    last = proc.stdout.strip().splitlines()[-1]
    assert "tests collected" in last and "error" not in last and int(last.split()[0]) > 300, last
