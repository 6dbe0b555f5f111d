// What every kernel wrapper does the same way: the epilogue's activation, CUTLASS's host-only
// checks, one launch, and the 2.x problem size, operands and CrKernel functions.
#pragma once
#include "conv_api.h"
#include <atomic>
#include <cstdint>
#include <vector>

#include "cutlass/array.h"
#include "cutlass/cutlass.h"
#include "cutlass/device_kernel.h"
#include "cutlass/conv/conv2d_problem_size.h"
#include "cutlass/layout/tensor.h"
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

// CR_STATUS_CUDA_ERROR + error, or 0 for cudaSuccess. Reading an error takes it off CUDA's state, so the
// next launch of anyone else does not report it.
inline int cr_cuda_status(cudaError_t error) { return error == cudaSuccess ? 0 : CR_STATUS_CUDA_ERROR + int(error); }

// Lets `kernel` use `bytes` of dynamic shared memory on the current device: once per device and kernel.
template <class Tag>
int cr_allow_shared_memory(const void* kernel, int bytes) {
  static std::atomic<uint64_t> done{0};  // a bit per device
  if (bytes < (48 << 10)) return 0;
  int device = 0;
  if (int st = cr_cuda_status(cudaGetDevice(&device))) return st;
  const uint64_t bit = device < 64 ? uint64_t(1) << device : 0;
  if (bit && (done.load() & bit)) return 0;
  int st = cr_cuda_status(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  if (st == 0) done.fetch_or(bit);
  cudaGetLastError();
  return st;
}

// A 2.x kernel's Params from arguments cr_check accepted: everything a launch does but the launch. CUTLASS's
// fused-epilogue (broadcast) kernel counts main-loop iterations as the optimized iterator walks the filter,
// R*S*ceil(C/tile_k), whatever its iterators; the fixed-channels iterators take tile_k/C filter positions an
// iteration, so they need ceil(R*S / (tile_k/C)) (what CUTLASS's plain kernel counts for them): the iterations
// past that would add only zeros (the filter iterator's predicate is off beyond R), 12x the stem's work.
template <class Op>
typename Op::UnderlyingKernel::Params cr_params80(typename Op::Arguments const& args) {
  using Kernel = typename Op::UnderlyingKernel;
  typename Kernel::Params params(args, nullptr);
  if constexpr (Kernel::kIteratorAlgorithm == cutlass::conv::IteratorAlgorithm::kFixedChannels) {
    params.gemm_k_iterations = cutlass::conv::implicit_gemm_k_iterations(
        Kernel::kConvolutionalOperator, Kernel::Mma::Shape::kK, args.problem_size, Kernel::kIteratorAlgorithm);
  }
  return params;
}

// Launch a 2.x kernel on arguments cr_check accepted. CUTLASS's own run() reads the launch error itself
// and returns only "internal error"; this returns the CUDA error.
template <class Op>
int cr_launch80(typename Op::Arguments const& args, cudaStream_t stream) {
  using Kernel = typename Op::UnderlyingKernel;
  constexpr int smem = int(sizeof(typename Kernel::SharedStorage));
  if (int st = cr_allow_shared_memory<Kernel>((const void*)cutlass::Kernel<Kernel>, smem)) return st;
  typename Kernel::Params params = cr_params80<Op>(args);
  typename Op::ThreadblockSwizzle swizzle;
  dim3 grid = swizzle.get_grid_shape(params.grid_tiled_shape);
  dim3 block(32 * Op::kWarpCount, 1, 1);
  cutlass::Kernel<Kernel><<<grid, block, smem, stream>>>(params);
  return cr_cuda_status(cudaGetLastError());
}

// The CUTLASS 2.x problem of a CrProblem.
inline cutlass::conv::Conv2dProblemSize cr_problem_size(const CrProblem& p) {
  return cutlass::conv::Conv2dProblemSize(p.N, p.H, p.W, p.C, p.K, p.R, p.S, p.P, p.Q, p.pad_h, p.pad_w,
                                          p.stride_h, p.stride_w, p.dil_h, p.dil_w,
                                          cutlass::conv::Mode::kCrossCorrelation, p.split_k, p.groups);
}

// x, w and y of a 2.x launch as NHWC / KRSC / NPQK tensor refs (null without operands: host-only checks).
template <typename Element>
struct CrRefs80 {
  using Layout = cutlass::layout::TensorNHWC;
  using Ref = cutlass::TensorRef<Element, Layout>;
  Ref x, w, y;

  CrRefs80(const CrProblem& p, const CrOperands* o)
      : x(pointer(o ? o->x : nullptr), Layout::packed({p.N, p.H, p.W, p.C})),
        w(pointer(o ? o->w : nullptr), Layout::packed({p.K, p.R, p.S, p.C / (p.groups > 0 ? p.groups : 1)})),
        y(pointer(o ? o->y : nullptr), Layout::packed({p.N, p.P, p.Q, p.K})) {}

  static Element* pointer(const void* p) { return static_cast<Element*>(const_cast<void*>(p)); }
};

// The CrKernel functions of a 2.x kernel wrapper W, which has the device-level Op, the Op's Arguments
// for a problem (W::arguments; operands may be null), whether it takes a residual (W::kResidual) and
// whether it writes split-K partial sums (W::kSplitK: then W::finish reduces them after the launch).
template <class W>
struct CrKernel80 {
  using Op = typename W::Op;

  static int can_implement(const CrProblem* p) {
    if (W::kSplitK ? p->split_k < 1 : p->split_k != 1) return int(cutlass::Status::kErrorNotSupported);
    if (W::kSplitK && p->K % 8) return int(cutlass::Status::kErrorMisalignedOperand);  // the reduction's vectors
    auto args = W::arguments(*p, nullptr);
    if (!W::kSplitK) return cr_check<Op>(args);
    if (int st = int(Op::can_implement(args))) return st;  // the partial sums' workspace is the binding's
    CrProblem whole = *p;
    whole.split_k = 1;
    const int total = cr_params80<Op>(W::arguments(whole, nullptr)).gemm_k_iterations;
    const int per_slice = cr_params80<Op>(args).gemm_k_iterations;
    return (p->split_k - 1) * per_slice < total ? 0 : int(cutlass::Status::kErrorInvalidProblem);  // no empty slice
  }

  // CTAs, main-loop iterations, shared memory and threads, from the kernel's Params and type.
  static int describe(const CrProblem* p, CrLaunchShape* shape) {
    auto params = cr_params80<Op>(W::arguments(*p, nullptr));
    shape->ctas = int64_t(params.grid_tiled_shape.m()) * params.grid_tiled_shape.n() * params.grid_tiled_shape.k();
    shape->mainloop_iterations = params.gemm_k_iterations;
    shape->shared_memory = int(sizeof(typename Op::UnderlyingKernel::SharedStorage));
    shape->threads = int(Op::UnderlyingKernel::kThreadCount);
    shape->parameter_bytes = int(sizeof(params));
    return 0;
  }

  static int accepts(const CrProblem* p, const CrOperands* o) {
    if (o->residual && !W::kResidual) return int(cutlass::Status::kErrorNotSupported);
    if (W::kSplitK && !o->workspace) return int(cutlass::Status::kErrorWorkspaceNull);
    return o->accepted ? 0 : can_implement(p);
  }

  static int prepare(const CrProblem* p, const CrOperands* o) {
    if (int st = accepts(p, o)) return st;
    (void)cr_params80<Op>(W::arguments(*p, o));
    return 0;
  }

  static int run(const CrProblem* p, const CrOperands* o) {
    if (int st = accepts(p, o)) return st;
    if (int st = cr_launch80<Op>(W::arguments(*p, o), o->stream)) return st;
    return W::finish(*p, o);
  }
};

// The registry entry NAME of 2.x wrapper W: {name, dtype, min_sm, alignment, kind, tile, functions}.
#define CR_KERNEL80_ENTRY(NAME, W, DTYPE, ALIGN, KIND, TM, TN, TK, STAGES)                                     \
  extern "C" const CrKernel NAME = {#NAME, DTYPE, 80, ALIGN, KIND, TM, TN, TK, STAGES,                         \
                                    &CrKernel80<W>::can_implement, &CrKernel80<W>::run,                        \
                                    &CrKernel80<W>::describe, &W::host_reference, &CrKernel80<W>::prepare};

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
