#include "conv80.cuh"
CR_DEFINE_KERNEL80(sm80_bf16_stem_t128x64_64x3, cutlass::bfloat16_t, CR_BFLOAT16, CR_STEM, 4, 128, 64, 64, 64, 32, 64, 3, cutlass::conv::IteratorAlgorithm::kFixedChannels)
