"""The self-check's isolation: a kernel's check runs in a child process whose crash or hang is a verdict,
never the user's process's fate."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from cutlass_resnet.ops import build, selfcheck


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_check_process_s_answer_is_its_last_json_line():
    outcome = selfcheck.run_isolated(python('print("loading"); print(\'{"reason": null}\')'), timeout=60)
    assert outcome == {"reason": None}


def test_a_crash_in_the_check_process_is_reported_not_shared():
    outcome = selfcheck.run_isolated(python("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"), timeout=60)
    assert outcome == {"crashed": "was killed by signal 11"}
    outcome = selfcheck.run_isolated(python("raise SystemExit('illegal memory access')"), timeout=60)
    assert outcome == {"crashed": "exited with 1 (illegal memory access)"}


def test_a_hang_in_the_check_process_is_cut_short():
    outcome = selfcheck.run_isolated(python("import time; time.sleep(600)"), timeout=2)
    assert outcome == {"crashed": "did not finish in 2 s (a hang?) and was killed"}


def test_the_child_loads_the_library_and_reaches_the_gpu(extension):
    """End to end through ``python -m cutlass_resnet.ops._check_child``: here, with no GPU, the child gets as far
    as asking CUDA for the device, and its failure becomes the kernel's verdict."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the check would pass")
    reason = selfcheck.isolated_check("sm80_f16_t64x64_64x5", 0, build.library_path(), timeout=300)
    assert reason.startswith("sm80_f16_t64x64_64x5 failed its self-check: the check process exited with 1")


def test_on_a_gpu_the_check_runs_isolated(emulated_gpu, monkeypatch):
    """The user's process never runs a CUDA kernel's check itself: it asks a child process."""
    asked = []
    monkeypatch.setattr(selfcheck, "_device", lambda index: torch.device("cuda", index))
    monkeypatch.setattr(selfcheck, "isolated_check", lambda *args: asked.append(args) or None)
    assert selfcheck.kernel_verdict("sm80_f16_t64x64_64x5", 0) is None
    assert asked == [("sm80_f16_t64x64_64x5", 0, build.library_path())] and emulated_gpu.calls == []
    assert list(selfcheck.read_verdicts().values()) == [""]


def test_the_check_process_imports_this_package_wherever_it_came_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    code = "import json, cutlass_resnet; print(json.dumps({'reason': cutlass_resnet.__file__}))"
    outcome = selfcheck.run_isolated([sys.executable, "-c", code], 60)
    assert outcome["reason"] == str(Path(selfcheck.__file__).resolve().parents[1] / "__init__.py")
