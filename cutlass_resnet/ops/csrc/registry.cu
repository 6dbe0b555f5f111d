// The table of kernels the binding can dispatch to, status names and the epilogue's activation.
// No kernel templates here.
#include "conv_api.h"
#include "conv_common.cuh"
#include "cutlass/cutlass.h"

extern "C" {
extern const CrKernel sm80_f16_t128x128_64x3, sm80_f16_t128x64_64x3, sm80_f16_t64x64_64x5,
    sm80_f16_stem_t128x64_64x3;
extern const CrKernel sm80_bf16_t128x128_64x3, sm80_bf16_t128x64_64x3, sm80_bf16_t64x64_64x5,
    sm80_bf16_stem_t128x64_64x3;
extern const CrKernel sm80_f16_group_t128x32_32x4, sm80_bf16_group_t128x32_32x4;
#ifdef CR_WITH_SM90
extern const CrKernel sm90_f16_t128x128x64, sm90_bf16_t128x128x64;
#endif
}

static const CrKernel* const kKernels[] = {
    &sm80_f16_t128x128_64x3,  &sm80_f16_t128x64_64x3,  &sm80_f16_t64x64_64x5,  &sm80_f16_stem_t128x64_64x3,
    &sm80_bf16_t128x128_64x3, &sm80_bf16_t128x64_64x3, &sm80_bf16_t64x64_64x5, &sm80_bf16_stem_t128x64_64x3,
    &sm80_f16_group_t128x32_32x4, &sm80_bf16_group_t128x32_32x4,
#ifdef CR_WITH_SM90  // built only when the targets include sm_90a
    &sm90_f16_t128x128x64, &sm90_bf16_t128x128x64,
#endif
};

extern "C" int cr_kernel_count(void) { return int(sizeof(kKernels) / sizeof(kKernels[0])); }

extern "C" const CrKernel* cr_kernel(int index) {
  return (index >= 0 && index < cr_kernel_count()) ? kKernels[index] : nullptr;
}

extern "C" const char* cr_status_string(int status) {
  if (status == CR_STATUS_WORKSPACE_NEEDED) return "needs a workspace (split-k), which is not supported";
  if (status == CR_STATUS_TMA_LIMIT) return "outside the TMA im2col limits (stride above 8)";
  if (status >= CR_STATUS_CUDA_ERROR) return cudaGetErrorString(cudaError_t(status - CR_STATUS_CUDA_ERROR));
  return cutlassGetStatusString(cutlass::Status(status));
}

extern "C" float cr_activation(float value, float leaky_alpha) { return CrLeakyReLU<float>()(value, leaky_alpha); }
