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

constexpr int kCrReduceVector = 8;  // outputs per thread: K is a multiple of 8
constexpr int kCrReduceThreads = 256;

// Outputs [first, first + 8) of the reduction, their partials `stride` floats apart, read and written with
// 16-byte accesses: the workspace, y, the residual and the bias are 16-byte aligned and K is a multiple of 8
// (the binding checks both), so the 8 outputs share a row and bias[k0 .. k0 + 8) is one vector.
template <typename Element>
CUTLASS_HOST_DEVICE void cr_splitk_vector(const float* partial, int64_t stride, int split, const Element* bias,
                                          const Element* residual, Element* y, int64_t first, int k0,
                                          float leaky_alpha) {
  using Partial = cutlass::AlignedArray<float, 4>;
  using Vector = cutlass::AlignedArray<Element, kCrReduceVector>;
  float z[kCrReduceVector] = {};
  for (int j = 0; j < split; ++j) {
    const Partial* slice = reinterpret_cast<const Partial*>(partial + j * stride + first);
    CUTLASS_PRAGMA_UNROLL
    for (int half = 0; half < 2; ++half) {
      const Partial four = slice[half];
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < 4; ++i) z[half * 4 + i] += four[i];
    }
  }
  if (bias) {
    const Vector b = *reinterpret_cast<const Vector*>(bias + k0);
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < kCrReduceVector; ++i) z[i] += float(b[i]);
  }
  if (residual) {
    const Vector r = *reinterpret_cast<const Vector*>(residual + first);
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < kCrReduceVector; ++i) z[i] += float(r[i]);
  }
  Vector out;
  CUTLASS_PRAGMA_UNROLL
  for (int i = 0; i < kCrReduceVector; ++i) out[i] = Element(CrLeakyReLU<float>()(z[i], leaky_alpha));
  *reinterpret_cast<Vector*>(y + first) = out;
}

template <typename Element>
__global__ void __launch_bounds__(kCrReduceThreads)
    cr_splitk_reduce_kernel(const float* partial, int split, int64_t mk, int K, const Element* bias,
                            const Element* residual, Element* y, float leaky_alpha) {
  const int64_t first = (int64_t(blockIdx.x) * kCrReduceThreads + threadIdx.x) * kCrReduceVector;
  if (first >= mk) return;
  cr_splitk_vector(partial, mk, split, bias, residual, y, first, int(first % K), leaky_alpha);
}

// Reduce on `stream`: partial holds split slices of mk = N*P*Q*K floats each.
template <typename Element>
int cr_splitk_reduce(const float* partial, int split, int64_t mk, int K, const Element* bias, const Element* residual,
                     Element* y, float leaky_alpha, cudaStream_t stream) {
  if (mk == 0) return 0;
  const int64_t vectors = mk / kCrReduceVector;
  const dim3 grid(unsigned((vectors + kCrReduceThreads - 1) / kCrReduceThreads));
  cr_splitk_reduce_kernel<Element>
      <<<grid, kCrReduceThreads, 0, stream>>>(partial, split, mk, K, bias, residual, y, leaky_alpha);
  return cr_cuda_status(cudaGetLastError());
}

// The same reduction on host memory, by the same vectors.
template <typename Element>
void cr_splitk_reduce_host(const float* partial, int split, int64_t mk, int K, const Element* bias,
                           const Element* residual, Element* y, float leaky_alpha) {
  for (int64_t first = 0; first < mk; first += kCrReduceVector)
    cr_splitk_vector(partial, mk, split, bias, residual, y, first, int(first % K), leaky_alpha);
}
