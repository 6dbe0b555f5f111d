#include "conv80_group.cuh"
CR_DEFINE_GROUP_KERNEL80(sm80_f16_group_t128x32_32x4, cutlass::half_t, CR_FLOAT16, 128, 32, 32, 64, 32, 32, 4)
