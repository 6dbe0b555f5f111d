// Tile and cluster as cutlass_library/generator.py GenerateSM90_Conv3x emits for 2-D fprop fp16_fp32_fp32_fp32 (fp32
// output, the unit tests' configuration): MMA (64, 64, 16) x 4 per tile = 64x64x64, here with cluster (1, 1, 1), no
// source and fp32 partial sums of a channel slice (non-packed activation and filter strides), and 4 stages where the
// unit tests let shared memory decide (13 here: one CTA per SM); the slices and the reduction are ours, checked on
// the host by CUTLASS's host reference and on a GPU by the self-check.
#include "conv90.cuh"
CR_DEFINE_SPLITK_KERNEL90(sm90_f16_splitk_t64x64x64, cutlass::half_t, CR_FLOAT16, 64, 64, 64, 4)
