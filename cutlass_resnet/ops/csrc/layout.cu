// The passes around the convs, NHWC: packing in one pass (any source strides; the stem's input and filter padded
// with zero channels, a grouped conv's filter laid out block-diagonally), and a max-pool that writes no indices. Each pass is a functor of
// one output element, which the device kernel and the host loop (the tests') share.
#include <cuda_runtime.h>

#include <cstdint>

#include "conv_api.h"
#include "conv_common.cuh"
#include "cutlass/numeric_types.h"

namespace {

constexpr int kThreads = 256;

// The coordinates of element i of a packed (N, H, W, C) tensor.
struct Nhwc {
  int64_t n;
  int h, w, c;
};

CUTLASS_HOST_DEVICE Nhwc nhwc_of(int64_t i, int H, int W, int C) {
  const int c = int(i % C);
  int64_t pixel = i / C;
  const int w = int(pixel % W);
  pixel /= W;
  return {pixel / H, int(pixel % H), w, c};
}

struct Pack {
  CrPack p;

  int64_t size() const { return int64_t(p.N) * p.H * p.W * p.C_out; }

  template <typename T>
  CUTLASS_HOST_DEVICE T operator()(const T* src, int64_t i) const {
    const Nhwc at = nhwc_of(i, p.H, p.W, p.C_out);
    const int c = at.c - (p.merge > 1 ? int((at.n / p.group_n) % p.merge) * p.C : 0);
    if (c < 0 || c >= p.C) return T(0.f);
    return src[at.n * p.stride_n + c * p.stride_c + at.h * p.stride_h + at.w * p.stride_w];
  }
};

struct MaxPool {
  CrPool p;

  int64_t size() const { return int64_t(p.N) * p.P * p.Q * p.C; }

  template <typename T>
  CUTLASS_HOST_DEVICE T operator()(const T* x, int64_t i) const {
    const Nhwc out = nhwc_of(i, p.P, p.Q, p.C);
    float m = -INFINITY;  // torch's padding: never the maximum
    for (int r = 0; r < p.R; ++r) {
      const int h = out.h * p.stride_h - p.pad_h + r;
      if (h < 0 || h >= p.H) continue;
      for (int s = 0; s < p.S; ++s) {
        const int w = out.w * p.stride_w - p.pad_w + s;
        if (w < 0 || w >= p.W) continue;
        const float v = float(x[((out.n * p.H + h) * p.W + w) * p.C + out.c]);
        if (v > m || v != v) m = v;  // NaN, once seen, stays: torch propagates it
      }
    }
    return T(m);
  }
};

template <typename T, class Pass>
__global__ void __launch_bounds__(kThreads) pass_kernel(Pass pass, const T* in, T* out, int64_t total) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i < total) out[i] = pass(in, i);
}

// Every output element of a pass: a loop on the host, or a launch of a thread per element.
template <typename T, class Pass>
int run_typed(const Pass& pass, const void* in, void* out, int host, cudaStream_t stream) {
  const int64_t total = pass.size();
  if (total == 0) return 0;
  const T* src = static_cast<const T*>(in);
  T* dst = static_cast<T*>(out);
  if (host) {
    for (int64_t i = 0; i < total; ++i) dst[i] = pass(src, i);
    return 0;
  }
  pass_kernel<<<dim3(unsigned((total + kThreads - 1) / kThreads)), kThreads, 0, stream>>>(pass, src, dst, total);
  return cr_cuda_status(cudaGetLastError());
}

template <class Pass>
int run_pass(int dtype, const Pass& pass, const void* in, void* out, int host, cudaStream_t stream) {
  return dtype == CR_FLOAT16 ? run_typed<cutlass::half_t>(pass, in, out, host, stream)
                             : run_typed<cutlass::bfloat16_t>(pass, in, out, host, stream);
}

}  // namespace

extern "C" int cr_pack_channels(int dtype, const CrPack* p, const void* src, void* dst, int host,
                                cudaStream_t stream) {
  return run_pass(dtype, Pack{*p}, src, dst, host, stream);
}

extern "C" int cr_max_pool(int dtype, const CrPool* p, const void* x, void* y, int host, cudaStream_t stream) {
  return run_pass(dtype, MaxPool{*p}, x, y, host, stream);
}
