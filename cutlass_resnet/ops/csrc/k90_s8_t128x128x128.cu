// Data types as cutlass_library/generator.py GenerateSM90_Conv3x's s8_s32_s32_s32 (int8 in, int32 accumulation,
// which it lists among the unit tests' kernels), with int8 output through our EVT (the int8 op's steps; alpha and
// beta as row broadcasts, the residual as the source) and the 128x128x128 tile the time model assumes for Hopper
// int8, cluster (1, 1, 1); checked on the host against CUTLASS's int32 host reference and the int8 reference
// (tests/ops/test_int8_kernel.py), not upstream.
#include "conv90_int8.cuh"
CR_DEFINE_INT8_KERNEL90(sm90_s8_t128x128x128, 128, 128, 128)
