"""The distribution builds a wheel that installs into a fresh virtual environment and imports.

With CUTLASS_RESNET_CUDA_ARCHS set, the wheel carries the compiled kernels, and the installed
package loads them instead of compiling.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import cutlass_resnet

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def build_wheel(tmp_path: Path, **env: str) -> Path:
    """Build from a copy of the source tree, so nothing is written into the checkout."""
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "_C*"),
    )
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(source)],
        check=True,
        capture_output=True,
        timeout=1200,
        env={**os.environ, **env},
    )
    (wheel,) = (tmp_path / "dist").glob("cutlass_resnet-*.whl")
    return wheel


def install(tmp_path: Path, wheel: Path) -> Path:
    """A venv that sees this interpreter's torch (a multi-GB install) but not our source tree."""
    venv.create(tmp_path / "venv", system_site_packages=True, with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--no-index", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return python


def run(python: Path, code: str, tmp_path: Path) -> list[str]:
    env = {**os.environ, "CUTLASS_RESNET_CACHE": str(tmp_path / "cache")}
    check = subprocess.run(
        [python, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True, timeout=600, env=env
    )
    return check.stdout.splitlines()


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


def test_kernels_compiled_at_install_time_are_loaded_without_compiling(tmp_path):
    from cutlass_resnet.ops import build

    if build.cuda_home() is None and os.environ.get("CI") != "true":
        pytest.skip("nvcc is not installed")
    wheel = build_wheel(tmp_path, CUTLASS_RESNET_CUDA_ARCHS="8.0")
    assert "-py3-none-any" not in wheel.name  # a platform wheel: it holds a compiled library
    python = install(tmp_path, wheel)
    library, *names = run(
        python,
        "from cutlass_resnet.ops import build, select; assert build.load(), build.load_error();"
        "print(build.library_path()); [print(k.name) for k in select.kernel_table()]",
        tmp_path,
    )
    assert Path(library).parent.name == "ops" and Path(library).is_relative_to(tmp_path / "venv")
    assert not (tmp_path / "cache" / "kernels").exists()  # nothing was compiled on first use
    expected = sorted("sm" + p.stem[1:] for p in build.sources(["8.0"]) if p.stem.startswith("k80_"))
    assert sorted(names) == expected  # every Sm80 kernel, no Hopper kernel (not built for 9.0a)
