"""A time model of a kernel launch, host-only: what ``select`` ranks kernels by and ``plan`` reports.

Every figure here is an estimate. The GPUs' peaks are their datasheets' dense fp16/bf16 tensor-core
rates with fp32 accumulation (and int8 with int32 accumulation) and their memory bandwidths; the kernels'
efficiencies are guesses, to be corrected by the first measurement on a GPU (``cutlass-resnet bench`` prints
both side by side). The model: a launch's CTAs run in waves of ``SMs x CTAs per SM`` (shared memory and
registers bound the latter), each CTA's multiply-adds at the kernel's share of the SM's peak; its bytes (inputs,
output, split-K partial sums) move at 85% of the bandwidth, and no SM loads its CTAs' tiles faster than a few
times its share of it (so a launch of few CTAs is bound by the few SMs that load); the slowest of these, plus a
fixed cost per kernel launched.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from typing import NamedTuple

__all__ = ["GPU", "GPUS", "Estimate", "ctas_per_sm", "estimate", "gpu_spec", "memory_us", "roofline_us"]

LAUNCH_US = 1.5  #: a kernel's fixed cost on the GPU (ramp up and down, the gap to the next), under a CUDA graph
BANDWIDTH_EFFICIENCY = 0.85
SM_BANDWIDTH_SHARE = 3.0  #: how many times its share of the bandwidth one SM can load when few load
REGISTERS_PER_SM = 65536  #: 32-bit registers, every GPU from sm_80 to sm_120
MAX_CTAS_PER_SM = 4  #: the most CTAs of one kernel the model lets share an SM


@dataclass(frozen=True)
class GPU:
    """The figures of the usual part of one compute capability (datasheets; dense, fp32 accumulation)."""

    name: str
    sms: int
    tensor_tflops: float  #: fp16/bf16 tensor cores with fp32 accumulation, dense
    bandwidth_gbs: float
    shared_memory_kib: int  #: per SM, usable by CTAs
    mma_sync_share: float = 1.0  #: of ``tensor_tflops`` that mma.sync (the Sm80 kernels) can reach
    int8_tops: float = 0.0  #: int8 tensor cores with int32 accumulation, dense (0: twice ``tensor_tflops``)

    def peak(self, int8: bool = False) -> float:
        """The dense tensor-core peak in operations a second: fp16/bf16, or int8."""
        return (self.int8_tops or 2 * self.tensor_tflops) * 1e12 if int8 else self.tensor_tflops * 1e12


GPUS = {
    (8, 0): GPU("A100 SXM4", 108, 312.0, 2039.0, 164, int8_tops=624.0),
    (8, 6): GPU("RTX A6000", 84, 154.8, 768.0, 100, int8_tops=309.7),
    (8, 7): GPU("Jetson AGX Orin", 16, 42.5, 204.8, 164, int8_tops=85.0),
    (8, 9): GPU("L40S", 142, 362.1, 864.0, 100, int8_tops=733.0),
    (9, 0): GPU("H100 SXM5", 132, 989.4, 3350.0, 228, mma_sync_share=0.6, int8_tops=1978.9),
    (10, 0): GPU("B200", 148, 2250.0, 8000.0, 228, mma_sync_share=0.3, int8_tops=4500.0),
    (12, 0): GPU("RTX PRO 6000 Blackwell", 188, 503.8, 1792.0, 100, mma_sync_share=0.5, int8_tops=1007.6),
}

# Share of the SM's peak a kernel family reaches with full tiles, by tile (M, N): mma.sync (CUTLASS 2.x) and
# wgmma (the Hopper kernels). Smaller tiles reuse each loaded element less.
_SM80_EFFICIENCY = {(128, 128): 0.85, (128, 64): 0.80, (64, 64): 0.70, (128, 32): 0.55}
_SM90_EFFICIENCY = {(128, 128): 0.80, (64, 128): 0.72, (64, 64): 0.62}


def gpu_spec(capability: tuple[int, int]) -> GPU:
    """The figures of ``capability``'s usual part; an unknown one is taken as the nearest older known one."""
    known = sorted(c for c in GPUS if c <= tuple(capability)) or [min(GPUS)]
    return GPUS[known[-1]]


def kernel_efficiency(tile_m: int, tile_n: int, hopper: bool, capability: tuple[int, int]) -> float:
    """The share of the GPU's tensor peak a kernel with this tile reaches on it at full occupancy."""
    if hopper:
        return _SM90_EFFICIENCY.get((tile_m, tile_n), 0.6)
    return _SM80_EFFICIENCY.get((tile_m, tile_n), 0.55) * gpu_spec(capability).mma_sync_share


def ctas_per_sm(shared_memory: int, threads: int, registers: int, capability: tuple[int, int]) -> int:
    """How many CTAs of a kernel fit on one SM at once: its shared memory and its registers (allocated per warp,
    256 at a time) both bound it. ``threads`` or ``registers`` 0: unknown, shared memory alone."""
    by_shared = (gpu_spec(capability).shared_memory_kib * 1024) // max(shared_memory, 1)
    by_registers = MAX_CTAS_PER_SM
    if threads and registers:
        per_warp = ceil(registers * 32 / 256) * 256
        by_registers = REGISTERS_PER_SM // (per_warp * ceil(threads / 32))
    return max(1, min(MAX_CTAS_PER_SM, by_shared, by_registers))


class Estimate(NamedTuple):
    """A launch's estimated time and what bounds it."""

    us: float
    compute_us: float
    memory_us: float  #: the launch's bytes at the bandwidth, or its busiest SM's tiles at that SM's
    waves: int


def estimate(
    *,
    tile: tuple[int, int, int],
    hopper: bool,
    ctas: int,
    mainloop_iterations: int,
    shared_memory: int,
    bytes_moved: int,
    capability: tuple[int, int],
    sm_count: int | None = None,
    threads: int = 0,
    registers: int = 0,
    int8: bool = False,
) -> Estimate:
    """The time of one launch: CTAs in waves at the kernel's share of the peak, or its bytes at the bandwidth
    (or the busiest SM's tiles at its bandwidth), whichever is slowest, plus its fixed cost."""
    gpu = gpu_spec(capability)
    sms = sm_count or gpu.sms
    per_sm = ctas_per_sm(shared_memory, threads, registers, capability)
    waves = ceil(ctas / (sms * per_sm))
    cta_flops = 2 * tile[0] * tile[1] * tile[2] * mainloop_iterations
    sm_flops = gpu.peak(int8) * kernel_efficiency(tile[0], tile[1], hopper, capability) / gpu.sms
    compute_us = waves * per_sm * cta_flops / sm_flops * 1e6
    element = 1 if int8 else 2
    cta_bytes = element * (tile[0] + tile[1]) * tile[2] * mainloop_iterations  # its A and B tiles
    sm_bandwidth = gpu.bandwidth_gbs * 1e9 * SM_BANDWIDTH_SHARE / gpu.sms
    busiest_sm_us = ceil(ctas / sms) * cta_bytes / sm_bandwidth * 1e6
    memory = max(memory_us(bytes_moved, capability), busiest_sm_us)
    return Estimate(max(compute_us, memory) + LAUNCH_US, compute_us, memory, waves)


def memory_us(bytes_moved: int, capability: tuple[int, int]) -> float:
    """The time to move ``bytes_moved`` at the share of the bandwidth a kernel reaches."""
    return bytes_moved / (gpu_spec(capability).bandwidth_gbs * 1e9 * BANDWIDTH_EFFICIENCY) * 1e6


def roofline_us(flops: int, bytes_moved: int, capability: tuple[int, int], int8: bool = False) -> float:
    """The fastest any kernel could be: the peak's time for the multiply-adds or the bandwidth's for the bytes."""
    gpu = gpu_spec(capability)
    return max(flops / gpu.peak(int8), bytes_moved / (gpu.bandwidth_gbs * 1e9)) * 1e6
