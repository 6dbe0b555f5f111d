// Mainloop as cutlass_library/generator.py GenerateSM80_TensorOp_16816: TileDescription([64, 64, 64], 5, [2, 2, 1]),
// the plain DefaultConv2dFprop with fp32 output in SplitKMode::kParallel, as test/unit/conv/device/conv2d_testbed.h
// runs every Sm80 fprop kernel (split_k_slices > 1, parallel, then a reduction); the reduction here is ours.
#include "conv80_splitk.cuh"
CR_DEFINE_SPLITK_KERNEL80(sm80_bf16_splitk_t64x64_64x5, cutlass::bfloat16_t, CR_BFLOAT16, 64, 64, 64, 32, 32, 64, 5)
