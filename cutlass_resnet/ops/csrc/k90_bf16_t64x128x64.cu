// Tile and cluster as cutlass_library/generator.py GenerateSM90_Conv3x emits for 2-D fprop f16f16_f16f16_f16:
// MMA (64, 128, 16) x 4 per tile = 64x128x64, cluster (1, 1, 1) (CUTLASS prefers 64x128 to 128x64 on sm90). Not
// tested upstream as instantiated here: fp32 accumulation, the bias/residual/activation EVT and (bf16) output;
// checked by the self-check on a GPU.
#include "conv90.cuh"
CR_DEFINE_KERNEL90(sm90_bf16_t64x128x64, cutlass::bfloat16_t, CR_BFLOAT16, 64, 128, 64)
