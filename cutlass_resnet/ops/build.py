"""Compile the CUTLASS extension and cache it: on first use, ahead of time, or at install time (``setup.py``).

``cutlass-resnet build --gpu-arch 8.0 9.0a`` compiles into the cache what a later process loads
(:mod:`.library` finds, verifies and loads it). A build is keyed by package, CUTLASS, torch and CUDA
versions, the sources and the nvcc targets. It compiles in a private folder, records the library's
size and sha256 (``manifest.json``) and replaces the cache folder whole, under a lock beside it, so a
killed build leaves nothing a later process would load. ``setup.py`` loads this module on its own
(without the package's ``__init__``): it imports nothing of the package but :mod:`.._io`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from .._io import file_lock, replace_folder, sha256_of

__all__ = [
    "CSRC",
    "LIBRARY_NAME",
    "build",
    "build_defect",
    "cache_dir",
    "cache_root",
    "check_targets",
    "cuda_home",
    "extension_args",
    "file_record",
    "linkable_toolkit",
    "nvcc_target",
    "parse_targets",
    "source_digest",
    "sources",
    "why_unloadable",
]

CSRC = Path(__file__).with_name("csrc")
LIBRARY_NAME = "cutlass_resnet_C.so"
MANIFEST_NAME = "manifest.json"


def cache_root() -> Path:
    """``$CUTLASS_RESNET_CACHE``, else ``$XDG_CACHE_HOME/cutlass_resnet``, else ``~/.cache/cutlass_resnet``: a folder
    (a file there is refused, naming the variable)."""
    if os.environ.get("CUTLASS_RESNET_CACHE"):
        root, named = Path(os.environ["CUTLASS_RESNET_CACHE"]), "CUTLASS_RESNET_CACHE"
    else:
        root, named = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cutlass_resnet", "the cache"
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(
            f"{named} {root} is a file: it must name a folder (for compiled kernels, verdicts and download locks)"
        )
    return root


def nvcc_target(capability: tuple[int, int]) -> str:
    """The nvcc target for a compute capability: Hopper needs ``9.0a`` for its wgmma/TMA kernels."""
    major, minor = capability
    return f"{major}.{minor}" + ("a" if (major, minor) == (9, 0) else "")


def parse_targets(text: str) -> list[str]:
    """nvcc targets from a list as ``TORCH_CUDA_ARCH_LIST`` writes it (``"8.0;8.6 9.0+PTX"``): separators ``;``,
    ``,`` or spaces, ``+PTX`` dropped, and ``9.0`` read as ``9.0a``, which the Hopper kernels need."""
    targets = []
    for item in text.replace(",", ";").replace(" ", ";").split(";"):
        target = item.strip().removesuffix("+PTX")
        if not target:
            continue
        if not re.fullmatch(r"\d+\.\d+[af]?", target):
            raise ValueError(f"{item!r} is not an nvcc target like 8.0, 8.6 or 9.0a (in {text!r})")
        targets.append("9.0a" if target == "9.0" else target)
    return sorted(set(targets), key=targets.index)


#: The oldest target the kernels build for (cp.async and the Sm80 tensor-core instructions), and the newest known.
MIN_TARGET = (8, 0)
KNOWN_TARGETS = ("8.0", "8.6", "8.7", "8.9", "9.0a", "10.0", "10.0a", "12.0", "12.0a")


def check_targets(targets: list[str]) -> list[str]:
    """``targets``, if the kernels can be built for each; else a ValueError naming the ones they can."""
    old = [t for t in targets if tuple(int(v) for v in t.rstrip("af").split(".")) < MIN_TARGET]
    if old:
        raise ValueError(
            f"the CUTLASS kernels need sm_80 or newer, not {', '.join(old)}: name targets among "
            f"{', '.join(KNOWN_TARGETS)}"
        )
    return targets


def sources(targets: list[str] | None = None) -> list[Path]:
    """The binding, the registry, the layout passes and one .cu per kernel; the Hopper kernels only for sm_90a."""
    hopper = sorted(CSRC.glob("k90_*.cu")) if targets is None or "9.0a" in targets else []
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


def cache_dir(targets: list[str]) -> Path:
    """The build folder for these nvcc targets, keyed by everything that changes the binary."""
    from .._version import __version__

    key = (
        f"cr{__version__}-cutlass{_cutlass_version()}-torch{torch.__version__}-cuda{torch.version.cuda}"
        f"-sm{'_'.join(t.replace('.', '') for t in targets)}-{source_digest()}"
    )
    return cache_root() / "kernels" / key.replace("+", "_")


def file_record(path: Path) -> dict[str, object]:
    """Size and sha256 of a built library: what :func:`why_unloadable` checks before it is loaded."""
    return {"size": path.stat().st_size, "sha256": sha256_of(path)}


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
    if sha256_of(library) != record["sha256"]:
        return f"{library} does not match the sha256 recorded when it was built"
    return None


def build_defect(folder: Path) -> str | None:
    """Why the cached build in ``folder`` must not be loaded, or None when it is complete and matches its record."""
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
    overlay = cache_root() / "toolkit" / hashlib.sha256(os.fsencode(Path(home).resolve())).hexdigest()[:12]
    with file_lock(overlay):
        if not (overlay / "lib" / "libcudart.so").exists():
            with replace_folder(overlay) as scratch:
                for entry in Path(home).iterdir():
                    if entry.name != "lib":
                        (scratch / entry.name).symlink_to(entry.resolve())
                (scratch / "lib").mkdir()
                for entry in lib.iterdir():
                    (scratch / "lib" / entry.name).symlink_to(entry.resolve())
                (scratch / "lib" / "libcudart.so").symlink_to(versioned[0].resolve())
    return str(overlay)


def extension_args(targets: list[str]) -> dict[str, list[str]]:
    """Sources, include paths and compiler flags of the extension: the JIT build and setup.py share them."""
    hopper = ["-DCR_WITH_SM90"] if "9.0a" in targets else []
    return {
        "sources": [str(p) for p in sources(targets)],
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


@contextlib.contextmanager
def _interrupts() -> Iterator[list[int]]:
    """Notes a Ctrl-C while the compilers run (in the main thread): ninja, stopped by the same SIGINT, may make
    torch raise a build error first, which the caller turns back into the KeyboardInterrupt it was."""
    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return
    previous = signal.getsignal(signal.SIGINT)

    def note(signum: int, frame: object) -> None:
        seen.append(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


def build(targets: list[str], *, verbose: bool = False) -> str:
    """The path of the verified build for ``targets`` in the cache, compiled first when there is none.

    A complete build needs neither nvcc nor a writable cache. Otherwise the build compiles in a
    private folder beside the cache folder (so a killed build, or its orphaned compilers, never
    touch another's files), which replaces the cache folder once its library and record are written.
    """
    if not targets:
        raise RuntimeError("no GPU is visible and no nvcc target was given (e.g. targets=['8.0', '9.0a'])")
    check_targets(targets)
    target = cache_dir(targets)
    defect = build_defect(target)
    if defect is None:
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
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target):
        if build_defect(target) is None:  # another process built it while we waited
            return str(target / LIBRARY_NAME)
        print(
            f"cutlass_resnet: compiling CUTLASS kernels for {', '.join('sm_' + t.replace('.', '') for t in targets)} "
            f"into {target} (first run only, a few minutes)",
            file=sys.stderr,
            flush=True,
        )
        with _interrupts() as interrupted:
            try:
                with replace_folder(target) as scratch:
                    library = _compile(targets, scratch, home, verbose)
                    library.rename(scratch / LIBRARY_NAME)
                    (scratch / MANIFEST_NAME).write_text(json.dumps(file_record(scratch / LIBRARY_NAME)) + "\n")
            except Exception as exc:
                if interrupted:
                    raise KeyboardInterrupt from exc
                raise
    return str(target / LIBRARY_NAME)


def _compile(targets: list[str], build_dir: Path, home: str, verbose: bool) -> Path:
    """Compile the extension in ``build_dir`` with torch's JIT build (ninja), which also loads it; return the
    library."""
    home = linkable_toolkit(home)
    os.environ["CUDA_HOME"] = home  # before torch.utils.cpp_extension reads it at import
    import torch.utils.cpp_extension as cpp_extension

    cpp_extension.CUDA_HOME = home
    args = extension_args(targets)
    previous = os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(targets)
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
