#include "conv80.cuh"
CR_DEFINE_KERNEL80(sm80_f16_t128x64_64x4, cutlass::half_t, CR_FLOAT16, CR_REGULAR, 8, 128, 64, 64, 64, 32, 64, 4, cutlass::conv::IteratorAlgorithm::kOptimized)
