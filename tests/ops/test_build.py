"""The extension compiles and links for sm_80 and sm_90a here, with no GPU, and fails soft without nvcc."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cutlass_resnet.ops import build
from cutlass_resnet.ops.select import Problem, kernel_table, select


def test_extension_compiled_for_sm80_and_sm90a(extension):
    library = Path(extension.library_path())
    assert library.is_relative_to(build.cache_root()) and library.name == "cutlass_resnet_C.so"
    data = library.read_bytes()
    units = len(build.sources(["8.0", "9.0a"])) - 1  # every .cu; binding.cpp is host code
    assert len(re.findall(rb"sm_80\b", data)) >= units
    assert len(re.findall(rb"sm_90a", data)) >= units
    names = [k.name for k in kernel_table()]
    kernel_files = [p for p in build.sources(["8.0", "9.0a"]) if p.stem.startswith(("k80_", "k90_"))]
    assert sorted(names) == sorted("sm" + p.stem[1:] for p in kernel_files)
    assert any(name.startswith("sm90_") for name in names)
    assert not any(p.stem.startswith("k90_") for p in build.sources(["8.0"]))  # no Hopper code without sm_90a


def test_cache_key_names_what_changes_the_binary(monkeypatch, tmp_path):
    monkeypatch.setenv("CUTLASS_RESNET_CACHE", str(tmp_path))
    key = build.cache_dir(["8.0", "9.0a"]).name
    assert build.cache_dir(["8.0", "9.0a"]).parent == tmp_path / "kernels"
    for part in ("cr0.", "cutlass4.", f"torch{torch.__version__}".replace("+", "_"), "sm80_90a"):
        assert part in key
    assert build.cache_dir(["9.0a"]) != build.cache_dir(["8.0", "9.0a"])


def test_nvcc_arch_of_hopper_is_90a():
    assert build.nvcc_arch((9, 0)) == "9.0a" and build.nvcc_arch((8, 6)) == "8.6" and build.nvcc_arch((10, 0)) == "10.0"


def test_no_nvcc_means_the_reference_path_with_a_clear_message(monkeypatch):
    monkeypatch.setitem(build._state, "path", None)
    monkeypatch.setitem(build._state, "error", None)
    monkeypatch.setattr(build, "cuda_home", lambda: None)
    with pytest.warns(
        UserWarning, match="CUTLASS kernels unavailable, CUDA convs run aten's convolution: nvcc not found"
    ):
        assert build.load(["8.0"]) is False
    choice = select(Problem(8, 56, 56, 64, 64, 3, 3), torch.float16, (8, 0))
    assert choice.kernel is None and "extension is unavailable: nvcc not found" in choice.reason
    assert 'pip install "cutlass-resnet[jit]"' in choice.reason


def test_no_arch_without_a_gpu_is_an_error(monkeypatch):
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.setitem(build._state, "path", None)
    monkeypatch.setitem(build._state, "error", None)
    with pytest.warns(UserWarning, match="no GPU is visible and no arch was given"):
        assert build.load() is False


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
    assert build.nvcc_arch_runs_on(built, needed) is runs


@pytest.fixture
def prebuilt(monkeypatch, tmp_path):
    """A fake install-time build: the info file setup.py writes, next to a (dummy) library."""
    library = tmp_path / "_C.cpython-311-x86_64-linux-gnu.so"
    library.write_bytes(b"not really a library")
    info = {
        "library": library.name,
        "archs": ["8.0", "9.0a"],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "library_file": build.file_record(library),
    }
    monkeypatch.setattr(build, "PREBUILT_INFO", tmp_path / "_C.json")

    def write(**changes):
        (tmp_path / "_C.json").write_text(json.dumps({**info, **changes}))
        return str(library)

    return write


def test_prebuilt_library_is_used_when_it_fits(prebuilt):
    library = prebuilt()
    assert build._prebuilt(["8.0"]) == library and build._prebuilt(["8.9", "9.0a"]) == library
    assert build._prebuilt([]) == library  # no GPU: loaded for planning


@pytest.mark.parametrize(
    ("changes", "archs", "why"),
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
def test_prebuilt_library_that_does_not_fit_is_skipped_with_the_reason(prebuilt, changes, archs, why):
    prebuilt(**changes)
    with pytest.warns(UserWarning, match=f"not using the prebuilt kernels \\(.*{re.escape(why)}"):
        assert build._prebuilt(archs) is None


def test_the_prebuilt_library_loads_under_any_torch_of_the_stable_abi(extension, tmp_path):
    """A wheel built with one torch serves every torch from 2.10 on with the same CUDA major, through load(), the
    path a first conv takes: no compiler is asked for (each in a fresh process: a library loads once)."""
    library = tmp_path / "_C.so"
    library.write_bytes(Path(extension.library_path()).read_bytes())
    code = (
        "import sys, warnings; from pathlib import Path; from cutlass_resnet.ops import build; "
        "build.PREBUILT_INFO = Path(sys.argv[1]); build.build = lambda *a, **k: sys.exit('compiled instead'); "
        "warnings.simplefilter('error'); assert build.load(['9.0a']), build.load_error(); print(build.library_path())"
    )
    for built_with in ("2.11.0+cu130", "2.99.0"):
        info = {"library": library.name, "archs": ["8.0", "9.0a"], "torch": built_with, "cuda": torch.version.cuda}
        (tmp_path / "_C.json").write_text(json.dumps({**info, "library_file": build.file_record(library)}))
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "_C.json")], capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0 and out.stdout.strip() == str(library), out.stderr[-2000:]


def test_no_prebuilt_library_means_jit(monkeypatch, tmp_path):
    monkeypatch.setattr(build, "PREBUILT_INFO", tmp_path / "_C.json")
    assert build._prebuilt(["8.0"]) is None


def test_setup_py_builds_what_the_jit_build_builds():
    setup = (Path(__file__).resolve().parents[2] / "setup.py").read_text()
    assert "build.extension_args(archs)" in setup and "build.source_digest()" in setup
    assert "build.parse_arch_list(" in setup and "build.linkable_toolkit(home)" in setup
    args = build.extension_args(["8.0"])
    assert [Path(s).name for s in args["sources"]] == [p.name for p in build.sources(["8.0"])]
    assert "-DCR_WITH_SM90" not in args["nvcc"] and "-DCR_WITH_SM90" in build.extension_args(["9.0a"])["nvcc"]


def test_first_build_shows_a_progress_bar_on_a_terminal(monkeypatch, tmp_path):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with build._progress(tmp_path, total=3):
        (tmp_path / "binding.o").touch()
        (tmp_path / "k80_f16_t64x64_64x5.cuda.o").touch()
        time.sleep(1.5)  # the bar looks at the folder once a second
    assert "compiling CUTLASS kernels" in terminal.getvalue() and "2/3" in terminal.getvalue()


@pytest.fixture
def compiler(monkeypatch, tmp_path):
    """build() with a stand-in compiler that writes a small library, and a loader that records what it loads."""
    monkeypatch.setenv("CUTLASS_RESNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "cuda_home", lambda: "/stand-in/cuda")
    runs = SimpleNamespace(compiled=[], loaded=[])

    def compile(archs, build_dir, home, verbose):
        runs.compiled.append(build_dir)
        (build_dir / "build.ninja").write_text("")
        (build_dir / build.LIBRARY_NAME).write_bytes(b"\x7fELF" + bytes(4096))
        runs.loaded.append(str(build_dir / build.LIBRARY_NAME))  # torch's JIT build loads what it built
        return build_dir / build.LIBRARY_NAME

    monkeypatch.setattr(build, "_compile", compile)
    monkeypatch.setattr(torch.ops, "load_library", runs.loaded.append)
    return runs


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_a_build_compiles_in_a_private_folder_and_is_renamed_into_place(compiler):
    target = build.cache_dir(["8.0"])
    (target.parent).mkdir(parents=True)
    leftover = target.parent / f".{target.name}.build-killed"  # what a killed build leaves
    leftover.mkdir()
    (leftover / "half.o").write_bytes(b"x")
    assert build.build(["8.0"]) == str(target / build.LIBRARY_NAME)
    (scratch,) = compiler.compiled
    assert scratch.parent == target.parent and scratch.name.startswith(f".{target.name}.build-")
    assert not scratch.exists() and not leftover.exists()
    assert sorted(p.name for p in target.iterdir()) == ["build.ninja", "cutlass_resnet_C.so", "manifest.json"]
    manifest = json.loads((target / "manifest.json").read_text())
    data = (target / build.LIBRARY_NAME).read_bytes()
    assert manifest == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert compiler.loaded == [str(scratch / build.LIBRARY_NAME)]
    assert sorted(p.name for p in target.parent.iterdir()) == [f".{target.name}.lock", target.name]
    build.build(["8.0"])  # complete: loaded, not compiled again
    assert len(compiler.compiled) == 1 and compiler.loaded[1:] == [str(target / build.LIBRARY_NAME)]


def test_a_complete_build_loads_without_nvcc_and_writes_nothing(compiler, monkeypatch):
    build.build(["8.0"])
    root = build.cache_root()
    before = tree(root)
    monkeypatch.setattr(build, "cuda_home", lambda: None)
    assert build.build(["8.0"]) == str(build.cache_dir(["8.0"]) / build.LIBRARY_NAME)
    assert tree(root) == before and len(compiler.compiled) == 1
    assert build.find_library(["8.0"]) == str(build.cache_dir(["8.0"]) / build.LIBRARY_NAME)


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-manifest"])
def test_a_damaged_build_is_rebuilt_never_loaded(compiler, damage):
    target = build.cache_dir(["8.0"])
    build.build(["8.0"])
    library = target / build.LIBRARY_NAME
    if damage == "truncate":
        library.write_bytes(library.read_bytes()[:100])
    elif damage == "flip":
        library.write_bytes(b"\x7fELF" + bytes(4095) + b"\x01")
    else:
        (target / "manifest.json").unlink()
    assert build.find_library(["8.0"]) is None
    build.build(["8.0"])
    assert (
        len(compiler.compiled) == 2
        and build.why_unloadable(library, json.loads((target / "manifest.json").read_text())) is None
    )


def test_a_damaged_build_without_nvcc_names_the_folder_to_delete(compiler, monkeypatch):
    target = build.cache_dir(["8.0"])
    build.build(["8.0"])
    (target / build.LIBRARY_NAME).write_bytes(b"\x7fELF")
    monkeypatch.setattr(build, "cuda_home", lambda: None)
    with pytest.raises(
        RuntimeError, match=f"nvcc not found.*has 4 bytes, but 4100 were built.*delete {re.escape(str(target))}"
    ):
        build.build(["8.0"])
    assert len(compiler.loaded) == 1  # only what the first build loaded


def test_a_truncated_real_library_is_never_loaded(extension, tmp_path):
    """Loading a truncated .so kills the process with SIGBUS: plan(), info and load() must check it first."""
    source = build.cache_dir(["8.0", "9.0a"])
    cache = tmp_path / "cache"
    copy = cache / "kernels" / source.name
    shutil.copytree(source, copy)
    library = copy / build.LIBRARY_NAME
    library.write_bytes(library.read_bytes()[: library.stat().st_size // 2])
    env = {**os.environ, "CUTLASS_RESNET_CACHE": str(cache)}
    code = (
        "from cutlass_resnet.ops import build; build.cuda_home = lambda: None;"
        "print(build.load(['8.0', '9.0a'])); print(build.load_error())"
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


@pytest.mark.parametrize(
    ("text", "archs"),
    [
        ("8.0;9.0a", ["8.0", "9.0a"]),
        ("8.0 8.6+PTX, 9.0", ["8.0", "8.6", "9.0a"]),  # 9.0 builds the Hopper kernels, which need 9.0a
        ("10.0a;12.0;8.0;8.0", ["10.0a", "12.0", "8.0"]),
        ("", []),
    ],
)
def test_arch_lists_are_read_as_torch_reads_them(text, archs):
    assert build.parse_arch_list(text) == archs


def test_torch_cuda_arch_list_is_the_default_target_list(monkeypatch):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    assert build.default_nvcc_archs() == ["8.0", "9.0a"]
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "Kepler")
    with pytest.raises(ValueError, match="'Kepler' is not an arch like 8.0"):
        build.default_nvcc_archs()


def test_nvcc_from_nvidia_wheels_compiles_and_links_an_extension(monkeypatch, tmp_path):
    """No CUDA_HOME, no nvcc on PATH, no /usr/local/cuda: the build finds NVIDIA's nvcc wheels (the ``jit`` extra)
    in site-packages, gives the linker the libcudart.so those wheels lack, and a CUDA extension builds with them."""
    for name in ("CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(name, raising=False)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "nvcc").exists())
    monkeypatch.setenv("PATH", path)
    monkeypatch.setattr(build, "SYSTEM_CUDA", str(tmp_path / "no-cuda"))
    monkeypatch.setenv("CUTLASS_RESNET_CACHE", str(tmp_path / "cache"))
    home = build.cuda_home()
    if home is None:
        if os.environ.get("CI") == "true":
            raise AssertionError("NVIDIA's nvcc wheels are not installed: the test extra brings them")
        pytest.skip("NVIDIA's nvcc wheels are not installed")
    assert Path(home).parts[-2:] == ("nvidia", f"cu{torch.version.cuda.split('.')[0]}")
    toolkit = build.linkable_toolkit(home)
    assert (Path(toolkit) / "lib" / "libcudart.so").exists() and build.linkable_toolkit(home) == toolkit
    (tmp_path / "tiny.cu").write_text(
        "__global__ void one(float* x) { x[0] = 1.f; }\n"
        'extern "C" int launch_one(float* x) { one<<<1, 1>>>(x); return int(cudaGetLastError()); }\n'
    )
    code = (
        f"import os; os.environ['CUDA_HOME'] = {toolkit!r}; os.environ['TORCH_CUDA_ARCH_LIST'] = '8.0'\n"
        "import torch.utils.cpp_extension as c\n"
        f"c.CUDA_HOME = {toolkit!r}\n"
        f"c.load('tiny', [{str(tmp_path / 'tiny.cu')!r}], build_directory={str(tmp_path)!r}, is_python_module=False)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=os.environ)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "tiny.so").exists()


def test_the_library_uses_the_stable_abi_only(extension):
    """No C++ symbol of libtorch (c10::, at::, torch::): one library serves every torch from 2.10 on. Nor does it
    need libtorch_cuda.so or libcudart.so: the CUDA runtime is linked in, and a CPU build of torch loads it."""
    library = extension.library_path()
    undefined = subprocess.run(["nm", "-D", "--undefined-only", library], capture_output=True, text=True, check=True)
    unstable = [s for s in undefined.stdout.split() if s.startswith(("_ZN3c10", "_ZN2at", "_ZN5torch"))]
    assert not unstable, unstable[:5]
    dynamic = subprocess.run(["readelf", "-d", library], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic)
    assert "libc10.so" in needed and not [
        n for n in needed if n.startswith(("libtorch_cuda", "libcudart", "libc10_cuda"))
    ]


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
