// The passes around the convs, NHWC: packing in one pass (any source strides; the stem's input and filter padded
// with zero channels, a grouped conv's filter laid out block-diagonally), and a max-pool that writes no indices.
// Each pass is a functor of one output vector (kVector channels of one pixel, written in one store), which the
// device kernel and the host loop (the tests') share. Pixel coordinates come from multiply-shift divisions
// (cutlass::FastDivmod) where the vectors' count fits 31 bits, from 64-bit division past it.
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>

#include "conv_api.h"
#include "conv_common.cuh"
#include "cutlass/array.h"
#include "cutlass/fast_math.h"
#include "cutlass/numeric_types.h"

namespace {

constexpr int kThreads = 256;

// Quotient and remainder by a divisor fixed for the launch.
template <typename Index>
struct Divider {
  int64_t divisor;
  explicit Divider(int d) : divisor(d) {}
  CUTLASS_HOST_DEVICE Index divmod(Index& remainder, Index x) const {
    const Index q = x / Index(divisor);
    remainder = x - q * Index(divisor);
    return q;
  }
};

template <>
struct Divider<int> {
  cutlass::FastDivmod fast;
  explicit Divider(int d) : fast(d) {}
  CUTLASS_HOST_DEVICE int divmod(int& remainder, int x) const { return fast.divmod(remainder, x); }
};

// Vector v of a packed (N, H, W, C) tensor read as vectors of `vector` channels: its pixel and first channel.
template <typename Index>
struct Pixels {
  Divider<Index> per_pixel, width, height;
  Pixels(int vectors_per_pixel, int W, int H) : per_pixel(vectors_per_pixel), width(W), height(H) {}

  struct At {
    Index n;
    int h, w, vector;
  };

  CUTLASS_HOST_DEVICE At operator()(Index v) const {
    Index vector, w, h;
    Index pixel = per_pixel.divmod(vector, v);
    pixel = width.divmod(w, pixel);
    const Index n = height.divmod(h, pixel);
    return {n, int(h), int(w), int(vector)};
  }
};

template <typename Index, int V>
struct Pack {
  static constexpr int kVector = V;
  CrPack p;
  Pixels<Index> pixels;

  explicit Pack(const CrPack& p_) : p(p_), pixels(p_.C_out / V, p_.W, p_.H) {}

  int64_t vectors() const { return int64_t(p.N) * p.H * p.W * (p.C_out / V); }

  template <typename T>
  CUTLASS_HOST_DEVICE void operator()(const T* src, T* dst, Index v) const {
    const auto at = pixels(v);
    const int offset = p.merge > 1 ? int((at.n / p.group_n) % p.merge) * p.C : 0;
    const T* pixel = src + int64_t(at.n) * p.stride_n + at.h * p.stride_h + at.w * p.stride_w;
    cutlass::AlignedArray<T, V> out;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < V; ++i) {
      const int c = at.vector * V + i - offset;
      out[i] = c >= 0 && c < p.C ? pixel[c * p.stride_c] : T(0.f);
    }
    *reinterpret_cast<cutlass::AlignedArray<T, V>*>(dst + int64_t(v) * V) = out;
  }
};

template <typename Index, int V>
struct MaxPool {
  static constexpr int kVector = V;
  CrPool p;
  Pixels<Index> pixels;

  explicit MaxPool(const CrPool& p_) : p(p_), pixels(p_.C / V, p_.Q, p_.P) {}

  int64_t vectors() const { return int64_t(p.N) * p.P * p.Q * (p.C / V); }

  template <typename T>
  CUTLASS_HOST_DEVICE void operator()(const T* x, T* y, Index v) const {
    const auto out = pixels(v);
    float m[V];
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < V; ++i) m[i] = -INFINITY;  // torch's padding: never the maximum
    for (int r = 0; r < p.R; ++r) {
      const int h = out.h * p.stride_h - p.pad_h + r;
      if (h < 0 || h >= p.H) continue;
      for (int s = 0; s < p.S; ++s) {
        const int w = out.w * p.stride_w - p.pad_w + s;
        if (w < 0 || w >= p.W) continue;
        const auto in = *reinterpret_cast<const cutlass::AlignedArray<T, V>*>(
            x + ((int64_t(out.n) * p.H + h) * p.W + w) * p.C + out.vector * V);
        CUTLASS_PRAGMA_UNROLL
        for (int i = 0; i < V; ++i) {
          const float value = float(in[i]);
          if (value > m[i] || value != value) m[i] = value;  // NaN, once seen, stays: torch propagates it
        }
      }
    }
    cutlass::AlignedArray<T, V> result;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < V; ++i) result[i] = T(m[i]);
    *reinterpret_cast<cutlass::AlignedArray<T, V>*>(y + int64_t(v) * V) = result;
  }
};

template <typename T, class Pass, typename Index>
__global__ void __launch_bounds__(kThreads) pass_kernel(Pass pass, const T* in, T* out, Index total) {
  const Index v = Index(blockIdx.x) * kThreads + Index(threadIdx.x);
  if (v < total) pass(in, out, v);
}

// Every output vector of a pass: a loop on the host, or a launch of a thread per vector.
template <typename T, typename Index, class Pass>
int run_typed(const Pass& pass, const void* in, void* out, int host, cudaStream_t stream) {
  const Index total = Index(pass.vectors());
  if (total == 0) return 0;
  const T* src = static_cast<const T*>(in);
  T* dst = static_cast<T*>(out);
  if (host) {
    for (Index v = 0; v < total; ++v) pass(src, dst, v);
    return 0;
  }
  const dim3 grid(unsigned((int64_t(total) + kThreads - 1) / kThreads));
  pass_kernel<T, Pass, Index><<<grid, kThreads, 0, stream>>>(pass, src, dst, total);
  return cr_cuda_status(cudaGetLastError());
}

template <template <typename, int> class Pass, int V, class Desc>
int run_vector(int dtype, const Desc& desc, int64_t elements, const void* in, void* out, int host,
               cudaStream_t stream) {
  if (elements / V < (int64_t(1) << 31)) {
    const Pass<int, V> pass(desc);
    return dtype == CR_FLOAT16 ? run_typed<cutlass::half_t, int>(pass, in, out, host, stream)
                               : run_typed<cutlass::bfloat16_t, int>(pass, in, out, host, stream);
  }
  const Pass<int64_t, V> pass(desc);
  return dtype == CR_FLOAT16 ? run_typed<cutlass::half_t, int64_t>(pass, in, out, host, stream)
                             : run_typed<cutlass::bfloat16_t, int64_t>(pass, in, out, host, stream);
}

// The widest vector (8, 4, 2 or 1 elements of 2 bytes) that divides `channels` and every pointer's alignment.
int vector_width(int channels, std::initializer_list<const void*> pointers) {
  for (int v : {8, 4, 2}) {
    bool fits = channels % v == 0;
    for (const void* ptr : pointers) fits = fits && reinterpret_cast<uintptr_t>(ptr) % (2 * v) == 0;
    if (fits) return v;
  }
  return 1;
}

template <template <typename, int> class Pass, class Desc>
int run_pass(int dtype, const Desc& desc, int64_t elements, int vector, const void* in, void* out, int host,
             cudaStream_t stream) {
  if (elements == 0) return 0;  // and no divider is made for an empty extent
  switch (vector) {
    case 8:
      return run_vector<Pass, 8>(dtype, desc, elements, in, out, host, stream);
    case 4:
      return run_vector<Pass, 4>(dtype, desc, elements, in, out, host, stream);
    case 2:
      return run_vector<Pass, 2>(dtype, desc, elements, in, out, host, stream);
    default:
      return run_vector<Pass, 1>(dtype, desc, elements, in, out, host, stream);
  }
}

}  // namespace

extern "C" int cr_pack_channels(int dtype, const CrPack* p, const void* src, void* dst, int host,
                                cudaStream_t stream) {
  const int64_t elements = int64_t(p->N) * p->H * p->W * p->C_out;
  const int vector = vector_width(p->C_out, {dst});  // the source is read element by element, at any strides
  return run_pass<Pack>(dtype, *p, elements, vector, src, dst, host, stream);
}

extern "C" int cr_max_pool(int dtype, const CrPool* p, const void* x, void* y, int host, cudaStream_t stream) {
  const int64_t elements = int64_t(p->N) * p->P * p->Q * p->C;
  const int vector = vector_width(p->C, {x, y});
  return run_pass<MaxPool>(dtype, *p, elements, vector, x, y, host, stream);
}
