// Tile and cluster of the SM90 fprop unit test 128x64x64_1x1x1 in test/unit/conv/device_3x/fprop/
// sm90_conv2d_fprop_implicit_gemm_f16_f16_f32_tensorop_f16.cu: the Hopper tile for convs of 64 output channels
// (ResNet's layer1), half of which a 128-wide tile would waste. Not tested upstream as instantiated here: fp32
// accumulation, the bias/residual/activation EVT and (bf16) output; checked by the self-check on a GPU.
#include "conv90.cuh"
CR_DEFINE_KERNEL90(sm90_bf16_t128x64x64, cutlass::bfloat16_t, CR_BFLOAT16, 128, 64, 64)
