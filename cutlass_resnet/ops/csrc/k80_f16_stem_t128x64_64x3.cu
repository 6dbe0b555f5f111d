// As cutlass_library/generator.py GenerateSM80_TensorOp_16816 emits for the fixed-channels iterator:
// TileDescription([128, 64, 64], 3, [2, 2, 1]) with CreateConv2dFixedChannelsOperator(..., [4, 8]); the
// plain DefaultConv2dFprop with a fixed-channels iterator as in test/unit/conv/device/
// conv2d_fprop_fixed_channels_f16nhwc_f16nhwc_f16nhwc_tensor_op_f32_sm80.cu (channels_4).
#include "conv80_bias_source.cuh"
CR_DEFINE_BIAS_SOURCE_KERNEL80(sm80_f16_stem_t128x64_64x3, cutlass::half_t, CR_FLOAT16, CR_STEM, CrStemKernel, 4, 128, 64, 64, 64, 32, 64, 3)
