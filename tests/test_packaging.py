"""The distribution builds a wheel that installs into a fresh virtual environment and imports."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

import cutlass_resnet

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_wheel_installs_into_a_fresh_venv_and_imports(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = (tmp_path / "dist").glob("cutlass_resnet-*.whl")
    assert wheel.name.startswith(f"cutlass_resnet-{cutlass_resnet.__version__}-py3-none-any")
    # The venv sees this interpreter's torch (a multi-GB install) but not our source tree.
    venv.create(tmp_path / "venv", system_site_packages=True, with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--no-index", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    check = subprocess.run(
        [
            python,
            "-c",
            "import cutlass_resnet, torch; m = cutlass_resnet.resnet18(num_classes=3).eval();"
            "print(cutlass_resnet.__file__); print(tuple(m(torch.randn(1, 3, 16, 16)).shape))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    location, shape = check.stdout.splitlines()
    assert Path(location).is_relative_to(tmp_path / "venv") and shape == "(1, 3)"
