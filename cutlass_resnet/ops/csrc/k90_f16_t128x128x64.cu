#include "conv90.cuh"
CR_DEFINE_KERNEL90(sm90_f16_t128x128x64, cutlass::half_t, CR_FLOAT16, 128, 128, 64)
