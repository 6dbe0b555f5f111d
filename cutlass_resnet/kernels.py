"""Which CUTLASS kernel runs each convolution, and the CUDA implementation of the op.

Selection is host-side and needs no GPU: :func:`select` picks a kernel by dtype, arch, channel
alignment and a tile heuristic on the GEMM shape (M = N*P*Q, N = K), pads the 3-channel stem to
4 channels for the fixed-channels kernel, splits batches whose tensors CUTLASS 2.x cannot index
(2^31 bytes), and asks CUTLASS's ``can_implement``. :func:`plan` does that for every conv of a
model. Whatever has no kernel runs the reference implementation, with a one-time warning (or
raises, with ``CUTLASS_RESNET_STRICT=1``).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from ._io import write_text
from .ops import _check_args, conv2d_fprop, output_size, reference_conv2d_fprop

__all__ = ["Problem", "Choice", "PlanEntry", "select", "plan", "STRICT"]

#: Raise instead of falling back to the reference when a CUDA conv has no kernel.
STRICT = os.environ.get("CUTLASS_RESNET_STRICT", "") == "1"
_DTYPES = {torch.float16: 0, torch.bfloat16: 1}
_MAX_BYTES = 2**31  # CUTLASS 2.x indexes each tensor with 32-bit offsets
_STEM_CHANNELS = 4  # the fixed-channels kernel's C (8-byte loads)
_REGULAR, _STEM, _GROUPED, _REGULAR_SM90A = 0, 1, 2, 3  # CrKind in conv_api.h
_GROUP_TILE_N = 32  # the grouped kernel's tile N: each (merged) group's K must be a multiple
# SMs of the usual part of each arch, for the tile heuristic when no device is given.
_SM_COUNTS = {(8, 0): 108, (8, 6): 84, (8, 7): 16, (8, 9): 128, (9, 0): 132, (10, 0): 148, (12, 0): 170}


@dataclass(frozen=True)
class Problem:
    """One convolution as the kernels see it: NHWC x, KRSC w, NPQK y."""

    n: int
    h: int
    w: int
    c: int
    k: int
    r: int
    s: int
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def p(self) -> int:
        return output_size(self.h, self.r, self.stride[0], self.padding[0], self.dilation[0])

    @property
    def q(self) -> int:
        return output_size(self.w, self.s, self.stride[1], self.padding[1], self.dilation[1])

    def as_list(self) -> list[int]:
        """The 16 integers of the binding's ``can_implement``."""
        return [
            self.n,
            self.h,
            self.w,
            self.c,
            self.k,
            self.r,
            self.s,
            self.p,
            self.q,
            *self.padding,
            *self.stride,
            *self.dilation,
            self.groups,
        ]

    def __str__(self) -> str:
        return (
            f"{self.n}x{self.h}x{self.w}x{self.c} * {self.k}x{self.r}x{self.s} s{self.stride[0]} "
            f"p{self.padding[0]} d{self.dilation[0]} g{self.groups}"
        )


@dataclass(frozen=True)
class Choice:
    """The kernel for a problem, or why there is none (``kernel`` None and ``reason`` set)."""

    kernel: str | None
    reason: str | None = None
    pad_channels: int = 0  #: C the input and weight are zero-padded to (the stem), 0 for none
    batch_chunk: int = 0  #: images per launch, when the batch must be split
    merge_groups: int = 0  #: adjacent groups merged into one block-diagonal group (grouped convs)


def _sm_count(arch: tuple[int, int]) -> int:
    return _SM_COUNTS.get(tuple(arch), 108)


def _fallback(reason: str) -> Choice:
    return Choice(kernel=None, reason=reason)


def _batch_chunk(problem: Problem, itemsize: int) -> int:
    per_image = max(problem.h * problem.w * problem.c, problem.p * problem.q * problem.k) * itemsize
    return max(1, (_MAX_BYTES - 1) // per_image)


def _ranked(candidates: list[tuple[str, tuple[int, ...]]], problem: Problem, sm_count: int) -> list[str]:
    """Kernels in order of preference: first the largest tile that still gives every SM a CTA (the
    smallest tile if none does), Hopper's before Ampere's at equal tile; then the others."""
    m = problem.n * problem.p * problem.q
    by_area = sorted(candidates, key=lambda kv: (kv[1][4] * kv[1][5], kv[1][3] == _REGULAR_SM90A), reverse=True)
    fits = [name for name, info in by_area if -(-m // info[4]) * -(-problem.k // info[5]) >= sm_count]
    first = fits[0] if fits else by_area[-1][0]
    return [first] + [name for name, _ in by_area if name != first]


def select(
    problem: Problem,
    dtype: torch.dtype,
    arch: tuple[int, int],
    sm_count: int | None = None,
    residual: bool = False,
) -> Choice:
    """Choose a kernel for ``problem`` on a GPU of compute capability ``arch`` (host-only)."""
    if dtype not in _DTYPES:
        return _fallback(f"{dtype} has no CUTLASS kernel (fp16 and bf16 only)")
    if tuple(arch) < (8, 0):
        return _fallback(f"compute capability {arch[0]}.{arch[1]} is older than the kernels' 8.0")
    if problem.k % 8:
        return _fallback(f"K={problem.k} output channels is not a multiple of 8 (128-bit epilogue)")
    original = problem
    problem, kind, pad_channels, merge = launch_form(problem)
    if kind == _GROUPED and not merge:
        return _fallback(
            f"grouped convolution with {original.c // original.groups} channels per group cannot be "
            f"blocked into groups of a multiple of 8 in and {_GROUP_TILE_N} out"
        )
    if kind == _GROUPED and residual:
        return _fallback("grouped convolution with a residual add has no CUTLASS kernel")
    if kind == _REGULAR and problem.c % 8:
        return _fallback(f"C={problem.c} input channels is not a multiple of 8 (128-bit loads)")
    from . import build  # not at import time: `python -m cutlass_resnet.build` runs it as __main__

    if not build.load():
        return _fallback(f"the CUTLASS extension is unavailable: {build.load_error()}")
    table = [
        (i, name, info)
        for i, (name, info) in enumerate(build.kernel_table())
        if info[0] == _DTYPES[dtype] and runs_on(info, kind, arch)
    ]
    if not table:
        return _fallback(f"no compiled kernel for {dtype} on sm_{arch[0]}{arch[1]}")
    chunk = _batch_chunk(problem, 2)
    launch = replace(problem, n=min(problem.n, chunk)) if problem.n else replace(problem, n=1)
    ranked = _ranked([(n, info) for _, n, info in table], launch, sm_count or _sm_count(arch))
    statuses = []
    for name in ranked:
        index = next(i for i, n, _ in table if n == name)
        statuses.append(torch.ops.cutlass_resnet_C.can_implement(index, launch.as_list()))
        if statuses[-1] == 0:
            return Choice(name, None, pad_channels, chunk if problem.n > chunk else 0, merge)
    return _fallback(f"CUTLASS rejected it ({ranked[0]}): {torch.ops.cutlass_resnet_C.status_string(statuses[0])}")


def launch_form(problem: Problem) -> tuple[Problem, int, int, int]:
    """``problem`` as its kernel sees it, with the kernel kind, the stem's padded C (or 0) and the
    number of groups merged (0 for a grouped conv that cannot be blocked)."""
    if problem.groups > 1:
        merge = _merge_factor(problem)
        return replace(problem, groups=problem.groups // max(merge, 1)), _GROUPED, 0, merge
    if problem.c < _STEM_CHANNELS:
        return replace(problem, c=_STEM_CHANNELS), _STEM, _STEM_CHANNELS, 0
    return problem, _REGULAR, 0, 0


def runs_on(info: tuple[int, ...], kind: int, arch: tuple[int, int]) -> bool:
    """Whether a kernel (its ``kernel_info``) serves problems of ``kind`` on a GPU of ``arch``:
    sm_90a kernels serve regular convs, on Hopper only."""
    if info[1] > arch[0] * 10 + arch[1]:
        return False
    return info[3] == kind or (kind == _REGULAR and info[3] == _REGULAR_SM90A and tuple(arch) == (9, 0))


def _merge_factor(problem: Problem) -> int:
    """How many adjacent groups to merge so that each merged group has a multiple of 8 input and of
    the grouped kernel's tile N output channels; 0 if none does. Merging multiplies the MACs by it."""
    c, k = problem.c // problem.groups, problem.k // problem.groups
    for m in range(1, problem.groups + 1):
        if problem.groups % m == 0 and (m * c) % 8 == 0 and (m * k) % _GROUP_TILE_N == 0:
            return m
    return 0


@dataclass(frozen=True)
class PlanEntry:
    """What one conv of a model would run."""

    module: str
    problem: Problem
    choice: Choice

    def __str__(self) -> str:
        what = self.choice.kernel or f"reference: {self.choice.reason}"
        extras = []
        if self.choice.pad_channels:
            extras.append(f"C padded to {self.choice.pad_channels}")
        if self.choice.batch_chunk:
            extras.append(f"batch split by {self.choice.batch_chunk}")
        if self.choice.merge_groups:
            extras.append(f"groups merged by {self.choice.merge_groups}")
        return f"{self.module:<28} {self.problem!s:<44} {what}" + (f" ({', '.join(extras)})" if extras else "")


def plan(
    model: nn.Module,
    input_shape: tuple[int, int, int, int] = (1, 3, 224, 224),
    dtype: torch.dtype = torch.float16,
    arch: tuple[int, int] = (8, 0),
    sm_count: int | None = None,
) -> list[PlanEntry]:
    """For every conv of ``model`` at ``input_shape``, the kernel that would run on ``arch``.

    Host-only: the model runs on fake tensors to find each conv's problem, and each problem
    goes through :func:`select` (so CUTLASS's ``can_implement``), with no GPU needed.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    from .nn import Conv2d

    problems: list[tuple[str, Problem, bool]] = []

    def record(name: str, module: Conv2d, args: tuple, kwargs: dict) -> None:
        n, c, h, w = args[0].shape
        residual = len(args) > 1 and args[1] is not None or kwargs.get("residual") is not None
        pads = module._reversed_padding_repeated_twice
        if module._pad_input:
            h, w, padding = h + pads[2] + pads[3], w + pads[0] + pads[1], (0, 0)
        else:
            padding = (pads[2], pads[0])
        k, _, r, s = module.weight.shape
        problems.append(
            (
                name,
                Problem(
                    int(n),
                    int(h),
                    int(w),
                    int(c),
                    k,
                    r,
                    s,
                    tuple(module.stride),
                    padding,
                    tuple(module.dilation),
                    module.groups,
                ),
                residual,
            )
        )

    hooks = [
        m.register_forward_pre_hook(lambda mod, a, kw, name=name: record(name, mod, a, kw), with_kwargs=True)
        for name, m in model.named_modules()
        if isinstance(m, Conv2d)
    ]
    param = next(model.parameters())  # a model built on the meta device plans in no time
    try:
        with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True):
            model(torch.empty(input_shape, dtype=param.dtype, device=param.device))
    finally:
        for h in hooks:
            h.remove()
    from . import build

    build.load(build.default_archs() or [build.arch_of(arch)])
    return [PlanEntry(name, p, select(p, dtype, arch, sm_count, residual)) for name, p, residual in problems]


# --- the CUDA implementation of the op ----------------------------------------------------------

_warned: set[str] = set()
_prepared_weights = WeakIdKeyDictionary()  # weight -> ((its _version, how), prepared copy)


@cache
def _device_info(index: int) -> tuple[tuple[int, int], int]:
    props = torch.cuda.get_device_properties(index)
    return (props.major, props.minor), props.multi_processor_count


@cache
def _cached_select(problem: Problem, dtype: torch.dtype, device_index: int, residual: bool) -> Choice:
    arch, sm_count = _device_info(device_index)
    return select(problem, dtype, arch, sm_count, residual)


def _pad_channels(t: Tensor, channels: int) -> Tensor:
    shape = (t.shape[0], channels, *t.shape[2:])
    padded = torch.empty(shape, dtype=t.dtype, device=t.device, memory_format=torch.channels_last).zero_()
    padded[:, : t.shape[1]] = t
    return padded


def _block_diagonal(weight: Tensor, groups: int, merge: int) -> Tensor:
    """A grouped conv's weight as one with groups // merge groups: each merged group's filter is
    block-diagonal, zero outside its original groups."""
    k, c, r, s = weight.shape
    blocks = weight.reshape(groups // merge, merge, k // groups, c, r, s)
    out = weight.new_zeros(groups // merge, merge, k // groups, merge, c, r, s)
    for i in range(merge):
        out[:, i, :, i] = blocks[:, i]
    return out.reshape(k, merge * c, r, s).contiguous(memory_format=torch.channels_last)


def _prepared_weight(weight: Tensor, how: tuple, prepare) -> Tensor:
    """``prepare(weight)``, cached per weight until it changes (the stem's padding, grouped blocks)."""
    try:
        current = (weight._version, how)
    except RuntimeError:  # an inference-mode tensor has no version counter: do not cache
        return prepare(weight.detach())
    version, prepared = _prepared_weights.get(weight, (None, None))
    if version != current:
        prepared = prepare(weight.detach())
        _prepared_weights[weight] = (current, prepared)
    return prepared


# --- each kernel checks itself once per GPU before it is trusted ---------------------------------


def _device(index: int) -> torch.device:
    return torch.device("cuda", index)


def _verdict_key(kernel: str, device_index: int) -> str:
    from . import build

    (major, minor), _ = _device_info(device_index)
    name = torch.cuda.get_device_name(device_index) if torch.cuda.is_available() else "no-gpu"
    return f"{name}|sm_{major}{minor}|{build.build_id()}|{kernel}"


def verdicts_path() -> Path:
    """Where each kernel's self-check result is kept, per GPU and build: ``<cache>/kernels/verdicts.json``."""
    from . import build

    return build.cache_root() / "kernels" / "verdicts.json"


def record_verdict(key: str, reason: str | None) -> dict[str, str]:
    """Persist one self-check result (None: passed), atomically and under a file lock; return all."""
    from filelock import FileLock

    path = verdicts_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        records = json.loads(path.read_text()) if path.exists() else {}
        records[key] = reason or ""
        write_text(path, json.dumps(records, indent=1, sort_keys=True))
    return records


def _kernel_verdict(kernel: str, device_index: int) -> str | None:
    """None when ``kernel`` may run on this GPU; else why not. Checked once, then remembered on disk.

    Never checked while a CUDA graph is being captured (the check synchronizes): until a plain
    run has checked it, the kernel is not used inside a graph.
    """
    if _capturing():
        records = json.loads(verdicts_path().read_text()) if verdicts_path().exists() else {}
        known = records.get(_verdict_key(kernel, device_index))
        if known is None:
            return f"{kernel} is not self-checked yet: run the model once before capturing a CUDA graph"
        return known or None
    return _checked_verdict(kernel, device_index)


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


@cache
def _checked_verdict(kernel: str, device_index: int) -> str | None:
    key = _verdict_key(kernel, device_index)
    path = verdicts_path()
    records = json.loads(path.read_text()) if path.exists() else {}
    if key not in records:
        records = record_verdict(key, check_kernel(kernel, _device(device_index)))
    return records[key] or None


def check_kernel(kernel: str, device: torch.device, problem: Problem | None = None) -> str | None:
    """Run ``kernel`` once on random data and compare with float64; None when it is right.

    Right means the brief's rule: error at most twice that of aten's own computation in the
    same dtype (plus half an ulp of the largest output).
    """
    from . import build

    info = dict(build.kernel_table())[kernel]
    dtype = (torch.float16, torch.bfloat16)[info[0]]
    if problem is None:
        problem = {
            _REGULAR: Problem(2, 12, 12, 64, 64, 3, 3, (1, 1), (1, 1)),
            _STEM: Problem(2, 20, 20, 4, 64, 7, 7, (2, 2), (3, 3)),
            _GROUPED: Problem(2, 12, 12, 64, 64, 3, 3, (1, 1), (1, 1), groups=2),
            _REGULAR_SM90A: Problem(2, 12, 12, 64, 64, 3, 3, (1, 1), (1, 1)),
        }[info[3]]
    g = torch.Generator().manual_seed(0)
    pr = problem

    def operand(*shape, scale=1.0):
        t = (torch.randn(shape, generator=g) * scale).to(device=device, dtype=dtype)
        return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t

    c = pr.c // pr.groups
    x, w = operand(pr.n, pr.c, pr.h, pr.w), operand(pr.k, c, pr.r, pr.s, scale=(c * pr.r * pr.s) ** -0.5)
    bias = operand(pr.k)
    residual = None if info[3] == _GROUPED else operand(pr.n, pr.k, pr.p, pr.q)
    conv = (list(pr.stride), list(pr.padding), list(pr.dilation), pr.groups)
    F = torch.nn.functional
    try:
        y = _launch(kernel, x, w, bias, residual, *conv, True)
        aten = F.conv2d(x, w, bias, *conv) + (0 if residual is None else residual)
        expected = F.conv2d(x.double(), w.double(), bias.double(), *conv)
        expected = torch.relu(expected + (0 if residual is None else residual.double()))
        aten = torch.relu(aten)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as exc:  # noqa: BLE001 - any failure disables the kernel
        return f"{kernel} failed its self-check: {exc}"
    error = (y.double() - expected).abs().max().item()
    aten_error = (aten.double() - expected).abs().max().item()
    floor = 0.5 * torch.finfo(dtype).eps * expected.abs().max().item()
    if not error <= 2 * aten_error + floor:
        return f"{kernel} failed its self-check on {pr} (error {error:.3g}, aten's {aten_error:.3g})"
    return None


@conv2d_fprop.register_kernel("cuda")
def _cuda_conv2d_fprop(x, weight, bias, residual, stride, padding, dilation, groups, relu):
    n, k, p, q = _check_args(x, weight, bias, residual, stride, padding, dilation, groups)
    problem = Problem(
        n,
        x.shape[2],
        x.shape[3],
        x.shape[1],
        k,
        weight.shape[2],
        weight.shape[3],
        tuple(stride),
        tuple(padding),
        tuple(dilation),
        groups,
    )
    device_index = x.device.index or 0
    choice = _cached_select(problem, x.dtype, device_index, residual is not None)
    reason = choice.reason if choice.kernel is None else _kernel_verdict(choice.kernel, device_index)
    if reason is not None:
        message = f"cutlass_resnet: no CUTLASS kernel for conv {problem} ({x.dtype}): {reason}"
        if STRICT:
            raise RuntimeError(message + "; unset CUTLASS_RESNET_STRICT to fall back to the reference")
        if reason not in _warned:
            _warned.add(reason)
            warnings.warn(message + "; running the reference convolution (warned once per reason)", stacklevel=2)
        return reference_conv2d_fprop(x, weight, bias, residual, stride, padding, dilation, groups, relu)
    if choice.pad_channels:
        x = _pad_channels(x, choice.pad_channels)
        weight = _prepared_weight(weight, ("pad", choice.pad_channels), lambda w: _pad_channels(w, choice.pad_channels))
    if choice.merge_groups:
        merge = choice.merge_groups
        weight = _prepared_weight(weight, ("blocks", merge), lambda w: _block_diagonal(w, groups, merge))
        groups //= merge
    conv = (list(stride), list(padding), list(dilation), groups, relu)
    if not choice.batch_chunk:
        return _launch(choice.kernel, x, weight, bias, residual, *conv)
    step = choice.batch_chunk
    parts = [
        _launch(
            choice.kernel, x[i : i + step], weight, bias, None if residual is None else residual[i : i + step], *conv
        )
        for i in range(0, n, step)
    ]
    return torch.cat(parts).contiguous(memory_format=torch.channels_last)


@cache
def _kernel_index(kernel: str) -> int:
    from . import build

    return [name for name, _ in build.kernel_table()].index(kernel)


def _launch(kernel, x, weight, bias, residual, stride, padding, dilation, groups, relu):
    """One checked kernel launch through the binding."""
    index = _kernel_index(kernel)
    return torch.ops.cutlass_resnet_C.fprop(x, weight, bias, residual, stride, padding, dilation, groups, relu, index)
