// Mainloop as CUTLASS's test/unit/conv/device/conv2d_fprop_implicit_gemm_s8nhwc_s8nhwc_s32nhwc_tensor_op_s32_sm80.cu:
// threadblock 128x128x64, warp 64x64x64, mma 16x8x32, 3 stages, OpMultiplyAddSaturate, optimized iterator, 16-byte
// accesses. The epilogue is ours (the int8 op's fp32 steps, per-channel alpha/beta as one broadcast vector of pairs),
// checked on the host against CUTLASS's int32 host reference and cutlass_resnet.ops' int8 reference
// (tests/ops/test_int8_kernel.py), not upstream.
#include "conv80_int8.cuh"
CR_DEFINE_INT8_KERNEL80(sm80_s8_t128x128_64x3, 128, 128, 64, 64, 64, 64, 3)
