// CUTLASS 2.x implicit-GEMM fprop with parallel split-K, Sm80 tag, NHWC fp16/bf16 in: one launch whose
// grid z splits the GEMM K (R*S*C) into split_k slices, each writing its fp32 partial sums into its own
// slice of the workspace (SplitKMode::kParallel, as CUTLASS's conv testbed runs it), then the reduction of
// splitk.cuh applies bias, residual and the activation and rounds once. For convs whose grid of output
// tiles alone would leave most SMs idle (small batches, late stages).
#pragma once
#include "conv_common.cuh"
#include "cutlass/conv/device/implicit_gemm_convolution.h"
#include "cutlass/conv/kernel/default_conv2d_fprop.h"
#include "cutlass/epilogue/thread/linear_combination.h"
#include "splitk.cuh"

template <typename Element, int TbM, int TbN, int TbK, int WM, int WN, int WK, int Stages>
struct Conv80SplitK {
  using Layout = cutlass::layout::TensorNHWC;
  using EpilogueOp = cutlass::epilogue::thread::LinearCombination<float, 4, float, float>;  // partial = acc
  using Kernel = typename cutlass::conv::kernel::DefaultConv2dFprop<
      Element, Layout, Element, Layout, float, Layout, float, cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,
      cutlass::gemm::GemmShape<TbM, TbN, TbK>, cutlass::gemm::GemmShape<WM, WN, WK>,
      cutlass::gemm::GemmShape<16, 8, 16>, EpilogueOp, cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<4>,
      Stages, cutlass::arch::OpMultiplyAdd, cutlass::conv::IteratorAlgorithm::kOptimized,
      cutlass::conv::StrideSupport::kStrided, 8, 8>::Kernel;
  using Op = cutlass::conv::device::ImplicitGemmConvolution<Kernel>;
  static constexpr bool kResidual = true, kSplitK = true;

  static cutlass::TensorRef<float, Layout> partials(const CrProblem& p, const CrOperands* o) {
    return {o ? o->workspace : nullptr, Layout::packed({p.N, p.P, p.Q, p.K})};
  }

  static typename Op::Arguments arguments(const CrProblem& p, const CrOperands* o) {
    CrRefs80<Element> refs(p, o);
    auto ws = partials(p, o);
    return typename Op::Arguments(cr_problem_size(p), refs.x, refs.w, ws, ws, typename EpilogueOp::Params(1.f, 0.f),
                                  cutlass::conv::SplitKMode::kParallel);
  }

  static int64_t output_size(const CrProblem& p) { return int64_t(p.N) * p.P * p.Q * p.K; }

  static int finish(const CrProblem& p, const CrOperands* o) {
    return cr_splitk_reduce<Element>(o->workspace, p.split_k, output_size(p), p.K, (const Element*)o->bias,
                                     (const Element*)o->residual, (Element*)o->y, o->leaky_alpha, o->stream);
  }

  // CUTLASS's host reference of the whole conv in fp32 as the first slice (the others zero: the slices' sum
  // is the conv, whatever the split), then the reduction on the host.
  static int host_reference(const CrProblem* p, const CrOperands* o) {
    auto args = arguments(*p, o);
    CrProblem whole = *p;
    whole.split_k = 1;
    auto ps = cr_problem_size(whole);
    for (int64_t i = 0; i < p->split_k * output_size(*p); ++i) o->workspace[i] = 0.f;
    cutlass::reference::host::Conv2dFprop<Element, Layout, Element, Layout, float, Layout, float, float, float>(
        ps, args.ref_A, args.ref_B, args.ref_C, args.ref_D, 1.f, 0.f);
    cr_splitk_reduce_host<Element>(o->workspace, p->split_k, output_size(*p), p->K, (const Element*)o->bias,
                                   (const Element*)o->residual, (Element*)o->y, o->leaky_alpha);
    return 0;
  }
};

#define CR_DEFINE_SPLITK_KERNEL80(NAME, ELEMENT, DTYPE, TM, TN, TK, WM, WN, WK, STAGES) \
  using NAME##_t = Conv80SplitK<ELEMENT, TM, TN, TK, WM, WN, WK, STAGES>;              \
  CR_KERNEL80_ENTRY(NAME, NAME##_t, DTYPE, 8, CR_SPLITK, TM, TN, TK, STAGES)
