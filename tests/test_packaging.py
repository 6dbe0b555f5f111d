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
        "from cutlass_resnet.ops import build, select; assert build.load(), build.load_error();"
        "print(build.library_path()); [print(k.name) for k in select.kernel_table()]",
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
    assert info["prebuilt_kernels"]["archs"] == ["8.0"] and sorted(info["kernels"]) == expected
    assert not (tmp_path / "cache" / "kernels").exists()


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
