// What every kernel wrapper does the same way: the epilogue's activation, CUTLASS's host-only
// checks, one launch, and the 2.x problem size.
#pragma once
#include "conv_api.h"
#include <vector>

#include "cutlass/array.h"
#include "cutlass/cutlass.h"
#include "cutlass/conv/conv2d_problem_size.h"
#include "cutlass/util/reference/host/convolution.h"

// act(z) = z > 0 ? z : leaky_alpha * z, except that ReLU (leaky_alpha 0) maps every z <= 0 to 0:
// CUTLASS's LeakyReLU computes 0 * -inf = NaN there, torch's relu gives 0. NaN stays NaN.
template <typename T>
struct CrLeakyReLU {
  static const bool kIsHeavy = false;
  struct Arguments {
    T leaky_alpha = T(0);
  };

  CUTLASS_HOST_DEVICE
  T operator()(T const& value, T const& leaky_alpha) const {
    if (value > T(0) || value != value) return value;
    return leaky_alpha == T(0) ? T(0) : value * leaky_alpha;
  }

  CUTLASS_HOST_DEVICE
  T operator()(T const& value, Arguments const& args = Arguments()) const { return (*this)(value, args.leaky_alpha); }
};

template <typename T, int N>
struct CrLeakyReLU<cutlass::Array<T, N>> {
  static const bool kIsHeavy = false;
  using Arguments = typename CrLeakyReLU<T>::Arguments;

  CUTLASS_HOST_DEVICE
  cutlass::Array<T, N> operator()(cutlass::Array<T, N> const& values, T const& leaky_alpha) const {
    cutlass::Array<T, N> y;
    CrLeakyReLU<T> op;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) y[i] = op(values[i], leaky_alpha);
    return y;
  }

  CUTLASS_HOST_DEVICE
  cutlass::Array<T, N> operator()(cutlass::Array<T, N> const& values, Arguments const& args = Arguments()) const {
    return (*this)(values, args.leaky_alpha);
  }
};

// 0 when CUTLASS accepts the arguments and needs no workspace (no split-k), else a status.
template <class Op>
int cr_check(typename Op::Arguments const& args) {
  cutlass::Status st = Op::can_implement(args);
  if (st != cutlass::Status::kSuccess) return int(st);
  return Op::get_workspace_size(args) == 0 ? 0 : CR_STATUS_WORKSPACE_NEEDED;
}

// Initialize and run on `stream`; call only with arguments cr_check accepted. A launch error is
// taken off CUDA's error state (so the next launch of anyone else does not report it) and
// returned as CR_STATUS_CUDA_ERROR + its cudaError_t.
template <class Op>
int cr_launch(typename Op::Arguments const& args, cudaStream_t stream) {
  Op op;
  cutlass::Status s = op.initialize(args, nullptr, stream);
  if (s == cutlass::Status::kSuccess) s = op.run(stream);
  cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) return CR_STATUS_CUDA_ERROR + int(error);
  return s == cutlass::Status::kSuccess ? 0 : int(s);
}

// The CUTLASS 2.x problem of a CrProblem.
inline cutlass::conv::Conv2dProblemSize cr_problem_size(const CrProblem& p) {
  return cutlass::conv::Conv2dProblemSize(p.N, p.H, p.W, p.C, p.K, p.R, p.S, p.P, p.Q, p.pad_h, p.pad_w,
                                          p.stride_h, p.stride_w, p.dil_h, p.dil_w,
                                          cutlass::conv::Mode::kCrossCorrelation, 1 /*split_k_slices*/, p.groups);
}

// What a 2.x kernel's Params say of a problem, host-only: CTAs, main-loop iterations, shared memory.
template <class Op>
int cr_describe80(typename Op::Arguments const& args, CrLaunchShape* shape) {
  typename Op::UnderlyingKernel::Params params(args, nullptr);
  shape->ctas = int64_t(params.grid_tiled_shape.m()) * params.grid_tiled_shape.n() * params.grid_tiled_shape.k();
  shape->mainloop_iterations = params.gemm_k_iterations;
  shape->shared_memory = int(sizeof(typename Op::UnderlyingKernel::SharedStorage));
  return 0;
}

// CUTLASS's host reference on the very arguments a 2.x launch would get (host pointers in `args`):
// y = act(alpha * conv + beta * source + bias[k]), in float, rounded once into args.ref_D. `bias` is
// the broadcast epilogue's vector, or null where the bias is the stride-0 source.
template <class Op, typename Element>
int cr_host_reference80(typename Op::Arguments const& args, float alpha, float beta, const Element* bias,
                        float leaky_alpha) {
  auto const& ps = args.problem_size;
  auto layout = args.ref_D.layout();
  std::vector<float> out(size_t(ps.N) * ps.P * ps.Q * ps.K);
  cutlass::TensorRef<float, cutlass::layout::TensorNHWC> out_ref(out.data(), layout);
  cutlass::reference::host::Conv2dFprop<Element, cutlass::layout::TensorNHWC, Element, cutlass::layout::TensorNHWC,
                                        Element, cutlass::layout::TensorNHWC, float, float, float>(
      ps, args.ref_A, args.ref_B, args.ref_C, out_ref, alpha, beta);
  CrLeakyReLU<float> act;
  for (int n = 0; n < ps.N; ++n)
    for (int p = 0; p < ps.P; ++p)
      for (int q = 0; q < ps.Q; ++q)
        for (int k = 0; k < ps.K; ++k) {
          cutlass::Coord<4> at = cutlass::make_Coord(n, p, q, k);
          float z = out_ref.at(at) + (bias ? float(bias[k]) : 0.f);
          args.ref_D.at(at) = Element(act(z, leaky_alpha));
        }
  return 0;
}
