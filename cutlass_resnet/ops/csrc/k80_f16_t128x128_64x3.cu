#include "conv80.cuh"
CR_DEFINE_KERNEL80(sm80_f16_t128x128_64x3, cutlass::half_t, CR_FLOAT16, CR_REGULAR, 8, 128, 128, 64, 64, 64, 64, 3, cutlass::conv::IteratorAlgorithm::kOptimized)
