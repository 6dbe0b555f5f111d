"""torchvision's ResNet model zoo on CUTLASS implicit-GEMM convolutions with fused epilogues.

>>> from cutlass_resnet import resnet50
>>> model = resnet50(weights="DEFAULT", fuse_bn=True, dtype=torch.float16, device="cuda")

Layers, bottom up, each importing only those below: ``ops`` (the op, kernel choice, dispatch,
self-check, build), ``nn`` (``Conv2d``, ``fuse_bn``, ``plan``), ``models`` (blocks, ``ResNet``,
builders, registry), ``pretrained`` (downloads, hub, loading, export); ``predict`` classifies many
images (``cutlass-resnet predict``'s engine); ``cli`` is the command line.
Importing the package registers the op ``torch.ops.cutlass_resnet.conv2d_fprop``.
"""

import os as _os
import signal as _signal
import sys as _sys


def _is_the_command_line() -> bool:
    """Whether this process is ``cutlass-resnet`` (the console script, or ``python -m cutlass_resnet``)."""
    argv = getattr(_sys, "orig_argv", _sys.argv)
    if len(argv) >= 3 and argv[1] == "-m" and argv[2].split(".")[0] == "cutlass_resnet":
        return True
    return any(_os.path.basename(arg) == "cutlass-resnet" for arg in argv[:2])


def _quit_130(signum: int, frame: object) -> None:
    _os._exit(130)  # nothing has been written yet; a KeyboardInterrupt inside torch's imports breaks them instead


# torch takes seconds to import: the command line answers Ctrl-C then too, with exit 130 and no traceback
_sigint = _signal.signal(_signal.SIGINT, _quit_130) if _is_the_command_line() else None
try:
    from torchvision.models import Weights, WeightsEnum, get_weight

    from . import models, nn, ops, predict, pretrained
    from ._version import __version__
    from .models import *  # noqa: F403
    from .models import __all__ as _models_all
    from .nn import convert, cuda_graph, fuse_bn, plan
    from .pretrained import (
        CorruptWeightsError,
        StateDictMismatchError,
        WeightsUnavailableError,
        create_model,
        export_onnx,
        from_pretrained,
        load_torchvision_state_dict,
        push_to_hub,
        save_pretrained,
    )
finally:
    if _sigint is not None:
        _signal.signal(_signal.SIGINT, _sigint)

__all__ = [
    "nn",
    "ops",
    "models",
    "pretrained",
    "predict",
    "plan",
    "fuse_bn",
    "convert",
    "create_model",
    "cuda_graph",
    "load_torchvision_state_dict",
    "from_pretrained",
    "save_pretrained",
    "push_to_hub",
    "export_onnx",
    "get_weight",
    "Weights",
    "WeightsEnum",
    "CorruptWeightsError",
    "StateDictMismatchError",
    "WeightsUnavailableError",
    "__version__",
    *_models_all,
]
