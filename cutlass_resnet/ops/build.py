"""Build and load the CUTLASS extension: JIT on first use, or ahead of time.

``cutlass-resnet build [--arch 8.0 9.0a]`` builds into the cache what a later process loads
without compiling. The cache is keyed by package, CUTLASS, torch and CUDA versions and the
target archs. Each build compiles in a private folder, records the library's size and sha256
(``manifest.json``) and is renamed into place whole; a library is loaded only when it matches
its record, so a truncated file is rebuilt instead of crashing the process, and a complete
build loads from a read-only folder without nvcc. A file lock beside the folder keeps two
processes from building the same key at once.
``CUTLASS_RESNET_CUDA_ARCHS="8.0;9.0a" pip install --no-build-isolation .`` compiles the kernels
into the installed package instead (``setup.py``); that prebuilt library is loaded first
whenever it was built for this torch, covers the GPU's arch and matches its record.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

__all__ = [
    "CSRC",
    "build",
    "build_id",
    "cache_dir",
    "cache_root",
    "cuda_home",
    "default_nvcc_archs",
    "extension_args",
    "file_record",
    "find_library",
    "why_unloadable",
    "library_path",
    "load",
    "load_built",
    "load_error",
    "load_for",
    "loaded",
    "nvcc_arch",
    "nvcc_arch_runs_on",
    "parse_arch_list",
    "source_digest",
    "sources",
]

CSRC = Path(__file__).with_name("csrc")
PREBUILT_INFO = Path(__file__).with_name("_C.json")  # written by setup.py next to the library it built
LIBRARY_NAME = "cutlass_resnet_C.so"
MANIFEST_NAME = "manifest.json"
_state: dict[str, object] = {"path": None, "error": None}


def cache_root() -> Path:
    """``$CUTLASS_RESNET_CACHE``, else ``$XDG_CACHE_HOME/cutlass_resnet``, else ``~/.cache/cutlass_resnet``."""
    if os.environ.get("CUTLASS_RESNET_CACHE"):
        return Path(os.environ["CUTLASS_RESNET_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cutlass_resnet"


def nvcc_arch(capability: tuple[int, int]) -> str:
    """The nvcc arch for a compute capability: Hopper needs ``9.0a`` for its wgmma/TMA kernels."""
    major, minor = capability
    return f"{major}.{minor}" + ("a" if (major, minor) == (9, 0) else "")


def parse_arch_list(text: str) -> list[str]:
    """nvcc archs from a list as ``TORCH_CUDA_ARCH_LIST`` writes it (``"8.0;8.6 9.0+PTX"``): separators ``;``,
    ``,`` or spaces, ``+PTX`` dropped, and ``9.0`` read as ``9.0a``, which the Hopper kernels need."""
    archs = []
    for item in text.replace(",", ";").replace(" ", ";").split(";"):
        arch = item.strip().removesuffix("+PTX")
        if not arch:
            continue
        if not re.fullmatch(r"\d+\.\d+[af]?", arch):
            raise ValueError(f"{item!r} is not an arch like 8.0, 8.6 or 9.0a (in {text!r})")
        archs.append("9.0a" if arch == "9.0" else arch)
    return sorted(set(archs), key=archs.index)


def default_nvcc_archs() -> list[str]:
    """``TORCH_CUDA_ARCH_LIST`` when set, else the nvcc archs of the visible GPUs; empty when there is neither."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip():
        return parse_arch_list(os.environ["TORCH_CUDA_ARCH_LIST"])
    if not torch.cuda.is_available():
        return []
    return sorted({nvcc_arch(torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())})


def sources(archs: list[str] | None = None) -> list[Path]:
    """The binding, the registry, the layout passes and one .cu per kernel; the Hopper kernels only for sm_90a
    targets."""
    hopper = sorted(CSRC.glob("k90_*.cu")) if archs is None or "9.0a" in archs else []
    return [CSRC / "binding.cpp", CSRC / "registry.cu", CSRC / "layout.cu", *sorted(CSRC.glob("k80_*.cu")), *hopper]


def _cutlass_includes() -> list[str]:
    import cutlass_library

    root = Path(cutlass_library.source_path)
    return [str(root / "include"), str(root / "tools" / "util" / "include")]


def _cutlass_version() -> str:
    try:
        return version("nvidia-cutlass")
    except PackageNotFoundError:
        return "unknown"


def source_digest() -> str:
    """A short hash of every file in ``csrc/``: a changed kernel never reuses an old binary."""
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(CSRC.iterdir()) if p.is_file())).hexdigest()[:12]


def cache_dir(archs: list[str]) -> Path:
    """The build folder for these archs, keyed by everything that changes the binary."""
    from .._version import __version__  # here, not at the top: setup.py loads this file outside the package

    digest = source_digest()
    key = (
        f"cr{__version__}-cutlass{_cutlass_version()}-torch{torch.__version__}-cuda{torch.version.cuda}"
        f"-sm{'_'.join(a.replace('.', '') for a in archs)}-{digest}"
    )
    return cache_root() / "kernels" / key.replace("+", "_")


def file_record(path: Path) -> dict[str, object]:
    """Size and sha256 of a built library: what :func:`why_unloadable` checks before it is loaded."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def why_unloadable(library: Path, record: dict[str, object] | None) -> str | None:
    """Why ``library`` must not be loaded (missing, no record, not the file that was built), or None.

    Loading a truncated shared library kills the process with SIGBUS, so nothing is loaded unchecked.
    """
    if not library.is_file():
        return f"{library} is missing"
    if not record or "sha256" not in record:
        return f"{library} has no record of its size and sha256 (an unfinished or older build)"
    size = library.stat().st_size
    if size != record.get("size"):
        return f"{library} has {size} bytes, but {record.get('size')} were built (truncated or replaced)"
    if file_record(library)["sha256"] != record["sha256"]:
        return f"{library} does not match the sha256 recorded when it was built"
    return None


def _why_build_unusable(folder: Path) -> str | None:
    manifest = folder / MANIFEST_NAME
    try:
        record = json.loads(manifest.read_text()) if manifest.exists() else None
    except (OSError, ValueError):
        record = None
    return why_unloadable(folder / LIBRARY_NAME, record)


SYSTEM_CUDA = "/usr/local/cuda"
#: How to get nvcc without a system CUDA toolkit: NVIDIA's wheels, which cuda_home() finds in site-packages.
JIT_INSTALL = 'pip install "cutlass-resnet[jit]"'


def cuda_home() -> str | None:
    """The first CUDA toolkit with an nvcc among CUDA_HOME, CUDA_PATH, nvcc on PATH, /usr/local/cuda and
    NVIDIA's nvcc wheels in site-packages (``nvidia/cu<major>``, for the CUDA major of this torch)."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:  # may be a wrapper script: resolve it to the toolkit it runs
        candidates.append(str(Path(os.path.realpath(nvcc)).parents[1]))
    candidates.append(SYSTEM_CUDA)
    if torch.version.cuda:
        major = torch.version.cuda.split(".")[0]
        candidates += [str(Path(entry) / "nvidia" / f"cu{major}") for entry in sys.path if entry]
    for home in filter(None, candidates):
        if (Path(home) / "bin" / "nvcc").exists() and (Path(home) / "include" / "cuda_runtime.h").exists():
            return home
    return None


def linkable_toolkit(home: str) -> str:
    """``home``, or where it lacks ``lib/libcudart.so`` (NVIDIA's wheels ship only ``libcudart.so.<major>``),
    a folder in the cache that links to everything in it plus that ``libcudart.so``, for the linker."""
    lib = Path(home) / "lib"
    if (lib / "libcudart.so").exists() or (Path(home) / "lib64" / "libcudart.so").exists():
        return home
    versioned = sorted(lib.glob("libcudart.so.*"))
    if not versioned:
        raise RuntimeError(f"{home} has no libcudart.so to link the extension with")
    overlay = cache_root() / "toolkit" / hashlib.sha256(str(Path(home).resolve()).encode()).hexdigest()[:12]
    if not (overlay / "lib" / "libcudart.so").exists():
        scratch = Path(tempfile.mkdtemp(dir=_mkdir(overlay.parent), prefix=".overlay-"))
        for entry in Path(home).iterdir():
            if entry.name != "lib":
                (scratch / entry.name).symlink_to(entry.resolve())
        (scratch / "lib").mkdir()
        for entry in lib.iterdir():
            (scratch / "lib" / entry.name).symlink_to(entry.resolve())
        (scratch / "lib" / "libcudart.so").symlink_to(versioned[0].resolve())
        try:
            scratch.rename(overlay)
        except OSError:  # another process made it first
            shutil.rmtree(scratch, ignore_errors=True)
    return str(overlay)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def loaded() -> bool:
    return _state["path"] is not None


def library_path() -> str | None:
    """The loaded extension library, or None."""
    return _state["path"]  # type: ignore[return-value]


def build_id() -> str:
    """Names the loaded build (cache folder, or the prebuilt library's sources): self-check verdicts are per build."""
    path = Path(_state["path"] or "")  # type: ignore[arg-type]
    if path.parent == PREBUILT_INFO.parent:
        return "prebuilt-" + json.loads(PREBUILT_INFO.read_text())["sources"]
    return path.parent.name


def load_error() -> str | None:
    """Why the extension could not be loaded, or None."""
    return _state["error"]  # type: ignore[return-value]


def load_built(path: str) -> None:
    """Load the library that another process loaded and verified (the self-check's child process)."""
    torch.ops.load_library(path)
    _state["path"], _state["error"] = path, None


def load(archs: list[str] | None = None, *, verbose: bool = False) -> bool:
    """Build (first time only) and load the extension; return whether its ops are available.

    On failure (no nvcc, no CUDA build of torch, a compile error) warn once, saying why, and
    return False: CUDA convs then run aten's convolution.
    """
    if _state["path"] is not None:
        return True
    if _state["error"] is not None:
        return False
    archs = archs or default_nvcc_archs()
    try:
        prebuilt = _prebuilt(archs)
        if prebuilt is not None:
            torch.ops.load_library(prebuilt)
            _state["path"] = prebuilt
        else:
            _state["path"] = build(archs, verbose=verbose)
        return True
    except Exception as exc:  # noqa: BLE001 - any failure means: no kernels, aten's convolution
        _state["error"] = str(exc)
        warnings.warn(
            f"cutlass_resnet: CUTLASS kernels unavailable, CUDA convs run aten's convolution: {exc}", stacklevel=2
        )
        return False


def load_for(capability: tuple[int, int]) -> bool:
    """:func:`load` for planning, dry runs or emulation of a GPU of ``capability`` where none may be visible: the
    visible GPUs' (or ``TORCH_CUDA_ARCH_LIST``'s) archs, else that capability's."""
    return load(default_nvcc_archs() or [nvcc_arch(capability)])


def nvcc_arch_runs_on(built: str, needed: str) -> bool:
    """Whether code built for arch ``built`` runs on a GPU of arch ``needed`` (same major, no newer minor)."""
    if built == needed:
        return True
    if built.endswith("a"):  # arch-specific code (wgmma, TMA) runs on that arch only
        return False
    (b_major, b_minor), (n_major, n_minor) = (tuple(map(int, a.rstrip("a").split("."))) for a in (built, needed))
    return b_major == n_major and b_minor <= n_minor


#: The LibTorch stable ABI the binding is built against (TORCH_TARGET_VERSION): any torch from it on loads it.
STABLE_ABI = (2, 10)


def _release(version: str) -> tuple[int, int]:
    """(major, minor) of a torch version such as ``2.14.1+cu130``."""
    found = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(found[1]), int(found[2])) if found else (0, 0)


def _cuda_major(version: str | None) -> str | None:
    return version.split(".")[0] if version else None


def _prebuilt(archs: list[str]) -> str | None:
    """The library compiled in at install time, if this torch can load it (any torch from 2.10 on, built for the same
    CUDA major: the binding uses the stable ABI only) and it covers ``archs``."""
    if not PREBUILT_INFO.exists():
        return None
    info = json.loads(PREBUILT_INFO.read_text())
    library = PREBUILT_INFO.with_name(info["library"])
    mismatch = None
    if _release(info["torch"]) < STABLE_ABI:
        mismatch = f"it was built for torch {info['torch']}, older than the stable ABI of torch 2.10 it needs"
    elif _release(torch.__version__) < STABLE_ABI:
        mismatch = f"it needs torch 2.10 or newer (the LibTorch stable ABI), this is {torch.__version__}"
    elif _cuda_major(info["cuda"]) != _cuda_major(torch.version.cuda):
        cuda = torch.version.cuda
        mismatch = f"it was built for CUDA {info['cuda']}, this torch {torch.__version__} is for CUDA {cuda}"
    elif missing := [a for a in archs if not any(nvcc_arch_runs_on(b, a) for b in info["archs"])]:
        mismatch = f"it was built for {', '.join(info['archs'])}, not {', '.join(missing)}"
    else:
        mismatch = why_unloadable(library, info.get("library_file"))
    if mismatch:
        warnings.warn(f"cutlass_resnet: not using the prebuilt kernels ({mismatch}); compiling instead", stacklevel=3)
        return None
    return str(library)


def find_library(archs: list[str]) -> str | None:
    """The already compiled library that :func:`load` would use for ``archs``, or None: nothing is built."""
    prebuilt = _prebuilt(archs)
    if prebuilt is not None:
        return prebuilt
    if not archs:
        return None
    folder = cache_dir(archs)  # hashes every source file: once
    return None if _why_build_unusable(folder) is not None else str(folder / LIBRARY_NAME)


def extension_args(archs: list[str]) -> dict[str, list[str]]:
    """Sources, include paths and compiler flags of the extension: the JIT build and setup.py share them."""
    hopper = ["-DCR_WITH_SM90"] if "9.0a" in archs else []
    return {
        "sources": [str(p) for p in sources(archs)],
        "include_dirs": [*_cutlass_includes(), str(CSRC)],
        # The binding uses the LibTorch stable ABI only: torch >= 2.10's, and no C++ symbol of libtorch.
        "cxx": ["-O3", "-DNDEBUG", "-DTORCH_TARGET_VERSION=0x020a000000000000", "-DUSE_CUDA", *hopper],
        "nvcc": ["-O3", "-DNDEBUG", "--expt-relaxed-constexpr", *hopper],
        # The CUDA runtime linked in: the library needs no libcudart.so beside it (nor libtorch_cuda.so).
        "ldflags": ["-Wl,--as-needed", "-l:libcudart_static.a", "-ldl", "-lrt", "-lpthread"],
    }


@contextlib.contextmanager
def _progress(build_dir: Path, total: int) -> Iterator[None]:
    """A progress bar over the object files ninja writes (drawn on a terminal only, so logs stay clean)."""
    from tqdm.auto import tqdm

    done = threading.Event()
    bar = tqdm(total=total, desc="compiling CUTLASS kernels", unit="file", disable=None, file=sys.stderr)

    def count() -> None:
        bar.update(min(total, len(list(build_dir.glob("*.o")))) - bar.n)

    def watch() -> None:
        while not done.wait(1.0):
            count()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        count()  # where the build ended, however briefly it ran
        bar.close()


def build(archs: list[str], *, verbose: bool = False) -> str:
    """Load the verified build for ``archs`` from the cache, compiling it first when there is none; return its path.

    A complete build needs neither nvcc nor a writable cache. Otherwise the build compiles in a
    private folder beside the final one (so a killed build, or its orphaned compilers, never
    touch another's files) and is renamed into place once its library and record are written.
    """
    if not archs:
        raise RuntimeError("no GPU is visible and no arch was given (e.g. archs=['8.0', '9.0a'])")
    target = cache_dir(archs)
    defect = _why_build_unusable(target)
    if defect is None:
        torch.ops.load_library(str(target / LIBRARY_NAME))
        return str(target / LIBRARY_NAME)
    if torch.version.cuda is None:
        raise RuntimeError(f"torch {torch.__version__} is not a CUDA build")
    home = cuda_home()
    if home is None:
        damaged = f"; the cached build cannot be used ({defect}): delete {target}" if target.exists() else ""
        raise RuntimeError(
            f"nvcc not found: install the CUDA toolkit and set CUDA_HOME, or `{JIT_INSTALL}` for NVIDIA's nvcc "
            f"wheels{damaged}"
        )
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if _why_build_unusable(target) is None:  # another process built it while we waited
            torch.ops.load_library(str(target / LIBRARY_NAME))
            return str(target / LIBRARY_NAME)
        for stale in target.parent.glob(f".{target.name}.build-*"):  # left by killed builds of this key
            shutil.rmtree(stale, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.build-"))
        try:
            targets = ", ".join(f"sm_{a.replace('.', '')}" for a in archs)
            print(
                f"cutlass_resnet: compiling CUTLASS kernels for {targets} into {target} "
                "(first run only, a few minutes)",
                file=sys.stderr,
                flush=True,
            )
            library = _compile(archs, scratch, home, verbose)
            library.rename(scratch / LIBRARY_NAME)
            (scratch / MANIFEST_NAME).write_text(json.dumps(file_record(scratch / LIBRARY_NAME)) + "\n")
            if target.exists():  # a damaged build: moved aside, then removed
                trash = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
                target.rename(trash / "build")
                shutil.rmtree(trash, ignore_errors=True)
            scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return str(target / LIBRARY_NAME)


def _compile(archs: list[str], build_dir: Path, home: str, verbose: bool) -> Path:
    """Compile and load the extension in ``build_dir`` with torch's JIT build (ninja); return the library."""
    home = linkable_toolkit(home)
    os.environ["CUDA_HOME"] = home  # before torch.utils.cpp_extension reads it at import
    import torch.utils.cpp_extension as cpp_extension

    cpp_extension.CUDA_HOME = home
    args = extension_args(archs)
    previous = os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(archs)
    progress = _progress(build_dir, len(args["sources"])) if not verbose else contextlib.nullcontext()
    try:
        with progress:
            cpp_extension.load(
                name=LIBRARY_NAME.removesuffix(".so"),
                sources=args["sources"],
                extra_include_paths=args["include_dirs"],
                extra_cflags=args["cxx"],
                extra_cuda_cflags=args["nvcc"],
                extra_ldflags=args["ldflags"],
                build_directory=str(build_dir),
                is_python_module=False,
                verbose=verbose,
            )
    finally:
        if previous is None:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = previous
    (library,) = build_dir.glob("cutlass_resnet_C*.so")  # torch names a rebuild in one process ..._v1.so
    return library
