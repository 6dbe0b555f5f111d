"""A pure-Python wheel by default; with CUTLASS_RESNET_CUDA_ARCHS set, the CUTLASS kernels compiled in.

    CUTLASS_RESNET_CUDA_ARCHS="8.0;9.0a" pip install --no-build-isolation .

builds the extension at install time (the build must see the torch it will run with, hence
``--no-build-isolation``), so the first use compiles nothing. ``TORCH_CUDA_ARCH_LIST`` is the
default target list, as for other torch extensions, when torch is importable in the build
(``9.0`` builds the ``9.0a`` Hopper kernels); ``MAX_JOBS`` limits the parallel compilers.
Everything else is in pyproject.toml.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import types
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
EXPLICIT = os.environ.get("CUTLASS_RESNET_CUDA_ARCHS", "").strip()
DEFAULT = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()


def _build_module() -> types.ModuleType:
    """``cutlass_resnet/ops/build.py`` (and the ``_io.py`` it imports) without running the package's ``__init__``,
    which imports dependencies a build need not have."""
    for name, folder in (
        ("cutlass_resnet", ROOT / "cutlass_resnet"),
        ("cutlass_resnet.ops", ROOT / "cutlass_resnet" / "ops"),
    ):
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
    return importlib.import_module("cutlass_resnet.ops.build")


def _extension_setup(targets_text: str) -> dict:
    try:
        import torch
    except ImportError:
        if not EXPLICIT:  # only TORCH_CUDA_ARCH_LIST, in an isolated build: a pure-Python wheel, as without it
            print(
                "TORCH_CUDA_ARCH_LIST is set but torch is not importable here: no kernels compiled in", file=sys.stderr
            )
            return {}
        sys.exit(
            "CUTLASS_RESNET_CUDA_ARCHS is set but torch is not importable while building: "
            "install with `pip install --no-build-isolation .` so the kernels compile against your torch"
        )
    build = _build_module()
    targets = build.parse_targets(targets_text)
    home = build.cuda_home()
    if home is None:
        if not EXPLICIT:
            print("TORCH_CUDA_ARCH_LIST is set but nvcc was not found: no kernels compiled in", file=sys.stderr)
            return {}
        sys.exit("CUTLASS_RESNET_CUDA_ARCHS is set but nvcc was not found: install the CUDA toolkit, set CUDA_HOME")
    home = build.linkable_toolkit(home)
    os.environ["CUDA_HOME"] = home
    os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(targets)
    from torch.utils import cpp_extension

    cpp_extension.CUDA_HOME = home
    args = build.extension_args(targets)

    class BuildExtension(cpp_extension.BuildExtension):
        """Records next to the library what it was built for, so the loader can tell whether it fits."""

        def run(self) -> None:
            super().run()
            library = Path(self.get_ext_fullpath("cutlass_resnet.ops._C"))
            info = {
                "library": library.name,
                "targets": targets,
                "torch": torch.__version__,
                "cuda": torch.version.cuda,
                "sources": build.source_digest(),
                "library_file": build.file_record(library),
            }
            library.with_name("_C.json").write_text(json.dumps(info, indent=1) + "\n")

    extension = cpp_extension.CUDAExtension(
        "cutlass_resnet.ops._C",
        sources=[os.path.relpath(p, ROOT) for p in args["sources"]],
        include_dirs=args["include_dirs"],
        extra_compile_args={"cxx": args["cxx"], "nvcc": args["nvcc"]},
    )
    # setuptools puts extra link arguments after the libraries, so the JIT build's flags would come too late:
    # link what the stable ABI needs (c10, torch_cpu) and the static CUDA runtime instead of torch's defaults.
    extension.libraries = ["c10", "torch_cpu", *(flag.removeprefix("-l") for flag in args["ldflags"][1:])]
    return {"ext_modules": [extension], "cmdclass": {"build_ext": BuildExtension}}


setup(**(_extension_setup(EXPLICIT or DEFAULT) if EXPLICIT or DEFAULT else {}))
