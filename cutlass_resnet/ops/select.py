"""Which CUTLASS kernel runs a convolution: host-side, no GPU needed.

:func:`select` pads the 3-channel stem to 4 channels for the fixed-channels kernel, merges small
groups into 32-channel blocks, splits batches whose tensors CUTLASS 2.x cannot index (2^31 bytes),
and ranks every kernel of the dtype and compute capability that CUTLASS's ``can_implement``
accepts by the time model of :mod:`.cost` (tile and wave quantization, occupancy, the arch's peak
and bandwidth); where the output tiles alone would leave more than half the SMs idle, it splits K.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from functools import cache
from typing import NamedTuple

import torch
from torch import Tensor

from . import cost, library
from .conv import output_size
from .kernels import CONV_RECORD, INSTANTIATIONS, KINDS, REGISTERS, Kind

__all__ = [
    "Choice",
    "KernelInfo",
    "LaunchShape",
    "KernelKind",
    "Problem",
    "capability_of",
    "device_info",
    "int8_not_supported_reasons",
    "kernel",
    "kernel_table",
    "launch_form",
    "not_supported_reasons",
    "select",
    "select_int8",
]

KERNEL_DTYPES = (torch.float16, torch.bfloat16)  # CrDtype in conv_api.h, by value
MAX_BYTES = 2**31  # CUTLASS 2.x indexes each tensor with 32-bit offsets
STEM_CHANNELS = 4  # the fixed-channels kernel's C (8-byte loads)
GROUP_TILE_N = 32  # the grouped kernel's tile N: each (merged) group's K must be a multiple
INT8_ALIGNMENT = 16  # the int8 kernels' C and K: 16-byte loads and stores
SPLITS = (2, 3, 4, 6, 8, 12, 16)  # split-K slices tried (the Hopper kernel takes up to 16)


#: Which problems a kernel takes (CrKind in conv_api.h): one member per kind of :data:`.kernels.KINDS`, by value.
KernelKind = IntEnum("KernelKind", [(k.name, i) for i, k in enumerate(KINDS)], module=__name__)


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

    @classmethod
    def from_conv(
        cls,
        x_shape: Sequence[int],
        weight_shape: Sequence[int],
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
        groups: int,
    ) -> Problem:
        """The problem of a conv of an ``(N, C, H, W)`` input with a ``(K, C/groups, R, S)`` weight."""
        n, c, h, w = (int(d) for d in x_shape)
        k, _, r, s = (int(d) for d in weight_shape)
        return cls(n, h, w, c, k, r, s, tuple(stride), tuple(padding), tuple(dilation), groups)

    @property
    def p(self) -> int:
        return output_size(self.h, self.r, self.stride[0], self.padding[0], self.dilation[0])

    @property
    def q(self) -> int:
        return output_size(self.w, self.s, self.stride[1], self.padding[1], self.dilation[1])

    @property
    def flops(self) -> int:
        """Its floating-point operations: two per multiply-add."""
        return 2 * self.n * self.p * self.q * self.k * self.r * self.s * self.c // self.groups

    def as_list(self, split_k: int = 1) -> list[int]:
        """The conv record the binding takes (:data:`.kernels.CONV_RECORD`, by field; split_k last, when not 1)."""
        fields = {
            "n": self.n, "c": self.c, "h": self.h, "w": self.w, "k": self.k, "r": self.r, "s": self.s,
            "stride_h": self.stride[0], "stride_w": self.stride[1], "pad_h": self.padding[0],
            "pad_w": self.padding[1], "dil_h": self.dilation[0], "dil_w": self.dilation[1], "groups": self.groups,
            "split_k": split_k,
        }  # fmt: skip
        return [fields[name] for name in CONV_RECORD[: None if split_k != 1 else -1]]

    def __str__(self) -> str:
        return (
            f"{self.n}x{self.h}x{self.w}x{self.c} * {self.k}x{self.r}x{self.s} s{self.stride[0]} "
            f"p{self.padding[0]} d{self.dilation[0]} g{self.groups}"
        )


class LaunchShape(NamedTuple):
    """What one launch of a kernel does, from the kernel's own parameters (host-only)."""

    ctas: int  #: threadblocks launched
    mainloop_iterations: int  #: k-iterations of the main loop per threadblock
    shared_memory: int  #: bytes of shared memory per threadblock
    threads: int  #: threads per threadblock
    parameter_bytes: int  #: kernel parameters a launch passes (copied with every launch)

    def __str__(self) -> str:
        return f"{self.ctas} CTAs x {self.mainloop_iterations} iterations, {self.shared_memory / 1024:.0f} KiB smem"


class KernelInfo(NamedTuple):
    """One compiled kernel, as the list it was generated from describes it (CrKernel in conv_api.h, which the
    binding's ``kernel_info`` reads: a test checks the two agree)."""

    index: int
    name: str
    dtype: torch.dtype
    min_sm: int  #: lowest compute capability it runs on, x10
    alignment: int  #: elements per access of x and w
    kind: KernelKind
    tile_m: int
    tile_n: int
    tile_k: int
    stages: int

    @property
    def traits(self) -> Kind:
        """What its kind takes (:data:`.kernels.KINDS`)."""
        return KINDS[self.kind]

    @property
    def hopper(self) -> bool:
        """sm_90a code (TMA, wgmma): runs on Hopper only."""
        return self.traits.hopper

    @property
    def split(self) -> bool:
        """A split-K kernel: fp32 partial sums of slices, then a reduction."""
        return self.traits.split

    @property
    def takes_residual(self) -> bool:
        """Whether its epilogue adds a residual (the stem and grouped kernels add none)."""
        return self.traits.residual

    @property
    def problem_kind(self) -> KernelKind:
        """The kind of problem it runs: REGULAR for every regular, Hopper and split-K kernel."""
        return KernelKind[self.traits.problem]

    def registers(self, capability: tuple[int, int]) -> int:
        """Registers per thread of its code for a GPU of ``capability`` (:data:`.kernels.REGISTERS`, measured with
        cuobjdump: the sm_90a build on Hopper, the sm_80 build elsewhere), 0 where unknown."""
        measured = REGISTERS.get(self.name, {})
        return measured.get("sm_90a" if tuple(capability) == (9, 0) else "sm_80", 0)

    def serves(self, kind: KernelKind, capability: tuple[int, int]) -> bool:
        """Whether it runs problems of ``kind`` on a GPU of ``capability`` (sm_90a kernels: on Hopper only)."""
        if self.min_sm > capability[0] * 10 + capability[1] or (self.hopper and tuple(capability) != (9, 0)):
            return False
        return self.problem_kind == kind

    def can_implement(self, problem: Problem, split_k: int = 1) -> int:
        """CUTLASS's host-side ``can_implement`` of the problem: 0 when accepted, else a status."""
        return int(torch.ops.cutlass_resnet_C.can_implement(self.index, problem.as_list(split_k)))

    def describe(self, problem: Problem, split_k: int = 1) -> LaunchShape:
        """CTAs, main-loop iterations, shared memory, threads and parameter bytes of a launch on ``problem``
        (which it must accept)."""
        return LaunchShape(*torch.ops.cutlass_resnet_C.describe(self.index, problem.as_list(split_k)))

    def host_reference(self, *args: object, split_k: int = 1) -> Tensor:
        """:meth:`launch`'s arguments, as CPU tensors: the binding's checks and operand packing, then CUTLASS's
        host reference convolution on the arguments a launch would get, with this kernel's epilogue."""
        return torch.ops.cutlass_resnet_C.host_reference(*args, self.index, split_k)

    def dry_run(self, *args: object, split_k: int = 1) -> int:
        """:meth:`launch`'s arguments, on tensors of any device: everything the launch does but the launch (the
        binding's checks, the output, the kernel's Params and TMA descriptors). 0 when a launch would follow, else
        the kernel's status (``torch.ops.cutlass_resnet_C.status_string`` names it)."""
        return int(torch.ops.cutlass_resnet_C.dry_run(*args, self.index, split_k))

    def scale_shift(self, alpha: Tensor, beta: Tensor) -> Tensor:
        """An int8 kernel's per-channel ``alpha`` and ``beta`` as it reads them (a fresh tensor, aligned for its
        vector loads): (K, 2) pairs for the Sm80 kernels, (2, K) rows for Hopper's."""
        return torch.stack((alpha, beta), 0 if self.hopper else 1)

    def launch(
        self,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        residual: Tensor | None,
        stride: list[int],
        padding: list[int],
        dilation: list[int],
        groups: int,
        relu: bool,
        split_k: int = 1,
    ) -> Tensor:
        """One launch through the binding, which checks every operand first."""
        return torch.ops.cutlass_resnet_C.fprop(
            x, weight, bias, residual, stride, padding, dilation, groups, relu, self.index, split_k
        )


@cache
def kernel_table() -> tuple[KernelInfo, ...]:
    """Every kernel of the loaded extension, in the binding's order, described by the list it was generated from
    (:data:`.kernels.INSTANTIATIONS`)."""
    listed = {i.name: i for i in INSTANTIATIONS}
    table = []
    for index, name in enumerate(torch.ops.cutlass_resnet_C.kernels()):
        i = listed[name]
        kind = KernelKind[i.kind]
        table.append(KernelInfo(index, name, _DTYPES[i.dtype], i.sm, i.alignment, kind, *i.tile, i.stages or 0))
    return tuple(table)


_DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16, "s8": torch.int8}


@cache
def kernel(name: str) -> KernelInfo:
    """The compiled kernel called ``name`` (looked up once: the dispatcher asks on every launch)."""
    for info in kernel_table():
        if info.name == name:
            return info
    raise KeyError(f"no compiled kernel named {name!r}")


def capability_of(arch: object) -> tuple[int, int]:
    """The compute capability ``arch`` names: ``(9, 0)``, ``"sm_90"``, ``"sm90a"``, ``"9.0"``, ``"9.0a"``, a CUDA
    ``torch.device`` or a CUDA device index (those two ask the GPU)."""
    if isinstance(arch, (torch.device, int)) and not isinstance(arch, bool):
        device = arch if isinstance(arch, torch.device) else torch.device("cuda", arch)
        if device.type != "cuda":
            raise ValueError(f"a capability comes from a CUDA device, got {device}")
        return tuple(torch.cuda.get_device_capability(device))
    if isinstance(arch, str):
        text = arch.strip().lower().removeprefix("sm_").removeprefix("sm").removesuffix("a")
        major, dot, minor = text.partition(".")
        if not dot and len(text) >= 2:  # "90": the last digit is the minor
            major, minor = text[:-1], text[-1]
        if major.isdigit() and minor.isdigit():
            return int(major), int(minor)
    elif (
        isinstance(arch, (tuple, list))
        and len(arch) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in arch)
    ):
        return int(arch[0]), int(arch[1])
    raise ValueError(
        f"a GPU is named by its compute capability: (9, 0), 'sm_90', '9.0' or '9.0a', a CUDA torch.device or a "
        f"device index; got {arch!r}"
    )


@cache
def device_info(index: int) -> tuple[tuple[int, int], int]:
    """(compute capability, SM count) of CUDA device ``index``."""
    props = torch.cuda.get_device_properties(index)
    return (props.major, props.minor), props.multi_processor_count


@dataclass(frozen=True)
class Choice:
    """The kernel for a problem, or why there is none (``kernel`` None and ``reason`` set)."""

    kernel: str | None
    reason: str | None = None
    pad_channels: int = 0  #: C the input and weight are zero-padded to (the stem), 0 for none
    batch_chunk: int = 0  #: images per launch, when the batch must be split
    merge_groups: int = 0  #: adjacent groups merged into one block-diagonal group (grouped convs)
    launch: LaunchShape | None = None  #: what one launch does (of a chunk, when the batch is split)
    split_k: int = 0  #: slices of the GEMM K summed by a reduction (split-K kernels), 0 for none
    estimate_us: float | None = None  #: the time model's estimate of the conv (all its launches), in us


def _fallback(reason: str) -> Choice:
    return Choice(kernel=None, reason=reason)


def _batch_chunk(problem: Problem, itemsize: int) -> int:
    per_image = max(problem.h * problem.w * problem.c, problem.p * problem.q * problem.k) * itemsize
    return max(1, (MAX_BYTES - 1) // per_image)


def _bytes(problem: Problem, residual: bool, itemsize: int = 2) -> int:
    """What a conv reads and writes at the least: x, w, y and the residual, ``itemsize`` bytes an element."""
    pr = problem
    x, w, y = pr.n * pr.h * pr.w * pr.c, pr.k * pr.r * pr.s * pr.c // pr.groups, pr.n * pr.p * pr.q * pr.k
    return itemsize * (x + w + y * (2 if residual else 1))


def estimate_us(
    info: KernelInfo,
    problem: Problem,
    launch: LaunchShape,
    capability: tuple[int, int],
    sm_count: int | None = None,
    split_k: int = 1,
    residual: bool = False,
) -> float:
    """The time model's estimate of one launch of ``info`` on ``problem`` (its launch form), in microseconds:
    the kernel, and for a split-K kernel its fp32 partial sums and their reduction."""
    partials = 4 * split_k * problem.n * problem.p * problem.q * problem.k if info.split else 0
    int8 = info.dtype == torch.int8
    moved = _bytes(problem, residual, 1 if int8 else 2)
    main = cost.estimate(
        tile=(info.tile_m, info.tile_n, info.tile_k),
        hopper=info.hopper,
        ctas=launch.ctas,
        mainloop_iterations=launch.mainloop_iterations,
        shared_memory=launch.shared_memory,
        bytes_moved=moved + partials,
        capability=capability,
        sm_count=sm_count,
        threads=launch.threads,
        registers=info.registers(capability),
        int8=int8,
    )
    if not info.split:
        return main.us
    return main.us + cost.memory_us(partials + moved, capability) + cost.LAUNCH_US


def roofline_us(problem: Problem, capability: tuple[int, int], residual: bool = False, int8: bool = False) -> float:
    """The per-layer roofline of ``problem``: its multiply-adds at the GPU's peak or x, w, y and the residual at
    its bandwidth, whichever takes longer (int8: one byte an element, the int8 peak)."""
    return cost.roofline_us(problem.flops, _bytes(problem, residual, 1 if int8 else 2), capability, int8)


#: The int8 kernels the time model assumes, by family: (tile M, N, K in elements, shared memory bytes, threads).
#: Sm80: CUTLASS's conv2d_fprop_implicit_gemm_s8nhwc_s8nhwc_s32nhwc_tensor_op_s32_sm80 unit test (128x128x64,
#: warps 64x64x64, 3 stages); Sm90: a CUTLASS 3.x int8 collective of 128x128x128 tiles, 4 stages.
INT8_DESIGNS = {False: (128, 128, 64, 3 * 2 * 128 * 64, 128), True: (128, 128, 128, 4 * 2 * 128 * 128, 0)}


def select_int8(
    problem: Problem,
    capability: tuple[int, int],
    sm_count: int | None = None,
    residual: bool = False,
    *,
    exclude: Collection[str] = (),
) -> Choice:
    """Choose the int8 kernel for ``problem`` (host-only), as :func:`select` does for fp16: the fixed-channels
    kernel for up to 4 channels (the 3-channel stem zero-padded to 4) without a residual, else C zero-padded to a
    multiple of 16 where it is not. Where none takes it, a choice without a kernel (the int8 reference runs), with
    the reason and the time model's estimate on the int8 kernel design for ``capability`` (:data:`INT8_DESIGNS`)."""
    reasons = int8_not_supported_reasons(problem, capability)
    if not reasons and not library.load():
        reasons = [f"the CUTLASS extension is unavailable: {library.load_error()}"]
    stem = problem.c <= STEM_CHANNELS and not (residual and not KINDS[KernelKind.STEM].residual)
    kind = KernelKind.STEM if stem else KernelKind.REGULAR
    if not reasons:
        candidates = [
            k for k in kernel_table() if k.dtype == torch.int8 and k.serves(kind, capability) and k.name not in exclude
        ]
        if not candidates:
            reasons = [f"no compiled int8 kernel for sm_{capability[0]}{capability[1]}"]
    if reasons:
        return _no_int8_kernel(reasons[0], problem, capability, sm_count, residual)
    step = STEM_CHANNELS if kind == KernelKind.STEM else INT8_ALIGNMENT
    pad_channels = -(-problem.c // step) * step if problem.c % step else 0
    launch_problem = replace(problem, c=pad_channels) if pad_channels else problem
    sms = sm_count or cost.gpu_spec(capability).sms
    options, refused = _options(candidates, launch_problem, capability, sms, residual)
    if not options:
        name, status = refused
        reason = f"CUTLASS rejected it ({name}): {torch.ops.cutlass_resnet_C.status_string(status)}"
        return _no_int8_kernel(reason, problem, capability, sm_count, residual)
    us, _, info, launch = min(options, key=lambda o: (o[0], -o[2].tile_m * o[2].tile_n))
    return Choice(info.name, None, pad_channels, launch=launch, estimate_us=us)


def int8_not_supported_reasons(problem: Problem, capability: tuple[int, int]) -> list[str]:
    """Why no int8 kernel takes ``problem``, every reason that holds; empty where one may (CUTLASS's
    ``can_implement`` decides). Host-only."""
    reasons = []
    if tuple(capability) < (8, 0):
        reasons.append(f"compute capability {capability[0]}.{capability[1]} is older than the int8 kernels' 8.0")
    if problem.groups > 1:
        reasons.append("grouped int8 convolution has no CUTLASS kernel")
    if problem.k % INT8_ALIGNMENT:
        reasons.append(f"K={problem.k} output channels is not a multiple of 16 (int8 128-bit epilogue)")
    if (
        problem.n * problem.h * problem.w * problem.c >= MAX_BYTES
        or problem.n * problem.p * problem.q * problem.k >= MAX_BYTES
    ):
        reasons.append("a tensor of 2**31 bytes or more (CUTLASS 2.x's 32-bit offsets): split the batch")
    return reasons


def _no_int8_kernel(
    reason: str, problem: Problem, capability: tuple[int, int], sm_count: int | None, residual: bool
) -> Choice:
    """No int8 kernel, and why: the time model's estimate of ``problem`` in int8 on the int8 kernel design for
    ``capability`` (:data:`INT8_DESIGNS`)."""
    hopper = capability[0] == 9 and capability[1] == 0
    tile_m, tile_n, tile_k, shared, threads = INT8_DESIGNS[hopper]
    k_per_group, crs = problem.k // problem.groups, problem.c // problem.groups * problem.r * problem.s
    m = problem.n * problem.p * problem.q
    ctas = -(-m // tile_m) * problem.groups * -(-k_per_group // tile_n)
    us = cost.estimate(
        tile=(tile_m, tile_n, tile_k),
        hopper=hopper,
        ctas=ctas,
        mainloop_iterations=-(-crs // tile_k),
        shared_memory=shared,
        bytes_moved=_bytes(problem, residual, 1),
        capability=capability,
        sm_count=sm_count,
        threads=threads,
        int8=True,
    ).us
    return Choice(kernel=None, reason=reason, estimate_us=us)


def _options(
    candidates: list[KernelInfo], problem: Problem, capability: tuple[int, int], sm_count: int, residual: bool
) -> tuple[list[tuple[float, int, KernelInfo, LaunchShape]], tuple[str, int] | None]:
    """(estimate, split_k, kernel, launch) of the candidates CUTLASS accepts, and the first refusal (kernel,
    status), if any. Where no unsplit launch would give half the SMs an output tile, the split-K launches are
    the options (when a split-K kernel takes the problem): a grid that small leaves the GPU waiting on the few
    SMs that load the whole filter."""
    unsplit, refused = [], None
    for info in (k for k in candidates if not k.split):
        status = info.can_implement(problem)
        if status:
            refused = refused or (info.name, status)
            continue
        launch = info.describe(problem)
        unsplit.append((estimate_us(info, problem, launch, capability, sm_count, 1, residual), 1, info, launch))
    if unsplit and max(o[3].ctas for o in unsplit) * 2 >= sm_count:
        return unsplit, refused
    split = []
    for info in (k for k in candidates if k.split):
        for slices in SPLITS:
            # A Hopper slice narrower than the TMA box (tile K channels) loads the rest as zeros: MACs for nothing.
            if info.hopper and problem.c // slices < info.tile_k:
                continue
            if info.can_implement(problem, slices) == 0:
                launch = info.describe(problem, slices)
                us = estimate_us(info, problem, launch, capability, sm_count, slices, residual)
                split.append((us, slices, info, launch))
    return split or unsplit, refused


def select(
    problem: Problem,
    dtype: torch.dtype,
    capability: tuple[int, int],
    sm_count: int | None = None,
    residual: bool = False,
    *,
    exclude: Collection[str] = (),
) -> Choice:
    """Choose a kernel for ``problem`` on a GPU of compute ``capability`` (host-only), none of those named in
    ``exclude`` (kernels disabled on this GPU)."""
    reasons = not_supported_reasons(problem, dtype, capability, residual)
    if reasons:
        return _fallback(reasons[0])
    problem, kind, pad_channels, merge = launch_form(problem)
    if not library.load():
        return _fallback(f"the CUTLASS extension is unavailable: {library.load_error()}")
    candidates = [
        k for k in kernel_table() if k.dtype == dtype and k.serves(kind, capability) and k.name not in exclude
    ]
    if not candidates:
        return _fallback(f"no compiled kernel for {dtype} on sm_{capability[0]}{capability[1]}")
    chunk = _batch_chunk(problem, 2)
    launch_problem = replace(problem, n=min(problem.n, chunk) or 1)
    sms = sm_count or cost.gpu_spec(capability).sms
    options, refused = _options(candidates, launch_problem, capability, sms, residual)
    if not options:
        name, status = refused or (candidates[0].name, int(candidates[0].can_implement(launch_problem, 2)))
        return _fallback(f"CUTLASS rejected it ({name}): {torch.ops.cutlass_resnet_C.status_string(status)}")
    # Fastest first; at equal estimates the Hopper kernel, the larger tile, the fewer slices.
    us, split, info, launch = min(options, key=lambda o: (o[0], not o[2].hopper, -o[2].tile_m * o[2].tile_n, o[1]))
    launches = -(-problem.n // chunk) if problem.n > chunk else 1
    return Choice(
        info.name,
        None,
        pad_channels,
        chunk if problem.n > chunk else 0,
        merge,
        launch,
        split if info.split else 0,
        us * launches,
    )


def not_supported_reasons(
    problem: Problem, dtype: torch.dtype, capability: tuple[int, int], residual: bool = False
) -> list[str]:
    """Why no kind of kernel takes ``problem`` (as xformers' ``not_supported_reasons``), every reason that holds,
    from the kinds' traits (:data:`.kernels.KINDS`); empty where one may, and CUTLASS's ``can_implement`` decides.
    Host-only: needs no library. ``select`` falls back with the first; ``plan()`` shows it."""
    reasons = []
    if dtype not in KERNEL_DTYPES:
        reasons.append(f"{dtype} has no CUTLASS kernel (fp16 and bf16 only)")
    if tuple(capability) < (8, 0):
        reasons.append(f"compute capability {capability[0]}.{capability[1]} is older than the kernels' 8.0")
    if problem.k % 8:
        reasons.append(f"K={problem.k} output channels is not a multiple of 8 (128-bit epilogue)")
    launch, kind, _, merge = launch_form(problem)
    traits = KINDS[kind]
    if traits.grouped and not merge:
        reasons.append(
            f"grouped convolution with {problem.c // problem.groups} channels per group cannot be "
            f"blocked into groups of a multiple of 8 in and {GROUP_TILE_N} out"
        )
    if residual and not traits.residual:
        what = "grouped convolution" if traits.grouped else f"C={problem.c} input channels"
        reasons.append(f"{what} with a residual add has no CUTLASS kernel")
    if kind == KernelKind.REGULAR and launch.c % 8:
        reasons.append(f"C={launch.c} input channels is not a multiple of 8 (128-bit loads)")
    return reasons


def launch_form(problem: Problem) -> tuple[Problem, KernelKind, int, int]:
    """``problem`` as its kernel sees it, with the kernel kind, the stem's padded C (or 0) and the
    number of groups merged (0 for a grouped conv that cannot be blocked)."""
    if problem.groups > 1:
        merge = _merge_factor(problem)
        return replace(problem, groups=problem.groups // max(merge, 1)), KernelKind.GROUPED, 0, merge
    if problem.c < STEM_CHANNELS:
        return replace(problem, c=STEM_CHANNELS), KernelKind.STEM, STEM_CHANNELS, 0
    return problem, KernelKind.REGULAR, 0, 0


def _merge_factor(problem: Problem) -> int:
    """How many adjacent groups to merge so that each merged group has a multiple of 8 input and of
    the grouped kernel's tile N output channels; 0 if none does. Merging multiplies the MACs by it."""
    c, k = problem.c // problem.groups, problem.k // problem.groups
    for m in range(1, problem.groups + 1):
        if problem.groups % m == 0 and (m * c) % 8 == 0 and (m * k) % GROUP_TILE_N == 0:
            return m
    return 0
