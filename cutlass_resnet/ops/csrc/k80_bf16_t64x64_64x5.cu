// mainloop as cutlass_library/generator.py GenerateSM80_TensorOp_16816: TileDescription([64, 64, 64], 5, [2, 2, 1]).
// The broadcast epilogue (DefaultConv2dFpropWithBroadcast) is tested upstream only with SM75 tensor ops
// and SM80 SIMT (test/unit/conv/device/conv2d_fprop_with_broadcast_*.cu): this pairing is checked by
// the self-check and CUTLASS's host reference (tests/ops/test_host_reference.py), not upstream.
#include "conv80.cuh"
CR_DEFINE_KERNEL80(sm80_bf16_t64x64_64x5, cutlass::bfloat16_t, CR_BFLOAT16, 64, 64, 64, 32, 32, 64, 5)
