"""The extension compiles and links for sm_80 and sm_90a here, with no GPU, and fails soft without nvcc."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cutlass_resnet.ops import build, library
from cutlass_resnet.ops.select import kernel_table


def test_extension_compiled_for_sm80_and_sm90a(extension):
    built = Path(extension.library_path())
    assert built.is_relative_to(build.cache_root()) and built.name == "cutlass_resnet_C.so"
    data = built.read_bytes()
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


def test_the_nvcc_target_of_hopper_is_90a():
    assert [build.nvcc_target(c) for c in ((9, 0), (8, 6), (10, 0))] == ["9.0a", "8.6", "10.0"]


def test_setup_py_builds_what_the_jit_build_builds():
    setup = (Path(__file__).resolve().parents[2] / "setup.py").read_text()
    assert "build.extension_args(targets)" in setup and "build.source_digest()" in setup
    assert "build.parse_targets(" in setup and "build.linkable_toolkit(home)" in setup
    args = build.extension_args(["8.0"])
    assert [Path(s).name for s in args["sources"]] == [p.name for p in build.sources(["8.0"])]
    assert "-DCR_WITH_SM90" not in args["nvcc"] and "-DCR_WITH_SM90" in build.extension_args(["9.0a"])["nvcc"]


def test_setup_py_loads_the_build_module_without_the_package():
    """setup.py runs where the package's runtime dependencies may be missing: it loads ``ops/build.py`` (and the
    ``_io.py`` it imports) without the package's ``__init__``, which would import them."""
    root = Path(__file__).resolve().parents[2]
    code = (
        "import ast, importlib, sys, types; from pathlib import Path\n"
        "sys.modules['safetensors'] = sys.modules['huggingface_hub'] = None  # not importable\n"
        "tree = ast.parse(Path('setup.py').read_text())\n"
        "fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == '_build_module')\n"
        "ns = dict(ROOT=Path('.').resolve(), sys=sys, types=types, importlib=importlib)\n"
        "exec(compile(ast.Module([fn], []), 'setup.py', 'exec'), ns)\n"
        "build = ns['_build_module']()\n"
        "print(build.__file__, build.source_digest(), build.parse_targets('8.0;9.0'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [
        str(root / "cutlass_resnet" / "ops" / "build.py"),
        build.source_digest(),
        "['8.0',",
        "'9.0a']",
    ]


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
    """build() with a stand-in compiler that writes a small library and, as torch's JIT build does, loads it."""
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
    leftover = target.parent / f".{target.name}.killed.tmp"  # what a killed build leaves
    leftover.mkdir()
    (leftover / "half.o").write_bytes(b"x")
    assert build.build(["8.0"]) == str(target / build.LIBRARY_NAME)
    (scratch,) = compiler.compiled
    assert scratch.parent == target.parent and scratch.name.startswith(f".{target.name}.")
    assert not scratch.exists() and not leftover.exists()
    assert sorted(p.name for p in target.iterdir()) == ["build.ninja", "cutlass_resnet_C.so", "manifest.json"]
    manifest = json.loads((target / "manifest.json").read_text())
    data = (target / build.LIBRARY_NAME).read_bytes()
    assert manifest == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert compiler.loaded == [str(scratch / build.LIBRARY_NAME)]
    assert sorted(p.name for p in target.parent.iterdir()) == [f".{target.name}.lock", target.name]
    assert build.build(["8.0"]) == str(target / build.LIBRARY_NAME)  # complete: not compiled again
    assert len(compiler.compiled) == 1 and len(compiler.loaded) == 1


def test_a_complete_build_loads_without_nvcc_and_writes_nothing(compiler, monkeypatch):
    build.build(["8.0"])
    root = build.cache_root()
    before = tree(root)
    monkeypatch.setattr(build, "cuda_home", lambda: None)
    assert build.build(["8.0"]) == str(build.cache_dir(["8.0"]) / build.LIBRARY_NAME)
    assert tree(root) == before and len(compiler.compiled) == 1
    assert library.find_library(["8.0"]) == str(build.cache_dir(["8.0"]) / build.LIBRARY_NAME)


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-manifest"])
def test_a_damaged_build_is_rebuilt_never_loaded(compiler, damage):
    target = build.cache_dir(["8.0"])
    build.build(["8.0"])
    built = target / build.LIBRARY_NAME
    if damage == "truncate":
        built.write_bytes(built.read_bytes()[:100])
    elif damage == "flip":
        built.write_bytes(b"\x7fELF" + bytes(4095) + b"\x01")
    else:
        (target / "manifest.json").unlink()
    assert build.build_defect(target) is not None and library.find_library(["8.0"]) is None
    build.build(["8.0"])
    assert len(compiler.compiled) == 2 and build.build_defect(target) is None


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


@pytest.mark.parametrize(
    ("text", "targets"),
    [
        ("8.0;9.0a", ["8.0", "9.0a"]),
        ("8.0 8.6+PTX, 9.0", ["8.0", "8.6", "9.0a"]),  # 9.0 builds the Hopper kernels, which need 9.0a
        ("10.0a;12.0;8.0;8.0", ["10.0a", "12.0", "8.0"]),
        ("", []),
    ],
)
def test_target_lists_are_read_as_torch_reads_them(text, targets):
    assert build.parse_targets(text) == targets


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
    built = extension.library_path()
    undefined = subprocess.run(["nm", "-D", "--undefined-only", built], capture_output=True, text=True, check=True)
    unstable = [s for s in undefined.stdout.split() if s.startswith(("_ZN3c10", "_ZN2at", "_ZN5torch"))]
    assert not unstable, unstable[:5]
    dynamic = subprocess.run(["readelf", "-d", built], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic)
    assert "libc10.so" in needed and not [
        n for n in needed if n.startswith(("libtorch_cuda", "libcudart", "libc10_cuda"))
    ]


def test_a_build_folder_is_readable_by_the_team(compiler):
    """Build folders get the mode the umask gives (a cache shared by a team), not a temporary folder's 0700."""
    previous = os.umask(0o022)
    try:
        build.build(["8.0"])
    finally:
        os.umask(previous)
    assert build.cache_dir(["8.0"]).stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize(("targets", "why"), [(["7.0"], "need sm_80 or newer, not 7.0"), (["8.0", "6.1"], "not 6.1")])
def test_targets_the_kernels_cannot_build_for_are_refused_before_anything(compiler, targets, why):
    with pytest.raises(ValueError, match=re.escape(why) + ".*8.0, 8.6"):
        build.build(targets)
    assert compiler.compiled == [] and not build.cache_root().exists()


def test_a_cache_that_is_a_file_is_named(monkeypatch, tmp_path):
    (tmp_path / "cache").write_text("")
    monkeypatch.setenv("CUTLASS_RESNET_CACHE", str(tmp_path / "cache"))
    with pytest.raises(NotADirectoryError, match="CUTLASS_RESNET_CACHE .*cache is a file: it must name a folder"):
        build.cache_root()


def test_ctrl_c_during_the_compile_is_an_interrupt(compiler, monkeypatch):
    """ninja, stopped by the same Ctrl-C, makes torch raise a build error: it is re-raised as the interrupt it was
    (the command then exits 130), and nothing is left in the cache but the lock."""
    import contextlib
    import signal

    def interrupted(targets, build_dir, home, verbose):
        with contextlib.suppress(KeyboardInterrupt):  # as torch's build turns what its ninja run raised into
            signal.raise_signal(signal.SIGINT)
        raise RuntimeError("Error building extension 'cutlass_resnet_C'")

    monkeypatch.setattr(build, "_compile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build.build(["8.0"])
    target = build.cache_dir(["8.0"])
    assert sorted(p.name for p in target.parent.iterdir()) == [f".{target.name}.lock"]
