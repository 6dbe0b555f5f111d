"""The main job, ``python -m cutlass_resnet``, through its real entry point."""

from __future__ import annotations

import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "cutlass_resnet", *args], capture_output=True, text=True, timeout=600)


def test_main_job_prints_parity_and_passes():
    proc = run("--arch", "resnet18", "resnext50_32x4d", "--image-size", "32")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(("resnet18 ", "resnext50_32x4d "))]
    assert [r[0] for r in rows] == ["resnet18", "resnext50_32x4d"]
    for row in rows:
        torchvision_error, *ours = map(float, row[1:5])
        assert 0 < torchvision_error < 1e-4 and all(e <= 2 * torchvision_error for e in ours)
        assert row[-1] == "ok"
    assert "2 passed, 0 failed" in proc.stdout
    assert "no CUTLASS kernel runs here" in proc.stdout


def test_bad_arguments_exit_2_with_a_message():
    proc = run("--arch", "resnet7")
    assert proc.returncode == 2 and "invalid choice: 'resnet7'" in proc.stderr
    proc = run("--image-size", "0")
    assert proc.returncode == 2 and "--image-size and --batch-size must be >= 1" in proc.stderr
