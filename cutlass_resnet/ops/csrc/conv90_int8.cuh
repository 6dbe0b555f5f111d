// CUTLASS 3.x SM90 implicit-GEMM fprop for Hopper (sm_90a), int8 NHWC in and out, int32 accumulation (TMA im2col
// loads, wgmma), with the int8 op's epilogue (cutlass_resnet/ops/int8.py) as one EVT node:
//   y = saturate(round(act(float(acc) * alpha[k] + beta[k] + float(residual) * gamma))),
// each step the same CrInt8Step code as the Sm80 int8 kernels. alpha and beta are two row broadcasts (the binding
// passes them as a (2, K) float32 tensor); the residual is the source, loaded only where there is one.
#pragma once
#include "conv90.cuh"  // first: its driver wrappers must precede CUTLASS's TMA headers
#include "conv80_int8.cuh"

#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"

// The epilogue's compute: CUTLASS's EVT converts the accumulator (int32, rounded to nearest), alpha, beta and the
// residual (int8, exact) to fp32 and calls this; it returns the int8 output.
template <class T>
struct CrInt8Requantize {
  struct Arguments {
    float gamma = 0.f;
    int residual = 0;
    int relu = 1;
  };
};

template <int N>
struct CrInt8Requantize<cutlass::Array<float, N>> {
  using Arguments = typename CrInt8Requantize<float>::Arguments;

  CUTLASS_HOST_DEVICE cutlass::Array<int8_t, N> operator()(
      cutlass::Array<float, N> const& acc, cutlass::Array<float, N> const& alpha, cutlass::Array<float, N> const& beta,
      cutlass::Array<float, N> const& residual, Arguments const& a) const {
    cutlass::Array<int8_t, N> y;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) {
      y[i] = CrInt8Step::requantize(acc[i], alpha[i], beta[i], a.residual != 0, residual[i], a.gamma, a.relu != 0);
    }
    return y;
  }
};

// The source (the residual) as SrcFetch fetches it, but loaded only where the arguments say there is one: without,
// its registers are never read.
struct CrResidualFetch : cutlass::epilogue::fusion::Sm90SrcFetch<int8_t> {
  struct Arguments {
    int load = 0;
  };
  using Params = Arguments;
  using SharedStorage = typename cutlass::epilogue::fusion::Sm90SrcFetch<int8_t>::SharedStorage;

  template <class ProblemShape>
  static constexpr Params to_underlying_arguments(ProblemShape const&, Arguments const& args, void*) {
    return args;
  }
  template <class ProblemShape>
  static bool can_implement(ProblemShape const&, Arguments const&) {
    return true;
  }
  template <class ProblemShape>
  static size_t get_workspace_size(ProblemShape const&, Arguments const&) {
    return 0;
  }
  template <class ProblemShape>
  static cutlass::Status initialize_workspace(ProblemShape const&, Arguments const&, void*, cudaStream_t,
                                              cutlass::CudaHostAdapter* = nullptr) {
    return cutlass::Status::kSuccess;
  }

  CUTLASS_HOST_DEVICE CrResidualFetch() {}
  CUTLASS_HOST_DEVICE CrResidualFetch(Params const& params, SharedStorage const& storage)
      : cutlass::epilogue::fusion::Sm90SrcFetch<int8_t>({}, storage), load(params.load) {}

  int load = 0;

  CUTLASS_DEVICE bool is_producer_load_needed() const { return load != 0; }
  CUTLASS_DEVICE bool is_C_load_needed() const { return load != 0; }
};

template <class TileShape>
struct ConvInt8_90 {
  template <class Vector>
  using Row = cutlass::epilogue::fusion::Sm90RowBroadcast<0, TileShape, Vector, float>;
  using Requantize =
      cutlass::epilogue::fusion::Sm90Compute<CrInt8Requantize, int8_t, float, cutlass::FloatRoundStyle::round_to_nearest>;
  using Fusion = cutlass::epilogue::fusion::Sm90EVT<Requantize, cutlass::epilogue::fusion::Sm90AccFetch, Row<float>,
                                                    Row<float>, CrResidualFetch>;
  using F = Sm90Fprop<int8_t, TileShape, Fusion, int8_t, int8_t, 16, 0, int32_t>;

  static typename F::Op::Arguments arguments(const CrProblem& p, const CrOperands* o, int sm_count) {
    auto args = F::arguments(p, o, sm_count);
    const bool residual = o && o->residual;
    const float* alpha = o ? (const float*)o->bias : nullptr;
    const float* beta = alpha ? alpha + p.K : nullptr;
    args.epilogue.thread = {{}, {alpha}, {beta}, {int(residual)}, {o ? o->gamma : 0.f, int(residual),
                                                                   int(!o || o->leaky_alpha == 0.f)}};
    return args;
  }

  // CUTLASS's int32 host reference on the very pointers and strides a launch gets, then the EVT's step per output
  // from the EVT's own arguments; the source is read only where the arguments load it.
  static int host_reference(const CrProblem* p, const CrOperands* o) {
    if (int st = o->accepted ? 0 : CrKernel90<ConvInt8_90>::can_implement(p)) return st;
    if (!o->bias || (o->leaky_alpha != 0.f && o->leaky_alpha != 1.f)) return int(cutlass::Status::kErrorInvalidProblem);
    auto args = arguments(*p, o, 1);
    const std::vector<int32_t> acc = F::host_accumulate(*p, args);
    const int64_t size = int64_t(acc.size());
    const auto& t = args.epilogue.thread;
    const float* alpha = cute::get<1>(t).ptr_row;
    const float* beta = cute::get<2>(t).ptr_row;
    const bool load = cute::get<3>(t).load != 0;
    const auto& f = cute::get<4>(t);
    const int8_t* source = args.epilogue.ptr_C;
    int8_t* y = const_cast<int8_t*>(args.epilogue.ptr_D);
    for (int64_t i = 0; i < size; ++i) {
      const int k = int(i % p->K);
      const float residual = load ? float(source[i]) : 0.f;
      y[i] = CrInt8Step::requantize(float(acc[size_t(i)]), alpha[k], beta[k], f.residual != 0, residual, f.gamma,
                                    f.relu != 0);
    }
    return 0;
  }
};

#define CR_DEFINE_INT8_KERNEL90(NAME, TM, TN, TK)            \
  using NAME##_t = ConvInt8_90<CR_SM90_TILE(TM, TN, TK)>;    \
  CR_KERNEL90_ENTRY(NAME, NAME##_t, CR_INT8, 16, TM, TN, TK)
