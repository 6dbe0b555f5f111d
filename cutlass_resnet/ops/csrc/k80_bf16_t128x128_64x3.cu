// mainloop as cutlass_library/generator.py GenerateSM80_TensorOp_16816: TileDescription([128, 128, 64], 3, [2, 2, 1]).
// The broadcast epilogue (DefaultConv2dFpropWithBroadcast) is tested upstream only with SM75 tensor ops
// and SM80 SIMT (test/unit/conv/device/conv2d_fprop_with_broadcast_*.cu): this pairing is checked by
// the self-check and CUTLASS's host reference (tests/ops/test_host_reference.py), not upstream.
#include "conv80.cuh"
CR_DEFINE_KERNEL80(sm80_bf16_t128x128_64x3, cutlass::bfloat16_t, CR_BFLOAT16, 128, 128, 64, 64, 64, 64, 3)
