"""Find, verify and load the CUTLASS extension: the library compiled in at install time where it fits this torch and
these GPUs, else the cached build (compiled first by :mod:`.build` when there is none).

Nothing is loaded before its size and sha256 match the record written when it was built: loading a
truncated library kills the process. A failure to load warns once and leaves CUDA convs on aten.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import torch

from . import build

__all__ = [
    "PREBUILT_INFO",
    "build_id",
    "default_targets",
    "find_library",
    "library_path",
    "load",
    "load_built",
    "load_error",
    "load_for",
    "loaded",
    "prebuilt_info",
    "target_runs_on",
]

PREBUILT_INFO = Path(__file__).with_name("_C.json")  # written by setup.py next to the library it built
#: The LibTorch stable ABI the binding is built against (TORCH_TARGET_VERSION): any torch from it on loads it.
STABLE_ABI = (2, 10)
_state: dict[str, str | None] = {"path": None, "error": None}


def default_targets() -> list[str]:
    """``TORCH_CUDA_ARCH_LIST`` when set, else the nvcc targets of the visible GPUs; empty when there is neither."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip():
        return build.parse_targets(os.environ["TORCH_CUDA_ARCH_LIST"])
    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    return sorted({build.nvcc_target(torch.cuda.get_device_capability(i)) for i in range(count)})


def target_runs_on(built: str, needed: str) -> bool:
    """Whether code built for nvcc target ``built`` runs on a GPU whose target is ``needed`` (same major, no newer
    minor)."""
    if built == needed:
        return True
    if built.endswith("a"):  # arch-specific code (wgmma, TMA) runs on that arch only
        return False
    (b_major, b_minor), (n_major, n_minor) = (tuple(map(int, t.rstrip("a").split("."))) for t in (built, needed))
    return b_major == n_major and b_minor <= n_minor


def _release(version: str) -> tuple[int, int]:
    """(major, minor) of a torch version such as ``2.14.1+cu130``."""
    found = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(found[1]), int(found[2])) if found else (0, 0)


def _cuda_major(version: str | None) -> str | None:
    return version.split(".")[0] if version else None


def prebuilt_info() -> dict | None:
    """What setup.py recorded about the library it compiled into the package, or None where it compiled none."""
    if not PREBUILT_INFO.exists():
        return None
    info = json.loads(PREBUILT_INFO.read_text())
    info.setdefault("targets", info.pop("archs", []))  # as older installs named it
    return info


def _prebuilt(targets: list[str]) -> str | None:
    """The library compiled in at install time, if this torch can load it (any torch from 2.10 on, built for the same
    CUDA major: the binding uses the stable ABI only) and it covers ``targets``."""
    info = prebuilt_info()
    if info is None:
        return None
    library = PREBUILT_INFO.with_name(info["library"])
    mismatch = None
    if _release(info["torch"]) < STABLE_ABI:
        mismatch = f"it was built for torch {info['torch']}, older than the stable ABI of torch 2.10 it needs"
    elif _release(torch.__version__) < STABLE_ABI:
        mismatch = f"it needs torch 2.10 or newer (the LibTorch stable ABI), this is {torch.__version__}"
    elif _cuda_major(info["cuda"]) != _cuda_major(torch.version.cuda):
        cuda = torch.version.cuda
        mismatch = f"it was built for CUDA {info['cuda']}, this torch {torch.__version__} is for CUDA {cuda}"
    elif missing := [t for t in targets if not any(target_runs_on(b, t) for b in info["targets"])]:
        mismatch = f"it was built for {', '.join(info['targets'])}, not {', '.join(missing)}"
    else:
        mismatch = build.why_unloadable(library, info.get("library_file"))
    if mismatch:
        warnings.warn(f"cutlass_resnet: not using the prebuilt kernels ({mismatch}); compiling instead", stacklevel=3)
        return None
    return str(library)


def find_library(targets: list[str]) -> str | None:
    """The already compiled library that :func:`load` would use for ``targets``, or None: nothing is built."""
    prebuilt = _prebuilt(targets)
    if prebuilt is not None:
        return prebuilt
    if not targets:
        return None
    folder = build.cache_dir(targets)  # hashes every source file: once
    return None if build.build_defect(folder) is not None else str(folder / build.LIBRARY_NAME)


def loaded() -> bool:
    return _state["path"] is not None


def library_path() -> str | None:
    """The loaded extension library, or None."""
    return _state["path"]


def build_id() -> str:
    """Names the loaded build (cache folder, or the prebuilt library's sources): self-check verdicts are per build."""
    path = Path(_state["path"] or "")
    if path.parent == PREBUILT_INFO.parent:
        return "prebuilt-" + json.loads(PREBUILT_INFO.read_text())["sources"]
    return path.parent.name


def load_error() -> str | None:
    """Why the extension could not be loaded, or None."""
    return _state["error"]


def load_built(path: str) -> None:
    """Load the library that another process loaded and verified (the self-check's child process)."""
    torch.ops.load_library(path)
    _state["path"], _state["error"] = path, None


def load(targets: list[str] | None = None, *, verbose: bool = False) -> bool:
    """Load the extension, compiling it first where nothing fits; return whether its ops are available.

    Args:
        targets: nvcc targets (``["8.0", "9.0a"]``); default :func:`default_targets`.
        verbose: show the compiler's commands instead of a progress bar.

    On failure (no nvcc, no CUDA build of torch, a compile error) warn once, saying why, and
    return False: CUDA convs then run aten's convolution.
    """
    if _state["path"] is not None:
        return True
    if _state["error"] is not None:
        return False
    targets = targets or default_targets()
    try:
        path = _prebuilt(targets) or build.build(targets, verbose=verbose)
        torch.ops.load_library(path)  # after a build in this process: the library it loaded, found by inode
        _state["path"] = path
        return True
    except Exception as exc:  # noqa: BLE001 - any failure means: no kernels, aten's convolution
        _state["error"] = str(exc)
        warnings.warn(
            f"cutlass_resnet: CUTLASS kernels unavailable, CUDA convs run aten's convolution: {exc}", stacklevel=2
        )
        return False


def load_for(capability: tuple[int, int]) -> bool:
    """:func:`load` for planning, dry runs or emulation of a GPU of ``capability`` where none may be visible: the
    visible GPUs' (or ``TORCH_CUDA_ARCH_LIST``'s) targets, else that capability's."""
    return load(default_targets() or [build.nvcc_target(capability)])
