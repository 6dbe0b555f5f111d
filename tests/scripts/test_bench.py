"""scripts/bench.py is ``cutlass-resnet bench``: on the default device (cuda) without a GPU it says so and exits 4."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the benchmark would run")
def test_refuses_without_a_gpu():
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--arch", "resnet18"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 4 and "needs a CUDA GPU" in proc.stderr and "nothing was measured" in proc.stderr


def test_rejects_unknown_arguments():
    proc = subprocess.run([sys.executable, str(BENCH), "--dtype", "fp8"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "invalid choice: 'fp8'" in proc.stderr
