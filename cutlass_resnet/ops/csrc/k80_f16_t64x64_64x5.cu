#include "conv80.cuh"
CR_DEFINE_KERNEL80(sm80_f16_t64x64_64x5, cutlass::half_t, CR_FLOAT16, CR_REGULAR, 8, 64, 64, 64, 32, 32, 64, 5, cutlass::conv::IteratorAlgorithm::kOptimized)
