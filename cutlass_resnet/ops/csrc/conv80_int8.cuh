// CUTLASS 2.x implicit-GEMM fprop, Sm80 tag, int8 NHWC in and out, int32 accumulation (mma.sync s8 with
// saturation), groups == 1 and C a multiple of 16 (or the stem's 4 channels). The epilogue is the int8 op's
// (cutlass_resnet/ops/int8.py):
//   y = saturate(round(act(float(acc) * alpha[k] + beta[k] + float(residual) * gamma))),
// each step one fp32 operation rounded to nearest even, none fused. alpha[k] and beta[k] reach it as ONE broadcast
// vector of (alpha, beta) pairs (CrScaleShift): the broadcast epilogue brings a single per-channel vector.
#pragma once
#include <cmath>
#include <cstdint>

#include "conv_common.cuh"
#include "cutlass/cutlass.h"
#include "cutlass/array.h"
#include "cutlass/conv/conv2d_problem_size.h"
#include "cutlass/conv/device/implicit_gemm_convolution.h"
#include "cutlass/conv/kernel/default_conv2d_fprop_with_broadcast.h"

// alpha[k] and beta[k] of the int8 epilogue side by side: the broadcast vector's element (the binding passes them as
// a (K, 2) float32 tensor).
struct CrScaleShift {
  float alpha, beta;
  CrScaleShift() = default;
  CUTLASS_HOST_DEVICE explicit CrScaleShift(int zero) : alpha(float(zero)), beta(float(zero)) {}
};

// One output of the int8 epilogue, on the host and the device alike.
struct CrInt8Step {
  CUTLASS_HOST_DEVICE static float mul(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
  }

  CUTLASS_HOST_DEVICE static float add(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
  }

  // z = float(acc), acc rounded to fp32; residual added only where `has_residual`.
  CUTLASS_HOST_DEVICE static int8_t requantize(float z, float alpha, float beta, bool has_residual, float residual,
                                               float gamma, bool relu) {
    z = add(mul(z, alpha), beta);
    if (has_residual) z = add(z, mul(residual, gamma));
    if (relu && !(z > 0.f)) z = 0.f;
    z = z < -128.f ? -128.f : z > 127.f ? 127.f : z;  // clamped before rounding: the same integer, never overflows
#ifdef __CUDA_ARCH__
    return int8_t(__float2int_rn(z));
#else
    return int8_t(std::nearbyint(z));  // the default rounding mode: to nearest even
#endif
  }

  CUTLASS_HOST_DEVICE static int8_t apply(int32_t acc, CrScaleShift v, bool has_residual, int8_t residual, float gamma,
                                          bool relu) {
#ifdef __CUDA_ARCH__
    const float z = __int2float_rn(acc);
#else
    const float z = float(acc);
#endif
    return requantize(z, v.alpha, v.beta, has_residual, float(residual), gamma, relu);
  }
};

// The thread-level output functor EpilogueWithBroadcast calls (the concept of LinearCombinationBiasElementwise):
// Z = the int8 output, no T, the broadcast vector V = (alpha, beta) per column, the source = the residual.
template <int N>
struct CrInt8Epilogue {
  using ElementOutput = int8_t;
  using ElementD = int8_t;
  using ElementC = int8_t;
  using ElementAccumulator = int32_t;
  using ElementCompute = CrScaleShift;
  using ElementZ = int8_t;
  using ElementT = int8_t;
  using ElementVector = CrScaleShift;
  static int const kElementsPerAccess = N;
  static int const kCount = N;
  static bool const kIsSingleSource = true;
  static bool const kStoreZ = true;
  static bool const kStoreT = false;
  static bool const kIsHeavy = false;

  using FragmentAccumulator = cutlass::Array<int32_t, N>;
  using FragmentCompute = cutlass::Array<CrScaleShift, N>;
  using FragmentC = cutlass::Array<int8_t, N>;
  using FragmentZ = cutlass::Array<int8_t, N>;
  using FragmentT = cutlass::Array<int8_t, N>;

  struct Params {
    float gamma = 0.f;
    int residual = 0;  // the source is the residual
    int relu = 1;
  };

  Params params;

  CUTLASS_HOST_DEVICE explicit CrInt8Epilogue(Params const& p) : params(p) {}

  CUTLASS_HOST_DEVICE bool is_source_needed() const { return params.residual != 0; }

  CUTLASS_HOST_DEVICE void set_k_partition(int, int) {}

  CUTLASS_HOST_DEVICE void operator()(FragmentZ& z, FragmentT&, FragmentAccumulator const& acc, FragmentC const& res,
                                      FragmentCompute const& v) const {
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) z[i] = CrInt8Step::apply(acc[i], v[i], true, res[i], params.gamma, params.relu != 0);
  }

  CUTLASS_HOST_DEVICE void operator()(FragmentZ& z, FragmentT&, FragmentAccumulator const& acc,
                                      FragmentCompute const& v) const {
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) z[i] = CrInt8Step::apply(acc[i], v[i], false, 0, params.gamma, params.relu != 0);
  }
};

// Algorithm and Align: kOptimized with 16-byte loads of x and w (C a multiple of 16), or the stem's kFixedChannels
// with C == Align == 4 (4-byte loads). OutAlign: elements per store of y and load of the residual (16; 8 where the
// tile's 64 columns leave too few rows for 16).
template <int TbM, int TbN, int TbK, int WM, int WN, int WK, int Stages,
          cutlass::conv::IteratorAlgorithm Algorithm = cutlass::conv::IteratorAlgorithm::kOptimized, int Align = 16,
          int OutAlign = 16>
struct ConvInt8_80 {
  using Layout = cutlass::layout::TensorNHWC;
  using EpilogueOp = CrInt8Epilogue<OutAlign>;
  using Kernel = typename cutlass::conv::kernel::DefaultConv2dFpropWithBroadcast<
      int8_t, Layout, int8_t, Layout, int8_t, Layout, int32_t,
      cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,
      cutlass::gemm::GemmShape<TbM, TbN, TbK>,
      cutlass::gemm::GemmShape<WM, WN, WK>,
      cutlass::gemm::GemmShape<16, 8, 32>,
      EpilogueOp,
      cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<4>,
      Stages,
      cutlass::arch::OpMultiplyAddSaturate,
      Algorithm,
      cutlass::conv::StrideSupport::kStrided,
      Align, Align>::Kernel;
  using Op = cutlass::conv::device::ImplicitGemmConvolution<Kernel>;
  static constexpr bool kResidual = true, kSplitK = false;
  static int finish(const CrProblem&, const CrOperands*) { return 0; }

  static typename Op::Arguments arguments(const CrProblem& p, const CrOperands* o) {
    CrRefs80<int8_t> refs(p, o);
    const bool residual = o && o->residual;
    auto r = residual ? typename CrRefs80<int8_t>::Ref(refs.pointer(o->residual), refs.y.layout()) : refs.y;
    typename EpilogueOp::Params epilogue;
    epilogue.gamma = o ? o->gamma : 0.f;
    epilogue.residual = residual;
    epilogue.relu = !o || o->leaky_alpha == 0.f;
    return typename Op::Arguments(cr_problem_size(p), refs.x, refs.w, r, refs.y, epilogue,
                                  cutlass::conv::SplitKMode::kSerial, o ? const_cast<void*>(o->bias) : nullptr,
                                  nullptr, 0, p.K);
  }

  // CUTLASS's host reference (int32 sums) on the arguments a launch would get, then the kernel's own epilogue step
  // per output. The scale-shift vector is required: without it there is no int8 epilogue.
  static int host_reference(const CrProblem* p, const CrOperands* o) {
    if (!o->bias || o->leaky_alpha != 0.f && o->leaky_alpha != 1.f) return int(cutlass::Status::kErrorInvalidProblem);
    auto args = arguments(*p, o);
    auto const& ps = args.problem_size;
    std::vector<int32_t> acc(size_t(ps.N) * ps.P * ps.Q * ps.K);
    cutlass::TensorRef<int32_t, Layout> acc_ref(acc.data(), args.ref_D.layout());
    cutlass::reference::host::Conv2dFprop<int8_t, Layout, int8_t, Layout, int32_t, Layout, int32_t, int32_t>(
        ps, args.ref_A, args.ref_B, acc_ref, acc_ref, 1, 0);
    const auto* v = static_cast<const CrScaleShift*>(o->bias);
    const auto& e = args.output_op;
    for (int n = 0; n < ps.N; ++n)
      for (int i = 0; i < ps.P; ++i)
        for (int j = 0; j < ps.Q; ++j)
          for (int k = 0; k < ps.K; ++k) {
            cutlass::Coord<4> at = cutlass::make_Coord(n, i, j, k);
            const int8_t res = e.residual ? args.ref_C.at(at) : int8_t(0);
            args.ref_D.at(at) = CrInt8Step::apply(acc_ref.at(at), v[k], e.residual != 0, res, e.gamma, e.relu != 0);
          }
    return 0;
  }
};

#define CR_DEFINE_INT8_KERNEL80(NAME, TM, TN, TK, WM, WN, WK, STAGES) \
  using NAME##_t = ConvInt8_80<TM, TN, TK, WM, WN, WK, STAGES>;       \
  CR_KERNEL80_ENTRY(NAME, NAME##_t, CR_INT8, 16, CR_REGULAR, TM, TN, TK, STAGES)

#define CR_DEFINE_INT8_STEM_KERNEL80(NAME, TM, TN, TK, WM, WN, WK, STAGES)                                       \
  using NAME##_t = ConvInt8_80<TM, TN, TK, WM, WN, WK, STAGES, cutlass::conv::IteratorAlgorithm::kFixedChannels, 4, 8>; \
  CR_KERNEL80_ENTRY(NAME, NAME##_t, CR_INT8, 4, CR_STEM, TM, TN, TK, STAGES)
