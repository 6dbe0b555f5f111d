#include "conv80_group.cuh"
CR_DEFINE_GROUP_KERNEL80(sm80_bf16_group_t128x32_32x4, cutlass::bfloat16_t, CR_BFLOAT16, 128, 32, 32, 64, 32, 32, 4)
