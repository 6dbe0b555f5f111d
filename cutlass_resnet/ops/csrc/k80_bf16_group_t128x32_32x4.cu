// No upstream configuration: test/unit/conv/device/group_conv2d_fprop_implicit_gemm_f16nhwc_f16nhwc_f16nhwc_
// tensor_op_f32_sm80.cu tests single-group mode at 128x128x64/3 and 64x64x64/3 only, and the generator
// emits no grouped conv. Tile N 32 is chosen because each merged group's K must be a multiple of it:
// at N 64 the block-diagonal merge of ResNeXt's 4-channel groups would cost x16 the MACs instead of x8.
#include "conv80_bias_source.cuh"
CR_DEFINE_BIAS_SOURCE_KERNEL80(sm80_bf16_group_t128x32_32x4, cutlass::bfloat16_t, CR_BFLOAT16, CR_GROUPED, CrGroupKernel, 8, 128, 32, 32, 64, 32, 32, 4)
