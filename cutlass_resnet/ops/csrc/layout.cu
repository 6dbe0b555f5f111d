// The passes around the convs, NHWC: the stem's input packed into C channels in one pass (any input
// strides, the channels past the input's zero), and a max-pool that writes no indices. Each output
// element is computed by one function that the device kernels and the host loops (the tests') share.
#include <cuda_runtime.h>

#include <cstdint>

#include "conv_api.h"
#include "conv_common.cuh"
#include "cutlass/numeric_types.h"

namespace {

constexpr int kThreads = 256;

template <typename T>
CUTLASS_HOST_DEVICE T pack_element(const CrPack& p, const T* src, int64_t i) {
  const int c = int(i % p.C_out);
  int64_t pixel = i / p.C_out;
  const int w = int(pixel % p.W);
  pixel /= p.W;
  const int h = int(pixel % p.H);
  const int64_t n = pixel / p.H;
  if (c >= p.C) return T(0.f);
  return src[n * p.stride_n + c * p.stride_c + h * p.stride_h + w * p.stride_w];
}

template <typename T>
CUTLASS_HOST_DEVICE T max_pool_element(const CrPool& p, const T* x, int64_t i) {
  const int c = int(i % p.C);
  int64_t pixel = i / p.C;
  const int q = int(pixel % p.Q);
  pixel /= p.Q;
  const int out_p = int(pixel % p.P);
  const int64_t n = pixel / p.P;
  float m = -INFINITY;  // torch's padding: never the maximum
  for (int r = 0; r < p.R; ++r) {
    const int h = out_p * p.stride_h - p.pad_h + r;
    if (h < 0 || h >= p.H) continue;
    for (int s = 0; s < p.S; ++s) {
      const int w = q * p.stride_w - p.pad_w + s;
      if (w < 0 || w >= p.W) continue;
      const float v = float(x[((n * p.H + h) * p.W + w) * p.C + c]);
      if (v > m || v != v) m = v;  // NaN, once seen, stays: torch propagates it
    }
  }
  return T(m);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) pack_kernel(CrPack p, const T* src, T* dst, int64_t total) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i < total) dst[i] = pack_element(p, src, i);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) max_pool_kernel(CrPool p, const T* x, T* y, int64_t total) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i < total) y[i] = max_pool_element(p, x, i);
}

dim3 blocks(int64_t total) { return dim3(unsigned((total + kThreads - 1) / kThreads)); }

template <typename T>
int pack(const CrPack* p, const void* src, void* dst, int host, cudaStream_t stream) {
  const int64_t total = int64_t(p->N) * p->H * p->W * p->C_out;
  if (total == 0) return 0;
  if (host) {
    for (int64_t i = 0; i < total; ++i) static_cast<T*>(dst)[i] = pack_element(*p, static_cast<const T*>(src), i);
    return 0;
  }
  pack_kernel<T><<<blocks(total), kThreads, 0, stream>>>(*p, static_cast<const T*>(src), static_cast<T*>(dst), total);
  return cr_cuda_status(cudaGetLastError());
}

template <typename T>
int max_pool(const CrPool* p, const void* x, void* y, int host, cudaStream_t stream) {
  const int64_t total = int64_t(p->N) * p->P * p->Q * p->C;
  if (total == 0) return 0;
  if (host) {
    for (int64_t i = 0; i < total; ++i) static_cast<T*>(y)[i] = max_pool_element(*p, static_cast<const T*>(x), i);
    return 0;
  }
  max_pool_kernel<T><<<blocks(total), kThreads, 0, stream>>>(*p, static_cast<const T*>(x), static_cast<T*>(y), total);
  return cr_cuda_status(cudaGetLastError());
}

}  // namespace

extern "C" int cr_pack_channels(int dtype, const CrPack* p, const void* src, void* dst, int host,
                                cudaStream_t stream) {
  return dtype == CR_FLOAT16 ? pack<cutlass::half_t>(p, src, dst, host, stream)
                             : pack<cutlass::bfloat16_t>(p, src, dst, host, stream);
}

extern "C" int cr_max_pool(int dtype, const CrPool* p, const void* x, void* y, int host, cudaStream_t stream) {
  return dtype == CR_FLOAT16 ? max_pool<cutlass::half_t>(p, x, y, host, stream)
                             : max_pool<cutlass::bfloat16_t>(p, x, y, host, stream);
}
