"""Build and load the CUTLASS extension: JIT on first use, or ahead of time.

``cutlass-resnet build [--arch 8.0 9.0a]`` builds into the cache what a later process loads
without compiling. The cache is keyed by package, CUTLASS, torch and CUDA
versions and the target archs; a file lock keeps two processes building at once from
corrupting it. ``CUTLASS_RESNET_CUDA_ARCHS="8.0;9.0a" pip install --no-build-isolation .``
compiles the kernels into the installed package instead (``setup.py``); that prebuilt library
is loaded first whenever it was built for this torch and covers the GPU's arch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
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
    "find_library",
    "library_path",
    "load",
    "load_error",
    "loaded",
    "nvcc_arch",
    "nvcc_arch_runs_on",
    "source_digest",
    "sources",
]

CSRC = Path(__file__).with_name("csrc")
PREBUILT_INFO = Path(__file__).with_name("_C.json")  # written by setup.py next to the library it built
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


def default_nvcc_archs() -> list[str]:
    """The nvcc archs of the visible GPUs; empty when there is none."""
    if not torch.cuda.is_available():
        return []
    return sorted({nvcc_arch(torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())})


def sources(archs: list[str] | None = None) -> list[Path]:
    """The binding, the registry and one .cu per kernel; the Hopper kernels only for sm_90a targets."""
    hopper = sorted(CSRC.glob("k90_*.cu")) if archs is None or "9.0a" in archs else []
    return [CSRC / "binding.cpp", CSRC / "registry.cu", *sorted(CSRC.glob("k80_*.cu")), *hopper]


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


def cuda_home() -> str | None:
    """The first CUDA toolkit with an nvcc among CUDA_HOME, CUDA_PATH, nvcc on PATH and /usr/local/cuda."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:  # may be a wrapper script: resolve it to the toolkit it runs
        candidates.append(str(Path(os.path.realpath(nvcc)).parents[1]))
    candidates.append("/usr/local/cuda")
    for home in filter(None, candidates):
        if (Path(home) / "bin" / "nvcc").exists() and (Path(home) / "include" / "cuda_runtime.h").exists():
            return home
    return None


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


def load(archs: list[str] | None = None, *, verbose: bool = False) -> bool:
    """Build (first time only) and load the extension; return whether its ops are available.

    On failure (no nvcc, no CUDA build of torch, a compile error) warn once, saying why, and
    return False: callers then use the reference implementation.
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
    except Exception as exc:  # noqa: BLE001 - any failure means: use the reference path
        _state["error"] = str(exc)
        warnings.warn(
            f"cutlass_resnet: CUTLASS kernels unavailable, using the reference convolution: {exc}", stacklevel=2
        )
        return False


def nvcc_arch_runs_on(built: str, needed: str) -> bool:
    """Whether code built for arch ``built`` runs on a GPU of arch ``needed`` (same major, no newer minor)."""
    if built == needed:
        return True
    if built.endswith("a"):  # arch-specific code (wgmma, TMA) runs on that arch only
        return False
    (b_major, b_minor), (n_major, n_minor) = (tuple(map(int, a.rstrip("a").split("."))) for a in (built, needed))
    return b_major == n_major and b_minor <= n_minor


def _prebuilt(archs: list[str]) -> str | None:
    """The library compiled in at install time, if it was built for this torch and covers ``archs``."""
    if not PREBUILT_INFO.exists():
        return None
    info = json.loads(PREBUILT_INFO.read_text())
    library = PREBUILT_INFO.with_name(info["library"])
    mismatch = None
    if (info["torch"], info["cuda"]) != (torch.__version__, torch.version.cuda):
        mismatch = f"it was built for torch {info['torch']} (CUDA {info['cuda']}), this is {torch.__version__}"
    elif missing := [a for a in archs if not any(nvcc_arch_runs_on(b, a) for b in info["archs"])]:
        mismatch = f"it was built for {', '.join(info['archs'])}, not {', '.join(missing)}"
    elif not library.exists():
        mismatch = f"{library} is missing"
    if mismatch:
        warnings.warn(f"cutlass_resnet: not using the prebuilt kernels ({mismatch}); compiling instead", stacklevel=3)
        return None
    return str(library)


def find_library(archs: list[str]) -> str | None:
    """The already compiled library that :func:`load` would use for ``archs``, or None: nothing is built."""
    prebuilt = _prebuilt(archs)
    if prebuilt is not None:
        return prebuilt
    library = cache_dir(archs) / "cutlass_resnet_C.so" if archs else None
    return str(library) if library is not None and library.exists() else None


def extension_args(archs: list[str]) -> dict[str, list[str]]:
    """Sources, include paths and compiler flags of the extension: the JIT build and setup.py share them."""
    hopper = ["-DCR_WITH_SM90"] if "9.0a" in archs else []
    return {
        "sources": [str(p) for p in sources(archs)],
        "include_dirs": [*_cutlass_includes(), str(CSRC)],
        "cxx": ["-O3", "-DNDEBUG", *hopper],
        "nvcc": ["-O3", "-DNDEBUG", "--expt-relaxed-constexpr", *hopper],
    }


@contextlib.contextmanager
def _progress(build_dir: Path, total: int) -> Iterator[None]:
    """A progress bar over the object files ninja writes (drawn on a terminal only, so logs stay clean)."""
    from tqdm.auto import tqdm

    done = threading.Event()
    bar = tqdm(total=total, desc="compiling CUTLASS kernels", unit="file", disable=None, file=sys.stderr)

    def watch() -> None:
        while not done.wait(1.0):
            bar.update(min(total, len(list(build_dir.glob("*.o")))) - bar.n)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        bar.close()


def build(archs: list[str], *, verbose: bool = False) -> str:
    """Compile the extension for ``archs`` into the cache (unless it is there) and load it; return its path."""
    if not archs:
        raise RuntimeError("no GPU is visible and no arch was given (e.g. archs=['8.0', '9.0a'])")
    if torch.version.cuda is None:
        raise RuntimeError(f"torch {torch.__version__} is not a CUDA build")
    home = cuda_home()
    if home is None:
        raise RuntimeError("nvcc not found: install the CUDA toolkit and set CUDA_HOME")
    os.environ["CUDA_HOME"] = home  # before torch.utils.cpp_extension reads it at import
    import torch.utils.cpp_extension as cpp_extension
    from filelock import FileLock

    cpp_extension.CUDA_HOME = home
    build_dir = cache_dir(archs)
    build_dir.mkdir(parents=True, exist_ok=True)
    name = "cutlass_resnet_C"
    args = extension_args(archs)
    with FileLock(str(build_dir / "build.lock")):
        library = build_dir / f"{name}.so"
        fresh = not library.exists()
        if fresh:
            targets = ", ".join(f"sm_{a.replace('.', '')}" for a in archs)
            print(
                f"cutlass_resnet: compiling CUTLASS kernels for {targets} into {build_dir} "
                "(first run only, a few minutes)",
                file=sys.stderr,
                flush=True,
            )
        previous = os.environ.get("TORCH_CUDA_ARCH_LIST")
        os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(archs)
        progress = _progress(build_dir, len(args["sources"])) if fresh and not verbose else contextlib.nullcontext()
        try:
            with progress:
                cpp_extension.load(
                    name=name,
                    sources=args["sources"],
                    extra_include_paths=args["include_dirs"],
                    extra_cflags=args["cxx"],
                    extra_cuda_cflags=args["nvcc"],
                    build_directory=str(build_dir),
                    is_python_module=False,
                    verbose=verbose,
                )
        finally:
            if previous is None:
                os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
            else:
                os.environ["TORCH_CUDA_ARCH_LIST"] = previous
    return str(library)
