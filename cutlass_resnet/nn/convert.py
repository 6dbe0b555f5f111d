"""Any CNN onto the op: :func:`convert` swaps each ``torch.nn.Conv2d`` of a model for :class:`~.conv.Conv2d` (the
same parameter objects, so state dicts load both ways), folds the BatchNorm that directly follows a conv into it,
and moves the ReLU after that, or a residual add and the ReLU after it, into the conv's epilogue.

The patterns are found with ``torch.fx`` where the model traces; where it does not (control flow on values, as
in detection models), in each of its submodules that does, down to ``nn.Sequential`` containers. A residual add
is fused by rewriting the forward of the module that does it (a block) as a ``torch.fx.GraphModule`` of the same
class name and submodules, its conv called with ``residual=``. What was done and what was left, conv by conv, is
in the model's ``conversion`` attribute (:class:`Conversion`).
"""

from __future__ import annotations

import copy
import inspect
import operator
from collections.abc import Iterator
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
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_EVAL_IDENTITIES = ("DropPath", "DropBlock2d")  # timm's: they return their input in eval mode


@dataclass
class Conversion:
    """What :func:`convert` did: the convs it swapped, the (conv, norm) pairs it folded, the convs that apply ReLU
    and that add a residual in their epilogue, the convs it left as they were (``left``) and the converted convs
    it fused nothing into (``unfused``), each with why."""

    converted: list[str] = field(default_factory=list)
    folded: list[tuple[str, str]] = field(default_factory=list)
    relu: list[str] = field(default_factory=list)
    residual: list[str] = field(default_factory=list)
    left: dict[str, str] = field(default_factory=dict)
    unfused: dict[str, str] = field(default_factory=dict)
    found_by: str = "torch.fx"


class _Tracer(fx.Tracer):
    """torch's tracer with every BatchNorm kept as one call (torchvision's frozen one, and timm's BatchNormAct2d,
    a BatchNorm2d followed by its own dropout and activation) and our conv too."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (*_NORMS, Conv2d)) or super().is_leaf_module(m, qualname)


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


def _passes_through(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A module call that returns its input unchanged (in eval mode: dropouts, timm's DropPath and DropBlock)."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return False
    m = modules[node.target]
    if isinstance(m, nn.Identity):
        return True
    return not m.training and (
        isinstance(m, nn.modules.dropout._DropoutNd)
        or (type(m).__name__ in _EVAL_IDENTITIES and type(m).__module__.startswith("timm."))
    )


def _next(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[fx.Node | None, list[fx.Node]]:
    """The only user of ``node`` past calls that return their input (None where a value has several users or
    none), and those calls."""
    skipped = []
    while len(node.users) == 1:
        (node,) = node.users
        if not _passes_through(node, modules):
            return node, skipped
        skipped.append(node)
    return None, skipped


def _describe(node: fx.Node | None, modules: dict[str, nn.Module]) -> str:
    if node is None:
        return "its output has several users"
    if node.op == "call_module":
        return f"followed by {type(modules[node.target]).__name__} {node.target!r}"
    if node.op == "output":
        return "its output is the module's"
    return f"followed by {getattr(node.target, '__name__', node.target)}"


def _calls(graph: fx.Graph) -> dict[str, int]:
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    return calls


Pair = tuple[str, "str | None", "str | None", bool]  # conv, norm to fold, ReLU module to drop, relu


def _traced_pairs(model: nn.Module) -> tuple[list[Pair], dict[str, str]]:
    """(conv, norm or None, ReLU module to drop or None, relu) for each conv whose output goes only to a norm
    (and whose norm's output goes only to a ReLU), or only to a ReLU, as the traced graph shows; and why each other
    conv is not."""
    graph = _Tracer().trace(model)
    modules = dict(model.named_modules())
    calls = _calls(graph)
    pairs, reasons = [], {}
    for node in graph.nodes:
        if node.op != "call_module" or not _is_torch_conv(modules[node.target]):
            continue
        if calls[node.target] != 1:
            reasons[node.target] = f"called {calls[node.target]} times"
            continue
        norm, tail = None, node
        user, _ = _next(node, modules)
        if (
            user is not None
            and user.op == "call_module"
            and _foldable(modules[user.target])
            and calls[user.target] == 1
        ):
            norm, tail = user.target, user
        after, _ = _next(tail, modules)
        relu = after is not None and _is_relu(after, modules)
        drop = after.target if relu and after.op == "call_module" and calls[after.target] == 1 else None
        if norm is not None or relu:
            pairs.append((node.target, norm, drop, relu))
        else:
            reasons[node.target] = _describe(user, modules)
    return pairs, reasons


def _traces(module: nn.Module, prefix: str, untraced: list[str], trace) -> Iterator:
    """``trace(module)`` with ``prefix``, or where it does not trace (control flow on values, as in detection
    models), of each of its children that does, with theirs; ``untraced`` gets the modules that did not."""
    try:
        yield prefix, trace(module)
    except Exception as exc:  # noqa: BLE001 - any failure to trace: its children may
        untraced.append(f"{prefix.rstrip('.') or type(module).__name__} ({type(exc).__name__})")
        for name, child in module.named_children():
            yield from _traces(child, f"{prefix}{name}.", untraced, trace)


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


def _residual_add(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[fx.Node, fx.Node, list[fx.Node]] | None:
    """For a call of our conv without ReLU whose output, alone or past calls that return their input, is added to
    another computed tensor: (the add, the other tensor, the calls skipped), else None."""
    if node.op != "call_module" or not isinstance(modules[node.target], Conv2d) or modules[node.target].relu:
        return None
    if len(node.args) != 1 or node.kwargs:
        return None
    add, skipped = _next(node, modules)
    if add is None or add.kwargs:
        return None
    if (
        not (
            (add.op == "call_function" and add.target in _ADD_FUNCTIONS)
            or (add.op == "call_method" and add.target in ("add", "add_"))
        )
        or len(add.args) != 2
    ):
        return None
    tail = skipped[-1] if skipped else node
    others = [a for a in add.args if a is not tail]
    if len(others) != 1 or not isinstance(others[0], fx.Node) or others[0].op == "get_attr":
        return None
    if add.op == "call_method" and add.args[0] is not tail and add.target == "add_":
        return None  # other.add_(conv): other is changed in place, its other users would see it
    return add, others[0], skipped


def _repeated_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A ReLU of a conv's output (past calls that return their input) where the conv applies ReLU already."""
    source = node.args[0] if _is_relu(node, modules) and len(node.args) == 1 else None
    while isinstance(source, fx.Node) and _passes_through(source, modules):
        source = source.args[0]
    return (
        isinstance(source, fx.Node)
        and source.op == "call_module"
        and isinstance(modules[source.target], Conv2d)
        and modules[source.target].relu
    )


def _rewrite(graph: fx.Graph, modules: dict[str, nn.Module], places: dict[int, int]) -> list[str]:
    """Fuse into each conv the residual add after it (and the ReLU after that): the conv, called with
    ``residual=``, replaces the add; a ReLU left after a conv that applies one (a shared module) is dropped.
    Returns the convs given a residual."""
    calls = _calls(graph)
    fused = []
    for node in list(graph.nodes):
        if node.op != "call_module" or calls[node.target] != 1 or places[id(modules[node.target])] != 1:
            continue
        found = _residual_add(node, modules)
        if found is None:
            continue
        add, other, skipped = found
        end, dropped = add, [*skipped, add]
        after, between = _next(add, modules)
        if after is not None and _is_relu(after, modules):
            end, dropped = after, [*dropped, *between, after]
        with graph.inserting_before(add):
            call = graph.call_module(node.target, (node.args[0], other))
        call.meta = node.meta
        end.replace_all_uses_with(call)
        for dead in reversed([node, *dropped]):
            graph.erase_node(dead)
        modules[node.target].residual_may_broadcast = True
        if end is not add:
            modules[node.target].relu = True
        fused.append(node.target)
    for node in list(graph.nodes):
        if node.op == "call_module" and type(modules[node.target]) is nn.Identity and len(node.args) == 1:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    for node in list(graph.nodes):
        if _repeated_relu(node, modules):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    graph.lint()
    return fused


def _graph_module(module: nn.Module, graph: fx.Graph) -> fx.GraphModule:
    """``module`` with ``graph`` as its forward: the same class name, children, parameters and buffers."""
    gm = fx.GraphModule(module, graph, class_name=type(module).__name__)
    for name, child in module.named_children():
        setattr(gm, name, child)
    for name, p in module.named_parameters(recurse=False):
        gm.register_parameter(name, p)
    for name, b in module.named_buffers(recurse=False):
        gm.register_buffer(name, b, persistent=name not in module._non_persistent_buffers_set)
    gm.train(module.training)
    return gm


def _fuse_residuals(model: nn.Module, report: Conversion, inplace: bool) -> nn.Module:
    """The model with each residual add after a conv (and the ReLU after it) in the conv's epilogue, the module
    whose forward does the add rewritten (a GraphModule); the model itself only where it is a new copy."""

    def trace(m: nn.Module) -> fx.Graph:
        return _Tracer().trace(m)

    sites: dict[str, set[str]] = {}  # module doing an add or a repeated ReLU -> the convs before an add
    probe = copy.deepcopy(model)  # a trace given up on can leave proxies in the modules
    for prefix, graph in _traces(probe, "", [], trace):
        modules = dict(probe.get_submodule(prefix.rstrip(".")).named_modules())
        for node in graph.nodes:
            found = _residual_add(node, modules)
            where = found[0] if found is not None else node if _repeated_relu(node, modules) else None
            if where is None:
                continue
            stack = where.meta.get("nn_module_stack")
            inner = next(reversed(stack.values()))[0] if stack else ""
            site = f"{prefix}{inner}".rstrip(".") if inner else prefix.rstrip(".")
            sites.setdefault(site, set()).update([prefix + node.target] if found is not None else [])
    places = _places(model)
    for site in sorted(sites, key=lambda s: -s.count(".") - bool(s)):
        module = model.get_submodule(site)
        params = list(inspect.signature(module.forward).parameters.values())
        why = None
        if site == "" and inplace:
            why = "the add is in the model's own forward: convert(inplace=False) fuses it"
        elif places[id(module)] != 1:
            why = f"the add is in {site!r}, which sits in several places"
        elif len(params) != 1 or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
            why = f"the add is in {type(module).__name__}.forward, which takes more than one input"
        if why is None:
            try:
                graph = trace(module)
            except Exception as exc:  # noqa: BLE001 - it traced within the model: alone, it may not
                why = f"{type(module).__name__} does not trace alone ({type(exc).__name__})"
        if why is not None:
            report.unfused.update({conv: f"not given the residual add after it: {why}" for conv in sites[site]})
            continue
        fused = _rewrite(graph, dict(module.named_modules()), places)
        gm = _graph_module(module, graph)
        if site:
            _replace(model, site, gm)
        else:
            model = gm
        prefix = f"{site}." if site else ""
        report.residual += [prefix + conv for conv in fused]
        report.relu += [prefix + conv for conv in fused if gm.get_submodule(conv).relu]
    return model


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
            rounded once), and move the ReLU that follows, or a residual add and the ReLU after it, into the conv's
            epilogue. Inference only: the model must be in eval mode. A norm before its conv (DenseNet) is never
            folded.
        dtype: cast the model to this dtype (the folded weights are rounded once to it).
        device: move the model here.
        inplace: change ``model`` itself instead of a copy (a residual add in the model's own forward is then
            left unfused: fusing it makes the model a ``torch.fx.GraphModule``).

    Returns:
        The converted model, its ``conversion`` attribute saying what was done (:class:`Conversion`). Each module
        whose forward adds a conv's output to a residual is a ``torch.fx.GraphModule`` of the same class name,
        children and state dict.
    """
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise ValueError(f"convert: {type(model).__name__} has no nn.Conv2d: there is nothing to put on the kernels")
    if fuse_bn and model.training:
        raise ValueError("convert(fuse_bn=True) folds running statistics: call model.eval() first, or fuse_bn=False")
    if not inplace:
        model = copy.deepcopy(model)
    report = Conversion()
    pairs: list[Pair] = []
    if fuse_bn:
        untraced: list[str] = []
        # a trace given up on can leave proxies in the modules: trace a throwaway copy
        for prefix, (found, reasons) in _traces(copy.deepcopy(model), "", untraced, _traced_pairs):
            pairs += [(prefix + c, n and prefix + n, d and prefix + d, r) for c, n, d, r in found]
            report.unfused.update({prefix + conv: why for conv, why in reasons.items()})
        if untraced:
            report.found_by = f"torch.fx, per submodule where the module above did not trace: {', '.join(untraced)}"
    places = _places(model)
    fused = {}
    for conv, norm, drop, relu in pairs:
        if places[id(model.get_submodule(conv))] != 1 or (norm and places[id(model.get_submodule(norm))] != 1):
            report.unfused[conv] = "it, or the norm after it, sits in several places"
        else:
            fused[conv] = (norm, drop, relu)
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Conv2d) or isinstance(module, Conv2d):
            continue
        if not _is_torch_conv(module):
            report.left[name] = f"{type(module).__name__} has its own forward"
            report.unfused.pop(name, None)
            continue
        conv = _swap(model, module)
        report.converted.append(name)
        if name not in fused:
            if fuse_bn and name not in report.unfused:
                report.unfused[name] = "not traced: no module around it traces with torch.fx"
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
    if fuse_bn:
        model = _fuse_residuals(model, report, inplace)
        for conv in report.residual:
            report.unfused.pop(conv, None)
    model.to(device=device, dtype=dtype)
    model.conversion = report
    return model
