#include "conv90.cuh"
CR_DEFINE_KERNEL90(sm90_bf16_t128x128x64, cutlass::bfloat16_t, CR_BFLOAT16, 128, 128, 64)
