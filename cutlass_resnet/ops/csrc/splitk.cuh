// The second half of a split-K convolution: the slices' fp32 partial sums reduced, with the epilogue
//   y = act(sum_j partial[j] + bias[k] + residual),  act = CrLeakyReLU,
// in fp32 and rounded once, on the device (cr_splitk_reduce) and on the host (cr_splitk_reduce_host,
// for the host references), adding the slices in the same order.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "conv_common.cuh"
#include "cutlass/array.h"
#include "cutlass/numeric_conversion.h"

constexpr int kCrReduceVector = 8;  // elements per thread: K is a multiple of 8
constexpr int kCrReduceThreads = 256;

// One output element of the reduction, from its partials `stride` floats apart.
template <typename Element>
CUTLASS_HOST_DEVICE float cr_splitk_value(const float* partial, int64_t stride, int split, const Element* bias,
                                          const Element* residual, int64_t index, int k, float leaky_alpha) {
  float z = 0.f;
  for (int j = 0; j < split; ++j) z += partial[j * stride + index];
  if (bias) z += float(bias[k]);
  if (residual) z += float(residual[index]);
  return CrLeakyReLU<float>()(z, leaky_alpha);
}

template <typename Element>
__global__ void __launch_bounds__(kCrReduceThreads)
    cr_splitk_reduce_kernel(const float* partial, int split, int64_t mk, int K, const Element* bias,
                            const Element* residual, Element* y, float leaky_alpha) {
  const int64_t first = (int64_t(blockIdx.x) * kCrReduceThreads + threadIdx.x) * kCrReduceVector;
  if (first >= mk) return;
  const int k0 = int(first % K);
  cutlass::Array<Element, kCrReduceVector> out;
  CUTLASS_PRAGMA_UNROLL
  for (int i = 0; i < kCrReduceVector; ++i)
    out[i] = Element(cr_splitk_value(partial, mk, split, bias, residual, first + i, k0 + i, leaky_alpha));
  *reinterpret_cast<cutlass::Array<Element, kCrReduceVector>*>(y + first) = out;
}

// Reduce on `stream`: partial holds split slices of mk = N*P*Q*K floats each; y, residual and bias are
// 16-byte aligned and K is a multiple of 8 (the binding checks both).
template <typename Element>
int cr_splitk_reduce(const float* partial, int split, int64_t mk, int K, const Element* bias, const Element* residual,
                     Element* y, float leaky_alpha, cudaStream_t stream) {
  if (mk == 0) return 0;
  const int64_t vectors = (mk + kCrReduceVector - 1) / kCrReduceVector;
  const dim3 grid(unsigned((vectors + kCrReduceThreads - 1) / kCrReduceThreads));
  cr_splitk_reduce_kernel<Element>
      <<<grid, kCrReduceThreads, 0, stream>>>(partial, split, mk, K, bias, residual, y, leaky_alpha);
  return cr_cuda_status(cudaGetLastError());
}

// The same reduction on host memory.
template <typename Element>
void cr_splitk_reduce_host(const float* partial, int split, int64_t mk, int K, const Element* bias,
                           const Element* residual, Element* y, float leaky_alpha) {
  for (int64_t i = 0; i < mk; ++i)
    y[i] = Element(cr_splitk_value(partial, mk, split, bias, residual, i, int(i % K), leaky_alpha));
}
