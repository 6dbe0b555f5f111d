"""The self-check, ``python -m cutlass_resnet selftest``, through its real entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from conftest import emulated_launch

from cutlass_resnet.cli import selftest
from cutlass_resnet.ops.select import kernel_table
from cutlass_resnet.ops.selfcheck import verdicts_path


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "cutlass_resnet", "selftest", *args], capture_output=True, text=True, timeout=600
    )


def test_selftest_prints_parity_and_passes():
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


def test_kernel_sweep_runs_every_kernel_on_the_zoo_shapes(emulated_gpu):
    results = selftest.kernel_sweep(torch.device("cpu"), (9, 0), image_size=32)  # Hopper: every kernel applies
    assert {k for k, _, _ in results} == {k.name for k in kernel_table()}
    assert all(reason is None for _, _, reason in results)
    assert all((p.groups > 1) == ("group" in k) for k, p, _ in results)
    assert not verdicts_path().exists()  # nothing failed, nothing recorded


def test_kernel_sweep_records_a_wrong_kernel(emulated_gpu):
    def wrong_bf16(kernel, x, weight, bias, residual, *conv):
        y = emulated_launch(kernel, x, weight, bias, residual, *conv)
        return y * 1.01 if "bf16_t128x64" in kernel.name else y

    emulated_gpu.use(wrong_bf16)
    results = selftest.kernel_sweep(torch.device("cpu"), (8, 0), image_size=32)
    failed = {k for k, _, reason in results if reason}
    assert failed == {"sm80_bf16_t128x64_64x3"}
    assert not any(k.startswith("sm90_") for k, _, _ in results)  # sm_90a code is not run on sm_80
    records = json.loads(verdicts_path().read_text())
    assert all("sm80_bf16_t128x64_64x3" in key for key, reason in records.items() if reason)
    assert records


def test_without_a_gpu_says_no_kernel_ran():
    proc = run("--arch", "resnet18", "--image-size", "16")
    assert proc.returncode == 0 and "No GPU is visible: no CUTLASS kernel was exercised." in proc.stdout


def test_recheck_forgets_the_recorded_verdicts(tmp_path):
    verdicts = tmp_path / "kernels" / "verdicts.json"
    verdicts.parent.mkdir()
    verdicts.write_text(json.dumps({"GPU|sm_80|build|sm80_f16_t64x64_64x5": "failed its self-check"}))
    proc = subprocess.run(
        [sys.executable, "-m", "cutlass_resnet", "selftest", "--recheck", "--arch", "resnet18", "--image-size", "16"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "CUTLASS_RESNET_CACHE": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    assert f"Forgot the recorded kernel verdicts ({verdicts})" in proc.stdout and not verdicts.exists()


def test_gpu_matrix_checks_each_kernel_in_a_child_and_records_it(emulated_gpu, monkeypatch, capsys):
    asked = []

    def child(name, index, library, sanitizer=None):
        asked.append((name, sanitizer))
        return f"{name} failed its self-check: stand-in" if name == "sm80_bf16_t64x64_64x5" else None

    monkeypatch.setattr(selftest, "isolated_check", child)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    failures = selftest.matrix_checks(torch.device("cuda", 0), sanitizer="racecheck")
    out = capsys.readouterr().out
    sm80 = sorted(k.name for k in kernel_table() if k.name.startswith("sm80_"))
    assert sorted(name for name, _ in asked) == sorted([*sm80, "max_pool2d"]) and {s for _, s in asked} == {"racecheck"}
    assert failures == 1 and "under compute-sanitizer --tool racecheck" in out
    assert "sm80_f16_t128x64_64x3" in out and "cases" in out
    verdicts = json.loads(verdicts_path().read_text())
    assert sorted(v for v in verdicts.values() if v) == ["sm80_bf16_t64x64_64x5 failed its self-check: stand-in"]


def test_sanitize_wraps_the_child_in_compute_sanitizer(monkeypatch):
    from cutlass_resnet.ops import selfcheck

    commands = []
    monkeypatch.setattr(selfcheck, "compute_sanitizer", lambda: "/cuda/bin/compute-sanitizer")
    monkeypatch.setattr(
        selfcheck, "run_isolated", lambda command, timeout: commands.append(command) or {"reason": None}
    )
    assert selfcheck.isolated_check("k", 0, "/lib.so", sanitizer="memcheck") is None
    assert commands[0][:5] == ["/cuda/bin/compute-sanitizer", "--tool", "memcheck", "--error-exitcode", "86"]
    assert commands[0][-4:] == ["cutlass_resnet.ops._check_child", "k", "0", "/lib.so"]
