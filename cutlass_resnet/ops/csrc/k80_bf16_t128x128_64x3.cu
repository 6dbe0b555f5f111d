#include "conv80.cuh"
CR_DEFINE_KERNEL80(sm80_bf16_t128x128_64x3, cutlass::bfloat16_t, CR_BFLOAT16, CR_REGULAR, 8, 128, 128, 64, 64, 64, 64, 3, cutlass::conv::IteratorAlgorithm::kOptimized)
