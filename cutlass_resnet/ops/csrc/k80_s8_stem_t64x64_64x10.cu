// As cutlass_library/generator.py GenerateSM80_TensorOp_16832_TN emits for int8 with the fixed-channels iterator:
// TileDescription([64, 64, 64], 10, [2, 2, 1]) with CreateConv2dFixedChannelsOperator(..., [16, 8, 4]) (4 channels,
// 4-byte loads: the stem's 3 padded to 4). The epilogue is ours, as the int8 kernel's (8 outputs a store); checked
// on the host against CUTLASS's int32 host reference and the int8 reference (tests/ops/test_int8_kernel.py), not
// upstream. 128x64 tiles spill registers on sm_90a with this iterator.
#include "conv80_int8.cuh"
CR_DEFINE_INT8_STEM_KERNEL80(sm80_s8_stem_t64x64_64x10, 64, 64, 64, 32, 32, 64, 10)
