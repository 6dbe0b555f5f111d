"""Each kernel checks itself once per GPU and build before it is trusted; the verdicts are kept on disk.

The check (:func:`check_kernel`) runs the kernel over a matrix of problems and epilogues and
compares each result with float64. On a GPU it runs in a separate process with a time limit, so
that a kernel that crashes (an illegal address poisons the CUDA context) or hangs takes down
only that process; the user's process launches only kernels whose verdict is "passed".

A verdict is ``""`` (passed) or why the kernel was disabled, in ``<cache>/kernels/verdicts.json``,
keyed by GPU, compute capability, build and kernel. :func:`read_verdicts` is the one reader of
that file and :func:`record_verdict` the one writer.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import torch

from .._io import file_lock, write_text
from . import build, library
from .int8 import pad_channels, reference_conv2d_fprop_int8
from .select import SPLITS, KernelInfo, KernelKind, Problem, device_info, kernel, kernel_table, launch_form

__all__ = [
    "RECHECK_HINT",
    "NotYet",
    "SelfCheckUnavailable",
    "Case",
    "capturing",
    "check_cases",
    "check_kernel",
    "check_problem",
    "coverage_cases",
    "forget_verdicts",
    "grid_regime",
    "isolated_check",
    "isolated_checks",
    "kernel_verdict",
    "read_verdicts",
    "record_verdict",
    "verdict_key",
    "verdicts_path",
]

_CL = torch.channels_last
RECHECK_HINT = "`cutlass-resnet selftest --recheck` checks the kernels again"


class SelfCheckUnavailable(RuntimeError):
    """The check could not run now (out of memory): nothing is recorded, and it runs again on next use."""


#: Seconds a kernel's self-check process may take (it imports torch and starts CUDA first).
CHECK_TIMEOUT = float(os.environ.get("CUTLASS_RESNET_SELFCHECK_TIMEOUT", "300"))
#: Seconds a self-check process may go without a word (it reports each case as it is checked): a hang.
SILENCE_TIMEOUT = float(os.environ.get("CUTLASS_RESNET_SELFCHECK_SILENCE", "60"))
# A problem of each kind of problem (:attr:`.kernels.Kind.problem`), for what does not depend on the problem.
_CHECK_PROBLEMS = {
    "REGULAR": Problem(2, 12, 12, 64, 64, 3, 3, (1, 1), (1, 1)),
    "STEM": Problem(2, 20, 20, 4, 64, 7, 7, (2, 2), (3, 3)),
    "GROUPED": Problem(2, 12, 12, 64, 64, 3, 3, (1, 1), (1, 1), groups=2),
}


def check_problem(info: KernelInfo) -> Problem:
    """A problem ``info`` takes, for what does not depend on the problem (its shared memory)."""
    return _CHECK_PROBLEMS[info.traits.problem]


def verdicts_path() -> Path:
    """Where each kernel's self-check result is kept, per GPU and build: ``<cache>/kernels/verdicts.json``."""
    return build.cache_root() / "kernels" / "verdicts.json"


def read_verdicts() -> dict[str, str]:
    """Every recorded verdict: key -> "" (passed) or why the kernel is disabled. A damaged file is named in a
    warning and read as empty: each kernel checks itself again, and the next verdict rewrites the file."""
    path = verdicts_path()
    if not path.exists():
        return {}
    try:
        records = json.loads(path.read_text())
        if isinstance(records, dict) and all(isinstance(v, str) for v in records.values()):
            return records
        problem = "it is not an object of verdicts"
    except (OSError, ValueError) as exc:
        problem = str(exc)
    warnings.warn(
        f"cutlass_resnet: the kernel verdicts file {path} is damaged ({problem}); ignoring it: each kernel checks "
        f"itself again (delete the file to silence this)",
        stacklevel=2,
    )
    return {}


def record_verdict(key: str, reason: str | None) -> dict[str, str]:
    """Persist one self-check result (None: passed), atomically and under a file lock; return all."""
    path = verdicts_path()
    with file_lock(path):
        records = read_verdicts()
        records[key] = reason or ""
        write_text(path, json.dumps(records, indent=1, sort_keys=True))
    if reason:
        _forget_decisions()
    return records


def _forget_decisions() -> None:
    """A kernel is disabled, or every verdict forgotten: nothing decided on the old verdicts runs again in this
    process (the cached verdicts, and the binding's remembered choices, which launch without asking)."""
    _checked_verdict.cache_clear()
    if library.loaded():
        torch.ops.cutlass_resnet_C.forget_choices()


def forget_verdicts() -> None:
    """Remove every recorded verdict, so each kernel checks itself again on its next use."""
    path = verdicts_path()
    if path.exists():
        with file_lock(path):
            path.unlink(missing_ok=True)
    _unrecorded.clear()
    _forget_decisions()


def verdict_key(kernel_name: str, device_index: int) -> str:
    """``<GPU name>|sm_<cc>|<build>|<kernel>``: a verdict holds for one kernel of one build on one kind of GPU."""
    major, minor = device_info(device_index)[0]
    name = torch.cuda.get_device_name(device_index) if torch.cuda.is_available() else "no-gpu"
    return f"{name}|sm_{major}{minor}|{library.build_id()}|{kernel_name}"


def _device(index: int) -> torch.device:
    return torch.device("cuda", index)


def capturing() -> bool:
    """Whether a CUDA graph is being captured on the current stream (never initializes CUDA)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class NotYet(str):
    """A verdict that says nothing about the kernel: it could not be checked now (in a graph capture, out of
    memory, no usable GPU) and is checked again on its next use. Not recorded."""


def kernel_verdict(kernel_name: str, device_index: int) -> str | None:
    """None when the kernel may run on this GPU; else why not (a :class:`NotYet` where it could not be checked
    now). Checked once, then remembered on disk.

    Never checked while a CUDA graph is being captured (the check synchronizes): until a plain
    run has checked it, the kernel is not used inside a graph.
    """
    if capturing():
        known = read_verdicts().get(verdict_key(kernel_name, device_index))
        if known is None:
            return NotYet(f"{kernel_name} is not self-checked yet: run the model once before capturing a CUDA graph")
        return known or None
    try:
        return _checked_verdict(kernel_name, device_index)
    except SelfCheckUnavailable as exc:
        return NotYet(f"{kernel_name} could not be self-checked now ({exc}); it is checked again on its next use")


# Verdicts that could not be recorded (an unwritable cache): they hold for this process.
_unrecorded: dict[str, str] = {}


@cache
def _checked_verdict(kernel_name: str, device_index: int) -> str | None:
    key = verdict_key(kernel_name, device_index)
    records = {**read_verdicts(), **_unrecorded}
    if key in records:
        return records[key] or None
    device = _device(device_index)
    if device.type == "cuda":
        names = [kernel_name, *_unchecked_peers(kernel_name, device_index, records)]
        print(
            f"cutlass_resnet: self-checking {', '.join(names)} on GPU {device_index} (their first use with this GPU "
            "and build, in one process; the verdicts are kept)",
            file=sys.stderr,
            flush=True,
        )
        verdicts = isolated_checks(names, device_index, library.library_path())
    else:
        verdicts = {kernel_name: check_kernel(kernel_name, device)}
    for name, reason in verdicts.items():
        _keep_verdict(verdict_key(name, device_index), reason)
    return verdicts[kernel_name]


def _unchecked_peers(kernel_name: str, device_index: int, records: dict[str, str]) -> list[str]:
    """The other kernels of ``kernel_name``'s dtype that run on this GPU and have no verdict yet, and the passes
    (:data:`PASSES`): a model needs several, and one child process checks them together (one torch import and
    CUDA context, not one each)."""
    passes = [p for p in PASSES if p != kernel_name and verdict_key(p, device_index) not in records]
    if kernel_name in PASSES:
        return passes
    info, (capability, _) = kernel(kernel_name), device_info(device_index)
    return [
        k.name
        for k in kernel_table()
        if k.name != kernel_name
        and k.dtype == info.dtype
        and k.serves(k.problem_kind, capability)
        and verdict_key(k.name, device_index) not in records
    ] + passes


def _keep_verdict(key: str, reason: str | None) -> None:
    """Record a verdict; where the cache cannot be written, keep it for this process, with a warning."""
    try:
        record_verdict(key, reason)
    except OSError as exc:
        _unrecorded[key] = reason or ""
        warnings.warn(
            f"cutlass_resnet: cannot record the self-check verdict of {key.rsplit('|', 1)[-1]} in {verdicts_path()} "
            f"({exc}); it holds for this process only (set CUTLASS_RESNET_CACHE to a writable folder to keep it)",
            stacklevel=3,
        )
        if reason:
            _forget_decisions()


def _check_command(kernel_names: list[str], device_index: int, library: str, sanitizer: str | None) -> list[str]:
    names = ",".join(kernel_names)
    command = [sys.executable, "-m", "cutlass_resnet.ops._check_child", names, str(device_index), library]
    if sanitizer:
        command = [compute_sanitizer(), "--tool", sanitizer, "--error-exitcode", "86", *command]
    return command


def isolated_check(
    kernel_name: str, device_index: int, library: str, timeout: float | None = None, sanitizer: str | None = None
) -> str | None:
    """:func:`check_kernel` in a child process (``python -m cutlass_resnet.ops._check_child``) with a time limit,
    under ``compute-sanitizer --tool <sanitizer>`` if one is named.

    A crash or a hang there once it has the GPU, or a sanitizer's error, is the kernel's verdict. What says
    nothing about the kernel raises :class:`SelfCheckUnavailable`, as in the process itself, and is not recorded:
    a process that could not start on the GPU (a busy or exclusive-process GPU, no driver), or ran out of memory.
    """
    outcome = run_isolated(_check_command([kernel_name], device_index, library, sanitizer), timeout or CHECK_TIMEOUT)
    if outcome.get("unavailable"):
        raise SelfCheckUnavailable(outcome["unavailable"])
    if "crashed" in outcome:
        if not outcome.get("ready"):
            raise SelfCheckUnavailable(f"the check process {outcome['crashed']} before it could use the GPU")
        return f"{kernel_name} failed its self-check: the check process {outcome['crashed']}"
    return outcome["reason"]


def isolated_checks(
    kernel_names: list[str], device_index: int, library: str, timeout: float | None = None
) -> dict[str, str | None]:
    """Several kernels' checks in one child process, in order: their verdicts. A crash or hang is the verdict of
    the kernel being checked then; the kernels after it get none (they are checked on their next use). What says
    nothing about the first kernel raises :class:`SelfCheckUnavailable`, as :func:`isolated_check` does."""
    command = _check_command(kernel_names, device_index, library, None)
    outcome = run_isolated(command, (timeout or CHECK_TIMEOUT) * len(kernel_names))
    verdicts = {}
    for line in outcome.get("said", []):
        if "verdict" in line:
            verdicts[line["verdict"]["kernel"]] = line["verdict"]["reason"]
    if outcome.get("unavailable") or ("crashed" in outcome and not outcome.get("ready")):
        if kernel_names[0] not in verdicts:
            why = outcome.get("unavailable") or f"the check process {outcome['crashed']} before it could use the GPU"
            raise SelfCheckUnavailable(why)
        return verdicts
    if "crashed" in outcome:
        started = [line["kernel"] for line in outcome.get("said", []) if "kernel" in line]
        if started and started[-1] not in verdicts:
            verdicts[started[-1]] = f"{started[-1]} failed its self-check: the check process {outcome['crashed']}"
        if kernel_names[0] not in verdicts:
            raise SelfCheckUnavailable(f"the check process {outcome['crashed']} before it checked {kernel_names[0]}")
        return verdicts
    return {**verdicts, **outcome.get("verdicts", {})}


def compute_sanitizer() -> str:
    """The CUDA toolkit's compute-sanitizer (next to nvcc, or on PATH)."""
    home = build.cuda_home()
    found = shutil.which("compute-sanitizer") or (home and shutil.which("compute-sanitizer", path=f"{home}/bin"))
    if not found:
        raise FileNotFoundError("compute-sanitizer not found: it comes with the CUDA toolkit (set CUDA_HOME)")
    return found


def run_isolated(command: list[str], timeout: float, silence: float | None = None) -> dict[str, object]:
    """Run a check process that prints JSON lines, its answer last; a hang, a crash or no answer says so under
    "crashed", with every line it printed under "said" and "ready" saying whether it had reported that it could
    use the GPU (a ``{"ready": true}`` line).
    A process silent for ``silence`` seconds (it reports each case) is taken for hung and killed.

    The child imports this very package, wherever it was imported from here (an install, a checkout on sys.path).
    """
    package_parent = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, env=env
    )
    lines: queue.Queue[str | None] = queue.Queue()
    stderr: list[str] = []

    def pump(stream, put) -> None:
        for line in stream:
            put(line)
        put(None)

    threading.Thread(target=pump, args=(proc.stdout, lines.put), daemon=True).start()
    threading.Thread(target=pump, args=(proc.stderr, lambda line: stderr.append(line or "")), daemon=True).start()
    silence = silence or SILENCE_TIMEOUT
    deadline = time.monotonic() + timeout
    said: list[str] = []
    hung = None
    while True:
        left = deadline - time.monotonic()
        try:
            line = lines.get(timeout=max(0.0, min(left, silence)))
        except queue.Empty:
            hung = (
                f"did not finish in {timeout:g} s (a hang?) and was killed"
                if left <= silence
                else f"said nothing for {silence:g} s (a hang?) and was killed"
            )
            proc.kill()
            break
        if line is None:
            break
        said.append(line.strip())
    proc.wait()
    lines = [_json(line) for line in said]
    ready = any(line.get("ready") for line in lines)
    answer = lines[-1] if lines else {}
    if hung is None and proc.returncode == 0 and ("reason" in answer or "unavailable" in answer):
        return answer
    if hung is None:
        hung = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited with {proc.returncode}"
        tail = next((line.strip() for line in reversed(stderr) if line.strip()), "")
        hung += f" ({tail})" if tail else ""
    return {"crashed": hung, "ready": ready, "said": lines}


def _json(line: str) -> dict:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Case:
    """One launch of the self-check: a problem and the epilogue's terms."""

    problem: Problem
    bias: bool = True
    residual: bool = False
    relu: bool = True
    offset: int = 0  #: images before the launched ones, as a launch on a chunk of a split batch sees
    split_k: int = 1  #: slices of a split-K kernel
    packed: bool = False  #: ``problem`` is the model's conv, packed by the binding (stem padding, merged groups)

    def __str__(self) -> str:
        terms = [t for t, on in (("bias", self.bias), ("residual", self.residual), ("relu", self.relu)) if on]
        return (
            f"{self.problem} with {'+'.join(terms) or 'no epilogue terms'}"
            + (f", split into {self.split_k}" if self.split_k > 1 else "")
            + (f", from image {self.offset}" if self.offset else "")
            + (", packed" if self.packed else "")
        )


def grid_regime(info: KernelInfo, problem: Problem) -> str:
    """How many output tiles along M (N*P*Q) a launch of ``info`` on ``problem`` has: "one", "few" (up to 8) or
    "many": the regimes in which a kernel's tile indexing, its predicates and its swizzle differ."""
    tiles = -(-problem.n * problem.p * problem.q // info.tile_m)
    return "one" if tiles == 1 else "few" if tiles <= 8 else "many"


# (images, output extent) of a small problem in each regime, for every tile_m of the kernels (64 and 128).
_REGIME_SHAPES = {"one": (1, 8), "few": (2, 12), "many": (4, 20)}
# Input channels of the split-K problems, the fewest first: a Hopper slice takes a multiple of 8 channels
# (384 = 8 x 48: every count of SPLITS), an Ampere slice whole 64-channel steps of the GEMM K.
_SPLIT_CHANNELS = (384, 512, 1024, 1536)


def coverage_cases(info: KernelInfo) -> list[Case]:
    """A small problem for every combination the kernel's selection can put it in: each epilogue (residual,
    ReLU; the bias always), each split it takes (every count of ``select.SPLITS``), dilation 1, 2 and 4 (the
    dilated backbones of DeepLabV3 and FCN), each grid regime (:func:`grid_regime`), and the binding's packing
    where the zoo's convs need it (the 3-channel stem padded to 4, ResNeXt's 4-channel groups merged), from the
    model's conv through the binding's whole path."""
    cases = []
    for residual, relu, split, dilation, regime in itertools.product(
        (False, True), (False, True), SPLITS if info.split else (1,), (1, 2, 4), _REGIME_SHAPES
    ):
        n, extent = _REGIME_SHAPES[regime]
        if (residual and not info.takes_residual) or (info.kind == KernelKind.STEM and dilation != 1):
            continue
        pad = (dilation, dilation)  # the output as large as the input, as in the dilated backbones
        if info.kind == KernelKind.STEM:  # a launch's own 4 channels, and the zoo's 3 padded to 4
            families = [[Problem(n, 2 * extent, 2 * extent, c, 64, 7, 7, (2, 2), (3, 3))] for c in (4, 3)]
        elif info.kind == KernelKind.GROUPED:  # 32-channel groups, and ResNeXt's 4-channel groups merged
            families = [[Problem(n, extent, extent, c, c, 3, 3, (1, 1), pad, pad, g)] for c, g in ((64, 2), (128, 32))]
        else:
            channels = _SPLIT_CHANNELS if info.split else (64,)
            families = [[Problem(n, extent, extent, c, 64, 3, 3, (1, 1), pad, pad) for c in channels]]
        for family in families:
            accepted = next((m for m in family if info.can_implement(launch_form(m)[0], split) == 0), None)
            if accepted is not None:
                cases.append(Case(accepted, residual=residual, relu=relu, split_k=split, packed=_packs(accepted)))
    return cases


def _packs(problem: Problem) -> bool:
    _, _, pad_channels, merge = launch_form(problem)
    return bool(pad_channels) or merge > 1


def check_cases(info: KernelInfo) -> list[Case]:
    """The matrix a kernel checks itself on, as far as it takes each problem: every combination of
    bias, residual and ReLU; C in 8, 24, 64, 136, 256 and K in 8, 64, 136, 256 (partial tiles in
    M, N and K); 1x1, 3x3 and 7x7 filters at stride 1 and 2; grouped convs of 8, 16 and 32 channels
    per group; a launch on a chunk of a batch; and :func:`coverage_cases`, every epilogue, split, dilation and
    grid regime selection can choose it for."""
    if info.kind == KernelKind.GROUPED:
        shapes = [
            Problem(2, 9, 10, groups * per_group, groups * 32, r, r, (s, s), (r // 2, r // 2), groups=groups)
            for per_group in (8, 16, 32)
            for groups in (2, 4)
            for r in (1, 3)
            for s in (1, 2)
        ]
    else:
        channels = (4,) if info.kind == KernelKind.STEM else (8, 24, 64, 136, 256)
        shapes = [
            Problem(2, 9, 10, c, k, r, r, (s, s), (r // 2, r // 2))
            for c in channels
            for k in (8, 64, 136, 256)
            for r in (1, 3, 7)
            for s in (1, 2)
        ]
    splits = (2, 3, 4) if info.split else (1,)
    shapes = [(p, k) for p in shapes for k in splits if info.can_implement(p, k) == 0]
    if not shapes:
        return []
    first, split = shapes[0]
    epilogues = [
        Case(first, bias, residual, relu, split_k=split)
        for bias, residual, relu in itertools.product((False, True), repeat=3)
        if info.takes_residual or not residual
    ]
    chunk = Case(replace(first, n=3), residual=info.takes_residual, offset=1, split_k=split)
    rest = [Case(p, residual=info.takes_residual, split_k=k) for p, k in shapes[1:]]
    return epilogues + rest + [chunk] + coverage_cases(info)


def check_kernel(
    kernel_name: str,
    device: torch.device,
    problem: Problem | None = None,
    split_k: int = 1,
    progress: Callable[[Case], None] | None = None,
) -> str | None:
    """Run the kernel on random data and compare with float64; None when it is right, else why not.

    On ``problem`` (in ``split_k`` slices) with bias, ReLU and (where the kernel takes one) a residual, else on
    every case of :func:`check_cases` (``progress`` is told each case before it runs). Right means the brief's
    rule: error at most twice that of aten's own computation in the same dtype (plus half an ulp of the largest
    output), with the references computed from copies made before the launch and the inputs unchanged by it.
    Running out of memory says nothing about the kernel: it raises :class:`SelfCheckUnavailable` instead.
    """
    if kernel_name in PASSES:
        return PASSES[kernel_name](device)
    info = kernel(kernel_name)
    if problem is not None:
        cases = [Case(problem, residual=info.takes_residual, split_k=split_k)]
    else:
        cases = check_cases(info)
        if not cases:
            return f"{kernel_name} accepts none of its self-check problems"
    for case in cases:
        if progress is not None:
            progress(case)
        reason = _check_case(info, device, case)
        if reason is not None:
            return f"{kernel_name} failed its self-check on {case}: {reason}"
    return None


def _guarded(device: torch.device, run: Callable[[], object]) -> tuple[object, str | None]:
    """``run()``'s result with its kernels finished, and None; or None and why it failed. Any failure disables the
    kernel, but a lack of memory, which says nothing about it: that raises :class:`SelfCheckUnavailable`."""
    try:
        result = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except torch.OutOfMemoryError as exc:
        raise SelfCheckUnavailable(f"out of memory: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - whatever else it is, the kernel is not to be trusted
        if "out of memory" in str(exc):  # a launch's CUDA error, as the binding names it
            raise SelfCheckUnavailable(f"out of memory: {exc}") from exc
        return None, f"{type(exc).__name__}: {exc}"
    return result, None


def _check_case(info: KernelInfo, device: torch.device, case: Case) -> str | None:
    if info.dtype == torch.int8:
        return _check_int8_case(info, device, case)
    pr, dtype = case.problem, info.dtype
    g = torch.Generator().manual_seed(0)

    def operand(*shape, scale=1.0):
        t = (torch.randn(shape, generator=g) * scale).to(device=device, dtype=dtype)
        return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t

    c = pr.c // pr.groups
    x, w = operand(pr.n, pr.c, pr.h, pr.w), operand(pr.k, c, pr.r, pr.s, scale=(c * pr.r * pr.s) ** -0.5)
    bias = operand(pr.k) if case.bias else None
    residual = operand(pr.n, pr.k, pr.p, pr.q) if case.residual else None
    x, residual = x[case.offset :], None if residual is None else residual[case.offset :]
    conv = (list(pr.stride), list(pr.padding), list(pr.dilation), pr.groups)
    F = torch.nn.functional

    def epilogue(y: torch.Tensor, r: torch.Tensor | None) -> torch.Tensor:
        y = y if r is None else y + r
        return y.relu() if case.relu else y

    inputs = [t for t in (x, w, bias, residual) if t is not None]

    def run() -> tuple:
        before = [t.clone() for t in inputs]
        aten = epilogue(F.conv2d(x, w, bias, *conv), residual)
        expected = F.conv2d(x.double(), w.double(), None if bias is None else bias.double(), *conv)
        expected = epilogue(expected, None if residual is None else residual.double())
        if case.packed:
            _, _, pad_channels, merge = launch_form(pr)
            choice = [info.index, pad_channels, merge, 0, case.split_k if info.split else 0]
            mode = 0 if device.type == "cuda" else 2  # a launch, or CUTLASS's host reference on the CPU
            flat = [*conv[0], *conv[1], *conv[2], conv[3], int(case.relu), mode]
            return before, aten, expected, torch.ops.cutlass_resnet_C.run(x, w, bias, residual, flat, choice)
        return before, aten, expected, info.launch(x, w, bias, residual, *conv, case.relu, case.split_k)

    result, reason = _guarded(device, run)
    if reason is not None:
        return reason
    before, aten, expected, y = result
    if not all(torch.equal(a, b) for a, b in zip(inputs, before, strict=True)):
        return "it wrote into its inputs"
    error = (y.double() - expected).abs().max().item()
    aten_error = (aten.double() - expected).abs().max().item()
    floor = 0.5 * torch.finfo(dtype).eps * expected.abs().max().item()
    if not error <= 2 * aten_error + floor:
        return f"error {error:.3g}, aten's {aten_error:.3g}"
    return None


def _check_int8_case(info: KernelInfo, device: torch.device, case: Case) -> str | None:
    """An int8 kernel against the int8 reference (exact sums, the same fp32 epilogue steps): equal bit for bit, on
    random int8 operands scaled so that a few percent of the outputs saturate."""
    pr = case.problem
    g = torch.Generator().manual_seed(0)

    def operand(*shape: int) -> torch.Tensor:
        return torch.randint(-128, 128, shape, generator=g, dtype=torch.int8).contiguous(memory_format=_CL)

    reduction = pr.c // pr.groups * pr.r * pr.s
    x, w = operand(pr.n, pr.c, pr.h, pr.w), operand(pr.k, pr.c // pr.groups, pr.r, pr.s)
    alpha = (torch.rand(pr.k, generator=g) + 0.5) * (60 / (5500 * reduction**0.5))  # products' sd: about 5500
    beta = torch.randn(pr.k, generator=g) * 8 if case.bias else torch.zeros(pr.k)
    residual = operand(pr.n, pr.k, pr.p, pr.q)[case.offset :] if case.residual else None
    gamma = 0.3759765625 if case.residual else 0.0  # 385/1024: exact in fp32, as epilogue_constants rounds it
    x = x[case.offset :]
    conv = (list(pr.stride), list(pr.padding), list(pr.dilation), pr.groups)
    expected = reference_conv2d_fprop_int8(x, w, alpha, beta, residual, gamma, *conv, case.relu)
    on = [None if t is None else t.to(device) for t in (x, w, residual)]
    if case.packed:  # the stem's 3 channels, padded as the dispatcher pads them
        channels = launch_form(pr)[2]
        on[:2] = [pad_channels(t, channels) for t in on[:2]]
    before = [t.clone() for t in on if t is not None]
    flat = [*conv[0], *conv[1], *conv[2], conv[3], int(case.relu), 0 if device.type == "cuda" else 2]

    def run() -> torch.Tensor:
        scale_shift = info.scale_shift(alpha, beta).to(device)
        return torch.ops.cutlass_resnet_C.fprop_int8(on[0], on[1], scale_shift, on[2], gamma, flat, info.index)

    y, reason = _guarded(device, run)
    if reason is not None:
        return reason
    if not all(torch.equal(a, b) for a, b in zip([t for t in on if t is not None], before, strict=True)):
        return "it wrote into its inputs"
    y = y.cpu()
    if not torch.equal(y, expected):
        wrong = (y != expected).sum().item()
        error = (y.int() - expected.int()).abs().max().item()
        return f"{wrong} of {y.numel()} outputs differ from the int8 reference (by up to {error})"
    return None


def _check_max_pool(device: torch.device) -> str | None:
    """The binding's max-pool against aten's on the same device, which it must equal exactly (a maximum is one
    of its inputs): ResNet's 3x3/2 pool with padding (never the maximum), a window larger than the stride, odd
    sizes, channels that are not a multiple of 8, -inf and NaN inputs (NaN propagates), fp16 and bf16."""
    g = torch.Generator().manual_seed(0)
    shapes = [((2, 64, 17, 16), 3, 2, 1), ((3, 24, 9, 11), 2, 2, 0), ((1, 13, 7, 7), 3, 1, 1), ((2, 8, 5, 6), 5, 3, 2)]
    for dtype in (torch.float16, torch.bfloat16):
        for shape, kernel_size, stride, padding in shapes:
            x = torch.randn(shape, generator=g)
            x.view(-1)[::97] = -float("inf")
            x.view(-1)[5::131] = float("nan")
            x = x.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
            window = ([kernel_size] * 2, [stride] * 2, [padding] * 2)
            try:
                y = torch.ops.cutlass_resnet_C.max_pool2d(x, *window)
                expected = torch.nn.functional.max_pool2d(x, *window)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            except torch.OutOfMemoryError as exc:
                raise SelfCheckUnavailable(f"out of memory: {exc}") from exc
            except Exception as exc:  # noqa: BLE001 - any other failure disables the pass
                return f"max_pool2d failed its self-check on {tuple(shape)}: {type(exc).__name__}: {exc}"
            same = (y == expected) | (y.isnan() & expected.isnan())
            if y.shape != expected.shape or not bool(same.all()):
                wrong = int((~same).sum()) if y.shape == expected.shape else "all"
                return (
                    f"max_pool2d failed its self-check on {tuple(shape)} {str(dtype)[6:]}, kernel {kernel_size}, "
                    f"stride {stride}, padding {padding}: {wrong} outputs differ from aten's"
                )
    return None


#: The binding's passes other than the conv kernels, checked as the kernels are before their first use on a GPU
#: (the packing pass is checked inside the stem and grouped kernels' packed cases).
PASSES: dict[str, Callable[[torch.device], str | None]] = {"max_pool2d": _check_max_pool}
