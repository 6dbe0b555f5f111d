// No upstream configuration: CUTLASS tests SM90 fprop (test/unit/conv/device_3x) and the generator emits it
// at 64x64 and 128x64 tiles with f16 output and no fused epilogue; this 128x128 tile with the bias/
// residual/activation EVT and bf16 output is checked only by the self-check on a GPU.
#include "conv90.cuh"
CR_DEFINE_KERNEL90(sm90_f16_t128x128x64, cutlass::half_t, CR_FLOAT16, 128, 128, 64)
