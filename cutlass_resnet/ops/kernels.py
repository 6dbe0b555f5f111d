"""The kernels this package compiles, as data: the one list of kernel kinds and of instantiations.

``scripts/generate_kernels.py`` writes from it each instantiation's ``csrc/k*.cu``, the registry's table
(``csrc/kernels.inc``), the C kinds with their traits (``csrc/kinds.h``) and the conv record's field indices
(``csrc/record.h``); :mod:`.select` reads the kinds, the kernels and the record from it.
``tests/scripts/test_generate_kernels.py`` fails when a generated file is out of date.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONV_RECORD", "INSTANTIATIONS", "KINDS", "REGISTERS", "Instantiation", "Kind"]


#: A conv as it crosses between Python and the binding: one list of integers, these fields in this order
#: (``csrc/record.h`` names each index CR_REC_<FIELD>), the last one optional. Every list the binding takes or keeps for
#: a conv (``can_implement``, ``describe``, ``remember``'s key) is this record.
CONV_RECORD = (
    "n", "c", "h", "w", "k", "r", "s",
    "stride_h", "stride_w", "pad_h", "pad_w", "dil_h", "dil_w", "groups",
    "split_k",
)  # fmt: skip


@dataclass(frozen=True)
class Kind:
    """A kind of kernel: which problems it takes (CrKind in conv_api.h)."""

    name: str  #: CR_<name> in C, KernelKind.<name> in Python
    doc: str
    hopper: bool = False  #: sm_90a code (TMA, wgmma): runs on Hopper only
    split: bool = False  #: fp32 partial sums of split_k slices, then a reduction
    residual: bool = True  #: its epilogue adds a residual
    grouped: bool = False  #: takes groups > 1
    problem: str = "REGULAR"  #: the kind of problem it runs


KINDS = (
    Kind("REGULAR", "groups == 1, C a multiple of the alignment"),
    Kind("STEM", "fixed-channels iterator: C == alignment (the padded 3-channel stem)", residual=False, problem="STEM"),
    Kind(
        "GROUPED",
        "single-group mode: C / groups a multiple of the alignment, K / groups of tile_n",
        residual=False,
        grouped=True,
        problem="GROUPED",
    ),
    Kind("REGULAR_SM90A", "Hopper only (sm_90a code): groups == 1, C and K multiples of 8", hopper=True),
    Kind("SPLITK", "as REGULAR, the GEMM K split into split_k slices of one launch (grid z)", split=True),
    Kind(
        "SPLITK_SM90A", "as REGULAR_SM90A, C split into split_k slices launched side by side", hopper=True, split=True
    ),
)

_SM80_MAINLOOP = (
    "mainloop as cutlass_library/generator.py GenerateSM80_TensorOp_16816: TileDescription({tile}, {stages}, [2, 2, 1])"
)
_BROADCAST = """.
The broadcast epilogue (DefaultConv2dFpropWithBroadcast) is tested upstream only with SM75 tensor ops
and SM80 SIMT (test/unit/conv/device/conv2d_fprop_with_broadcast_*.cu): this pairing is checked by
the self-check and CUTLASS's host reference (tests/ops/test_host_reference.py), not upstream."""
_STEM = """\
As cutlass_library/generator.py GenerateSM80_TensorOp_16816 emits for the fixed-channels iterator:
TileDescription([128, 64, 64], 3, [2, 2, 1]) with CreateConv2dFixedChannelsOperator(..., [4, 8]); the
plain DefaultConv2dFprop with a fixed-channels iterator as in test/unit/conv/device/
conv2d_fprop_fixed_channels_f16nhwc_f16nhwc_f16nhwc_tensor_op_f32_sm80.cu (channels_4)."""
_GROUP = """\
No upstream configuration: test/unit/conv/device/group_conv2d_fprop_implicit_gemm_f16nhwc_f16nhwc_f16nhwc_
tensor_op_f32_sm80.cu tests single-group mode at 128x128x64/3 and 64x64x64/3 only, and the generator
emits no grouped conv. Tile N 32 is chosen because each merged group's K must be a multiple of it:
at N 64 the block-diagonal merge of ResNeXt's 4-channel groups would cost x16 the MACs instead of x8."""
_SPLITK80 = """\
Mainloop as cutlass_library/generator.py GenerateSM80_TensorOp_16816: TileDescription([64, 64, 64], 5, [2, 2, 1]),
the plain DefaultConv2dFprop with fp32 output in SplitKMode::kParallel, as test/unit/conv/device/conv2d_testbed.h
runs every Sm80 fprop kernel (split_k_slices > 1, parallel, then a reduction); the reduction here is ours."""
_SM90 = """\
Tile and cluster as cutlass_library/generator.py GenerateSM90_Conv3x emits for 2-D fprop f16f16_f16f16_f16:
MMA (128, 128, 16) x 4 per tile = 128x128x64, cluster (1, 1, 1). Not tested upstream as instantiated here: fp32
accumulation, the bias/residual/activation EVT and (bf16) output; checked by the self-check on a GPU."""
_SM90_64 = """\
Tile and cluster as cutlass_library/generator.py GenerateSM90_Conv3x emits for 2-D fprop f16f16_f16f16_f16:
MMA (64, 128, 16) x 4 per tile = 64x128x64, cluster (1, 1, 1) (CUTLASS prefers 64x128 to 128x64 on sm90). Not
tested upstream as instantiated here: fp32 accumulation, the bias/residual/activation EVT and (bf16) output;
checked by the self-check on a GPU."""
_SM90_N64 = """\
Tile and cluster of the SM90 fprop unit test 128x64x64_1x1x1 in test/unit/conv/device_3x/fprop/
sm90_conv2d_fprop_implicit_gemm_f16_f16_f32_tensorop_f16.cu: the Hopper tile for convs of 64 output channels
(ResNet's layer1), half of which a 128-wide tile would waste. Not tested upstream as instantiated here: fp32
accumulation, the bias/residual/activation EVT and (bf16) output; checked by the self-check on a GPU."""
_SPLITK90 = """\
Tile and cluster as cutlass_library/generator.py GenerateSM90_Conv3x emits for 2-D fprop fp16_fp32_fp32_fp32 (fp32
output, the unit tests' configuration): MMA (64, 64, 16) x 4 per tile = 64x64x64, here with cluster (1, 1, 1), no
source and fp32 partial sums of a channel slice (non-packed activation and filter strides), and 4 stages where the
unit tests let shared memory decide (13 here: one CTA per SM); the slices and the reduction are ours, checked on
the host by CUTLASS's host reference and on a GPU by the self-check."""

_INT8 = """\
Mainloop as CUTLASS's test/unit/conv/device/conv2d_fprop_implicit_gemm_s8nhwc_s8nhwc_s32nhwc_tensor_op_s32_sm80.cu:
threadblock 128x128x64, warp 64x64x64, mma 16x8x32, 3 stages, OpMultiplyAddSaturate, optimized iterator, 16-byte
accesses. The epilogue is ours (the int8 op's fp32 steps, per-channel alpha/beta as one broadcast vector of pairs),
checked on the host against CUTLASS's int32 host reference and cutlass_resnet.ops' int8 reference
(tests/ops/test_int8_kernel.py), not upstream."""

_INT8_STEM = """\
As cutlass_library/generator.py GenerateSM80_TensorOp_16832_TN emits for int8 with the fixed-channels iterator:
TileDescription([64, 64, 64], 10, [2, 2, 1]) with CreateConv2dFixedChannelsOperator(..., [16, 8, 4]) (4 channels,
4-byte loads: the stem's 3 padded to 4). The epilogue is ours, as the int8 kernel's (8 outputs a store); checked
on the host against CUTLASS's int32 host reference and the int8 reference (tests/ops/test_int8_kernel.py), not
upstream. 128x64 tiles spill registers on sm_90a with this iterator."""

_INT8_SM90 = """\
Data types as cutlass_library/generator.py GenerateSM90_Conv3x's s8_s32_s32_s32 (int8 in, int32 accumulation,
which it lists among the unit tests' kernels), with int8 output through our EVT (the int8 op's steps; alpha and
beta as row broadcasts, the residual as the source) and the 128x128x128 tile the time model assumes for Hopper
int8, cluster (1, 1, 1); checked on the host against CUTLASS's int32 host reference and the int8 reference
(tests/ops/test_int8_kernel.py), not upstream."""

_ELEMENTS = {"f16": ("cutlass::half_t", "CR_FLOAT16"), "bf16": ("cutlass::bfloat16_t", "CR_BFLOAT16")}


@dataclass(frozen=True)
class Instantiation:
    """One compiled kernel: its kind, dtype, threadblock tile (and warp tile and stages for the 2.x kernels), and
    the upstream CUTLASS test or generator configuration it mirrors."""

    kind: str  #: a Kind's name
    dtype: str  #: "f16", "bf16" or "s8" (int8 in and out, int32 accumulation)
    tile: tuple[int, int, int]
    mirrors: str
    warp: tuple[int, int, int] | None = None  #: 2.x kernels
    stages: int | None = None  #: pipeline stages (None for the 3.x kernels that take what fits in shared memory)

    @property
    def sm(self) -> int:
        return 90 if _kind(self.kind).hopper else 80

    @property
    def name(self) -> str:
        """Named for the tile: ``sm80_f16_t128x128_64x3`` (tile M x N, tile K x stages), ``sm90_f16_t128x128x64``."""
        tag = {"STEM": "stem_", "GROUPED": "group_", "SPLITK": "splitk_", "SPLITK_SM90A": "splitk_"}.get(self.kind, "")
        m, n, k = self.tile
        shape = f"t{m}x{n}x{k}" if self.sm == 90 else f"t{m}x{n}_{k}x{self.stages}"
        return f"sm{self.sm}_{self.dtype}_{tag}{shape}"

    @property
    def alignment(self) -> int:
        """Elements per access of x and w: the fixed-channels stems' 4 (8 bytes in fp16, 4 in int8), 16 bytes for the
        rest."""
        return 4 if self.kind == "STEM" else 16 if self.dtype == "s8" else 8

    @property
    def file(self) -> str:
        return "k" + self.name.removeprefix("sm") + ".cu"

    def source(self) -> str:
        """The translation unit: the comment saying what it mirrors, its header and its definition."""
        tile, warp = ", ".join(map(str, self.tile)), ", ".join(map(str, self.warp or ()))
        comment = "".join(f"// {line}\n" for line in self.mirrors.splitlines())
        if self.dtype == "s8" and self.sm == 90:
            line = f"CR_DEFINE_INT8_KERNEL90({self.name}, {tile})"
            return f'{comment}#include "conv90_int8.cuh"\n{line}\n'
        if self.dtype == "s8":
            macro = "CR_DEFINE_INT8_STEM_KERNEL80" if self.kind == "STEM" else "CR_DEFINE_INT8_KERNEL80"
            line = f"{macro}({self.name}, {tile}, {warp}, {self.stages})"
            return f'{comment}#include "conv80_int8.cuh"\n{line}\n'
        element, dtype = _ELEMENTS[self.dtype]
        header, line = {
            "REGULAR": (
                "conv80.cuh",
                f"CR_DEFINE_KERNEL80({self.name}, {element}, {dtype}, {tile}, {warp}, {self.stages})",
            ),
            "STEM": (
                "conv80_bias_source.cuh",
                f"CR_DEFINE_BIAS_SOURCE_KERNEL80({self.name}, {element}, {dtype}, CR_STEM, CrStemKernel, 4, {tile}, "
                f"{warp}, {self.stages})",
            ),
            "GROUPED": (
                "conv80_bias_source.cuh",
                f"CR_DEFINE_BIAS_SOURCE_KERNEL80({self.name}, {element}, {dtype}, CR_GROUPED, CrGroupKernel, 8, "
                f"{tile}, {warp}, {self.stages})",
            ),
            "SPLITK": (
                "conv80_splitk.cuh",
                f"CR_DEFINE_SPLITK_KERNEL80({self.name}, {element}, {dtype}, {tile}, {warp}, {self.stages})",
            ),
            "REGULAR_SM90A": ("conv90.cuh", f"CR_DEFINE_KERNEL90({self.name}, {element}, {dtype}, {tile})"),
            "SPLITK_SM90A": (
                "conv90.cuh",
                f"CR_DEFINE_SPLITK_KERNEL90({self.name}, {element}, {dtype}, {tile}, {self.stages})",
            ),
        }[self.kind]
        return f'{comment}#include "{header}"\n{line}\n'


def _kind(name: str) -> Kind:
    return next(k for k in KINDS if k.name == name)


def _sm80(kind: str, tile: tuple[int, int, int], warp: tuple[int, int, int], stages: int, mirrors: str):
    return [Instantiation(kind, dtype, tile, mirrors, warp, stages) for dtype in ("f16", "bf16")]


def _sm80_regular(tile: tuple[int, int, int], warp: tuple[int, int, int], stages: int):
    mirrors = _SM80_MAINLOOP.format(tile=list(tile), stages=stages) + _BROADCAST
    return _sm80("REGULAR", tile, warp, stages, mirrors)


def _sm90(kind: str, tile: tuple[int, int, int], mirrors: str, stages: int | None = None):
    return [Instantiation(kind, dtype, tile, mirrors, stages=stages) for dtype in ("f16", "bf16")]


#: Every kernel, in the registry's order (an f16 kernel, then its bf16 twin, the int8 kernels, Hopper's last).
INSTANTIATIONS = (
    *_sm80_regular((128, 128, 64), (64, 64, 64), 3),
    *_sm80_regular((128, 64, 64), (64, 32, 64), 3),
    *_sm80_regular((64, 64, 64), (32, 32, 64), 5),
    *_sm80("STEM", (128, 64, 64), (64, 32, 64), 3, _STEM),
    *_sm80("GROUPED", (128, 32, 32), (64, 32, 32), 4, _GROUP),
    *_sm80("SPLITK", (64, 64, 64), (32, 32, 64), 5, _SPLITK80),
    Instantiation("REGULAR", "s8", (128, 128, 64), _INT8, (64, 64, 64), 3),
    Instantiation("STEM", "s8", (64, 64, 64), _INT8_STEM, (32, 32, 64), 10),
    *_sm90("REGULAR_SM90A", (128, 128, 64), _SM90),
    *_sm90("REGULAR_SM90A", (64, 128, 64), _SM90_64),
    *_sm90("REGULAR_SM90A", (128, 64, 64), _SM90_N64),
    *_sm90("SPLITK_SM90A", (64, 64, 64), _SPLITK90, stages=4),
    Instantiation("REGULAR_SM90A", "s8", (128, 128, 128), _INT8_SM90),
)


#: Registers per thread of each kernel's code for the targets CI builds (``cuobjdump -res-usage``, nvcc 13.0,
#: CUTLASS 4.2): the time model bounds CTAs per SM by them (the stem's 255 on sm_90a allow 2 CTAs, not the 3 its
#: shared memory would). ``tests/ops/test_resources.py`` checks them against every build.
REGISTERS: dict[str, dict[str, int]] = {
    "sm80_f16_t128x128_64x3": {"sm_80": 254, "sm_90a": 254},
    "sm80_bf16_t128x128_64x3": {"sm_80": 254, "sm_90a": 254},
    "sm80_f16_t128x64_64x3": {"sm_80": 186, "sm_90a": 190},
    "sm80_bf16_t128x64_64x3": {"sm_80": 186, "sm_90a": 190},
    "sm80_f16_t64x64_64x5": {"sm_80": 120, "sm_90a": 118},
    "sm80_bf16_t64x64_64x5": {"sm_80": 120, "sm_90a": 118},
    "sm80_f16_stem_t128x64_64x3": {"sm_80": 188, "sm_90a": 255},
    "sm80_bf16_stem_t128x64_64x3": {"sm_80": 188, "sm_90a": 255},
    "sm80_f16_group_t128x32_32x4": {"sm_80": 168, "sm_90a": 168},
    "sm80_bf16_group_t128x32_32x4": {"sm_80": 168, "sm_90a": 168},
    "sm80_f16_splitk_t64x64_64x5": {"sm_80": 118, "sm_90a": 118},
    "sm80_bf16_splitk_t64x64_64x5": {"sm_80": 118, "sm_90a": 118},
    "sm80_s8_t128x128_64x3": {"sm_80": 242, "sm_90a": 248},
    "sm80_s8_stem_t64x64_64x10": {"sm_80": 120, "sm_90a": 230},
    "sm90_f16_t128x128x64": {"sm_90a": 166},
    "sm90_bf16_t128x128x64": {"sm_90a": 166},
    "sm90_f16_t64x128x64": {"sm_90a": 96},
    "sm90_bf16_t64x128x64": {"sm_90a": 96},
    "sm90_f16_t128x64x64": {"sm_90a": 101},
    "sm90_bf16_t128x64x64": {"sm_90a": 101},
    "sm90_f16_splitk_t64x64x64": {"sm_90a": 58},
    "sm90_bf16_splitk_t64x64x64": {"sm_90a": 58},
    "sm90_s8_t128x128x128": {"sm_90a": 178},
}
