"""The library is found, verified and loaded: the prebuilt one where it fits this torch and GPU, else the cached
build; anything that does not match its record is never loaded, and without nvcc every conv falls back with a reason."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cutlass_resnet.ops import build, library
from cutlass_resnet.ops.select import Problem, kernel_table, select


def test_no_nvcc_means_the_reference_path_with_a_clear_message(monkeypatch):
    monkeypatch.setitem(library._state, "path", None)
    monkeypatch.setitem(library._state, "error", None)
    monkeypatch.setattr(build, "cuda_home", lambda: None)
    with pytest.warns(
        UserWarning, match="CUTLASS kernels unavailable, CUDA convs run aten's convolution: nvcc not found"
    ):
        assert library.load(["8.0"]) is False
    choice = select(Problem(8, 56, 56, 64, 64, 3, 3), torch.float16, (8, 0))
    assert choice.kernel is None and "extension is unavailable: nvcc not found" in choice.reason
    assert 'pip install "cutlass-resnet[jit]"' in choice.reason


def test_no_arch_without_a_gpu_is_an_error(monkeypatch):
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.setitem(library._state, "path", None)
    monkeypatch.setitem(library._state, "error", None)
    with pytest.warns(UserWarning, match="no GPU is visible and no nvcc target was given"):
        assert library.load() is False


@pytest.mark.parametrize(
    ("built", "needed", "runs"),
    [
        ("8.0", "8.0", True),
        ("8.0", "8.6", True),  # sm_80 code runs on every 8.x
        ("8.6", "8.0", False),
        ("8.0", "9.0a", False),
        ("9.0", "9.0a", True),  # sm_90 code (without the wgmma kernels) runs on Hopper
        ("9.0a", "9.0a", True),
        ("9.0a", "10.0", False),  # arch-specific code runs on that arch only
    ],
)
def test_which_build_runs_on_which_gpu(built, needed, runs):
    assert library.target_runs_on(built, needed) is runs


@pytest.fixture
def prebuilt(monkeypatch, tmp_path):
    """A fake install-time build: the info file setup.py writes, next to a (dummy) library."""
    built = tmp_path / "_C.cpython-311-x86_64-linux-gnu.so"
    built.write_bytes(b"not really a library")
    info = {
        "library": built.name,
        "targets": ["8.0", "9.0a"],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "library_file": build.file_record(built),
    }
    monkeypatch.setattr(library, "PREBUILT_INFO", tmp_path / "_C.json")

    def write(**changes):
        (tmp_path / "_C.json").write_text(json.dumps({k: v for k, v in {**info, **changes}.items() if v != "drop"}))
        return str(built)

    return write


def test_prebuilt_library_is_used_when_it_fits(prebuilt):
    built = prebuilt()
    assert library._prebuilt(["8.0"]) == built and library._prebuilt(["8.9", "9.0a"]) == built
    assert library._prebuilt([]) == built  # no GPU: loaded for planning
    assert prebuilt(targets="drop", archs=["8.0"]) == built and library._prebuilt(["8.6"]) == built  # 0.1.0's name


@pytest.mark.parametrize(
    ("changes", "targets", "why"),
    [
        ({"torch": "2.0.0"}, ["8.0"], "it was built for torch 2.0.0, older than the stable ABI"),
        ({"cuda": "12.8"}, ["8.0"], "it was built for CUDA 12.8"),
        ({}, ["10.0"], "it was built for 8.0, 9.0a, not 10.0"),
        ({"library": "gone.so"}, ["8.0"], "gone.so is missing"),
        ({"library_file": {"size": 3, "sha256": "0" * 64}}, ["8.0"], "has 20 bytes, but 3 were built"),
        ({"library_file": {"size": 20, "sha256": "0" * 64}}, ["8.0"], "does not match the sha256 recorded"),
        ({"library_file": None}, ["8.0"], "has no record of its size and sha256"),
    ],
)
def test_prebuilt_library_that_does_not_fit_is_skipped_with_the_reason(prebuilt, changes, targets, why):
    prebuilt(**changes)
    with pytest.warns(UserWarning, match=f"not using the prebuilt kernels \\(.*{re.escape(why)}"):
        assert library._prebuilt(targets) is None


def test_the_prebuilt_library_loads_under_any_torch_of_the_stable_abi(extension, tmp_path):
    """A wheel built with one torch serves every torch from 2.10 on with the same CUDA major, through load(), the
    path a first conv takes: no compiler is asked for (each in a fresh process: a library loads once)."""
    built = tmp_path / "_C.so"
    built.write_bytes(Path(extension.library_path()).read_bytes())
    code = (
        "import sys, warnings; from pathlib import Path; from cutlass_resnet.ops import build, library as l; "
        "l.PREBUILT_INFO = Path(sys.argv[1]); build.build = lambda *a, **k: sys.exit('compiled instead'); "
        "warnings.simplefilter('error'); assert l.load(['9.0a']), l.load_error(); print(l.library_path())"
    )
    for built_with in ("2.11.0+cu130", "2.99.0"):
        info = {"library": built.name, "targets": ["8.0", "9.0a"], "torch": built_with, "cuda": torch.version.cuda}
        (tmp_path / "_C.json").write_text(json.dumps({**info, "library_file": build.file_record(built)}))
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "_C.json")], capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0 and out.stdout.strip() == str(built), out.stderr[-2000:]


def test_no_prebuilt_library_means_jit(monkeypatch, tmp_path):
    monkeypatch.setattr(library, "PREBUILT_INFO", tmp_path / "_C.json")
    assert library._prebuilt(["8.0"]) is None


def test_a_truncated_real_library_is_never_loaded(extension, tmp_path):
    """Loading a truncated .so kills the process with SIGBUS: plan(), info and load() must check it first."""
    source = build.cache_dir(["8.0", "9.0a"])
    cache = tmp_path / "cache"
    copy = cache / "kernels" / source.name
    shutil.copytree(source, copy)
    built = copy / build.LIBRARY_NAME
    built.write_bytes(built.read_bytes()[: built.stat().st_size // 2])
    env = {**os.environ, "CUTLASS_RESNET_CACHE": str(cache)}
    code = (
        "from cutlass_resnet.ops import build, library; build.cuda_home = lambda: None;"
        "print(library.load(['8.0', '9.0a'])); print(library.load_error())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    loaded, error = proc.stdout.splitlines()
    assert loaded == "False" and "has" in error and "were built (truncated or replaced)" in error
    assert f"delete {copy}" in error
    proc = subprocess.run(
        [sys.executable, "-m", "cutlass_resnet", "info", "--json"], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["kernels"] == []


def test_torch_cuda_arch_list_is_the_default_target_list(monkeypatch):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    assert library.default_targets() == ["8.0", "9.0a"]
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "Kepler")
    with pytest.raises(ValueError, match="'Kepler' is not an nvcc target like 8.0"):
        library.default_targets()


@pytest.mark.slow
def test_the_same_library_loads_under_another_torch(extension, tmp_path):
    """torch 2.13.0 (a CPU build) loads the library built here against torch 2.14.1, and its host side answers
    as here: the kernel table, CUTLASS's can_implement and the launch shapes of the zoo's convs."""
    import site
    import sysconfig
    import venv

    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "torch==2.13.0"], capture_output=True, text=True
    )
    if install.returncode != 0:
        if os.environ.get("CI") == "true":
            raise AssertionError(install.stdout + install.stderr)
        pytest.skip("torch 2.13.0 cannot be installed here")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    parents = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"]])
    (Path(purelib) / "_parent_site.pth").write_text("\n".join(parents) + "\n")  # torch's own dependencies
    problems = [Problem(1, 56, 56, 64, 256, 1, 1), Problem(8, 14, 14, 256, 256, 3, 3, padding=(1, 1))]
    code = (
        "import json, sys, torch\n"
        f"torch.ops.load_library({extension.library_path()!r})\n"
        "o = torch.ops.cutlass_resnet_C\n"
        "problems = json.loads(sys.argv[1])\n"
        "table = [(n, o.kernel_info(i), [o.can_implement(i, p) for p in problems])\n"
        "         for i, n in enumerate(o.kernels())]\n"
        "print(json.dumps({'torch': torch.__version__, 'table': table}))\n"
    )
    lists = json.dumps([p.as_list() for p in problems])
    proc = subprocess.run([python, "-c", code, lists], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    there = json.loads(proc.stdout.strip().splitlines()[-1])
    assert there["torch"].startswith("2.13.0") and torch.__version__.startswith("2.14")
    here = [
        (k.name, list(torch.ops.cutlass_resnet_C.kernel_info(k.index)), [k.can_implement(p) for p in problems])
        for k in kernel_table()
    ]
    assert [tuple(row) for row in there["table"]] == [(n, i, s) for n, i, s in here]
