"""torchvision's ResNet model zoo on CUTLASS implicit-GEMM convolutions with fused epilogues.

>>> from cutlass_resnet import resnet50
>>> model = resnet50(weights="DEFAULT", fuse_bn=True, dtype=torch.float16, device="cuda")

Layers, bottom up, each importing only those below: ``ops`` (the op, kernel choice, dispatch,
self-check, build), ``nn`` (``Conv2d``, ``fuse_bn``, ``plan``), ``models`` (blocks, ``ResNet``,
builders, registry), ``pretrained`` (downloads, hub, loading, export); ``cli`` is the command line.

The public names are imported on first use (``import cutlass_resnet`` alone imports neither torch nor
the op): the command line answers Ctrl-C from its first instant, and the op
``torch.ops.cutlass_resnet.conv2d_fprop`` is registered by ``import cutlass_resnet.ops`` or the first use
of any model, layer or loader.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__  # noqa: F401  (public, and cheap)

_SUBMODULES = ("models", "nn", "ops", "pretrained", "testing")
_NAMES = {  # public name -> the module it comes from (the builders, enums and registry: models.__all__)
    "plan": ".nn",
    "fuse_bn": ".nn",
    "cuda_graph": ".nn",
    "load_torchvision_state_dict": ".pretrained",
    "from_pretrained": ".pretrained",
    "save_pretrained": ".pretrained",
    "push_to_hub": ".pretrained",
    "CorruptWeightsError": ".pretrained",
    "StateDictMismatchError": ".pretrained",
    "WeightsUnavailableError": ".pretrained",
    "get_weight": "torchvision.models",
    "Weights": "torchvision.models",
    "WeightsEnum": "torchvision.models",
}


def _models_all() -> list[str]:
    return list(importlib.import_module(".models", __name__).__all__)


def __getattr__(name: str) -> Any:
    if name == "__all__":
        value: Any = ["nn", "ops", "models", "pretrained", *_NAMES, "__version__", *_models_all()]
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    elif name in _NAMES:
        module = _NAMES[name]
        importlib.import_module(".pretrained", __name__)  # the builders' weights= fetch through its verified loader
        value = getattr(importlib.import_module(module, __name__ if module.startswith(".") else None), name)
    elif name in _models_all():
        importlib.import_module(".pretrained", __name__)
        value = getattr(importlib.import_module(".models", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__getattr__("__all__")))
