"""Any CNN onto the op: :func:`convert` swaps each ``torch.nn.Conv2d`` of a model for :class:`~.conv.Conv2d` (the
same parameter objects, so state dicts load both ways) and folds the BatchNorm that directly follows a conv into
it, with the ReLU after that into its epilogue.

The patterns are found with ``torch.fx`` where the model traces; where it does not (control flow on values, as
in detection models), in each of its submodules that does, down to ``nn.Sequential`` containers. What was done
and what was left, conv by conv, is in the model's ``conversion`` attribute (:class:`Conversion`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from .conv import Conv2d
from .fusion import _norm_stats, fold_bn

__all__ = ["Conversion", "convert"]

_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)
_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_}


@dataclass
class Conversion:
    """What :func:`convert` did: the convs it swapped, the (conv, norm) pairs it folded, the convs that apply ReLU
    in their epilogue, and the convs it left as they were or left unfused, with why."""

    converted: list[str] = field(default_factory=list)
    folded: list[tuple[str, str]] = field(default_factory=list)
    relu: list[str] = field(default_factory=list)
    left: dict[str, str] = field(default_factory=dict)
    found_by: str = "torch.fx"


class _Tracer(fx.Tracer):
    """torch's tracer with every BatchNorm kept as one call: torchvision's frozen one, and timm's BatchNormAct2d
    (a BatchNorm2d followed by its own dropout and activation)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _NORMS) or super().is_leaf_module(m, qualname)


def _norm_act(m: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(dropout, activation) of a norm that applies them after itself (timm's ``BatchNormAct2d``), or None."""
    if type(m).forward in (nn.BatchNorm2d.forward, FrozenBatchNorm2d.forward):
        return None
    drop, act = getattr(m, "drop", None), getattr(m, "act", None)
    return (drop, act) if isinstance(drop, nn.Module) and isinstance(act, nn.Module) else None


def _is_torch_conv(m: nn.Module) -> bool:
    """A conv that computes as ``torch.nn.Conv2d`` does: it or a subclass that keeps its forward."""
    return (
        isinstance(m, nn.Conv2d)
        and not isinstance(m, Conv2d)
        and type(m).forward is nn.Conv2d.forward
        and type(m)._conv_forward is nn.Conv2d._conv_forward
    )


def _foldable(m: nn.Module) -> bool:
    """A norm whose running statistics can be folded into the conv before it (a subclass with its own forward
    only where it is known to apply them, then a dropout and an activation)."""
    if not isinstance(m, _NORMS) or getattr(m, "running_mean", None) is None:
        return False
    return type(m).forward in (nn.BatchNorm2d.forward, FrozenBatchNorm2d.forward) or _norm_act(m) is not None


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return type(modules[node.target]) is nn.ReLU
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _traced_pairs(model: nn.Module) -> list[tuple[str, str | None, str | None, bool]]:
    """(conv, norm or None, ReLU module to drop or None, relu) for each conv whose output goes only to a norm
    (and whose norm's output goes only to a ReLU), or only to a ReLU, as the traced graph shows."""
    graph = _Tracer().trace(model)
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not _is_torch_conv(modules[node.target]) or calls[node.target] != 1:
            continue
        norm, tail = None, node
        (user,) = node.users if len(node.users) == 1 else (None,)
        if (
            user is not None
            and user.op == "call_module"
            and _foldable(modules[user.target])
            and calls[user.target] == 1
        ):
            norm, tail = user.target, user
        (after,) = tail.users if len(tail.users) == 1 else (None,)
        relu = after is not None and _is_relu(after, modules)
        drop = after.target if relu and after.op == "call_module" and calls[after.target] == 1 else None
        if norm is not None or relu:
            pairs.append((node.target, norm, drop, relu))
    return pairs


def _pairs(module: nn.Module, prefix: str, untraced: list[str]) -> list[tuple[str, str | None, str | None, bool]]:
    """:func:`_traced_pairs` of ``module``, or where it does not trace (control flow on values, as in detection
    models), of each of its children that does, their names prefixed; ``untraced`` gets the modules that did
    not."""
    try:
        pairs = _traced_pairs(module)
    except Exception as exc:  # noqa: BLE001 - any failure to trace: its children may
        untraced.append(f"{prefix.rstrip('.') or type(module).__name__} ({type(exc).__name__})")
        return [p for name, child in module.named_children() for p in _pairs(child, f"{prefix}{name}.", untraced)]
    return [(prefix + conv, norm and prefix + norm, drop and prefix + drop, relu) for conv, norm, drop, relu in pairs]


def _swap(model: nn.Module, old: nn.Conv2d) -> Conv2d:
    """:class:`Conv2d` holding ``old``'s parameters, put wherever ``old`` was (a module may sit in several
    places)."""
    new = Conv2d(
        old.in_channels,
        old.out_channels,
        old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=old.groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
        device="meta",
    )
    new.weight, new.bias = old.weight, old.bias
    new.train(old.training)
    for parent in list(model.modules()):
        for attr, child in list(parent.named_children()):
            if child is old:
                setattr(parent, attr, new)
    return new


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, new)


def _places(model: nn.Module) -> dict[int, int]:
    """How many places each module sits in."""
    count: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        count[id(m)] = count.get(id(m), 0) + 1
    return count


def convert(
    model: nn.Module,
    *,
    fuse_bn: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    inplace: bool = False,
) -> nn.Module:
    """``model`` with every ``torch.nn.Conv2d`` running on the op (CUTLASS kernels on a GPU, the reference on the
    CPU), its state dict keys and values unchanged by the swap.

    Args:
        model: any ``nn.Module``; a conv subclass with its own forward (weight standardisation, "same" padding
            computed per call) is left as it is.
        fuse_bn: fold each BatchNorm (or torchvision's frozen one) that directly follows a conv into it (float64,
            rounded once), and move the ReLU that follows into the conv's epilogue. Inference only: the model
            must be in eval mode. A norm before its conv (DenseNet) is never folded.
        dtype: cast the model to this dtype (the folded weights are rounded once to it).
        device: move the model here.
        inplace: change ``model`` itself instead of a copy.

    Returns:
        The converted model, its ``conversion`` attribute saying what was done (:class:`Conversion`).
    """
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise ValueError(f"convert: {type(model).__name__} has no nn.Conv2d: there is nothing to put on the kernels")
    if fuse_bn and model.training:
        raise ValueError("convert(fuse_bn=True) folds running statistics: call model.eval() first, or fuse_bn=False")
    if not inplace:
        model = copy.deepcopy(model)
    report = Conversion()
    pairs: list[tuple[str, str | None, str | None, bool]] = []
    if fuse_bn:
        untraced: list[str] = []
        pairs = _pairs(copy.deepcopy(model), "", untraced)  # a trace given up on can leave proxies in the modules
        if untraced:
            report.found_by = f"torch.fx, per submodule where the module above did not trace: {', '.join(untraced)}"
    places = _places(model)
    fused = {
        conv: (norm, drop, relu)
        for conv, norm, drop, relu in pairs
        if places[id(model.get_submodule(conv))] == 1 and (norm is None or places[id(model.get_submodule(norm))] == 1)
    }
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Conv2d) or isinstance(module, Conv2d):
            continue
        if not _is_torch_conv(module):
            report.left[name] = f"{type(module).__name__} has its own forward"
            continue
        conv = _swap(model, module)
        report.converted.append(name)
        if name not in fused:
            continue
        norm, drop, relu = fused[name]
        if norm is not None:
            module = model.get_submodule(norm)
            w, b = fold_bn(conv.weight, conv.bias, *_norm_stats(norm, module))
            target, requires_grad = dtype or conv.weight.dtype, conv.weight.requires_grad
            conv.weight = nn.Parameter(w.to(target), requires_grad=requires_grad)
            conv.bias = nn.Parameter(b.to(target), requires_grad=requires_grad)
            after = _norm_act(module)
            if after is not None and type(after[1]) is nn.ReLU and not relu:  # timm's conv-BN-ReLU
                relu, after = True, (after[0],)
            _replace(model, norm, nn.Identity() if after is None else nn.Sequential(*after))
            report.folded.append((name, norm))
        if relu:
            conv.relu = True
            report.relu.append(name)
            if drop is not None and places[id(model.get_submodule(drop))] == 1:
                _replace(model, drop, nn.Identity())
    model.to(device=device, dtype=dtype)
    model.conversion = report
    return model
