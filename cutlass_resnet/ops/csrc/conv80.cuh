// CUTLASS 2.x implicit-GEMM fprop, Sm80 tag (cp.async + mma.sync: runs on sm_80 and newer), NHWC,
// fp16 or bf16 in and out, fp32 accumulation, epilogue with broadcast:
//   y = act(acc + beta * residual + bias[k]),  beta = residual ? 1 : 0,  act = CrLeakyReLU,
// rounded once to the output type. For groups == 1 and C a multiple of 8.
#pragma once
#include "conv_common.cuh"
#include "cutlass/cutlass.h"
#include "cutlass/conv/conv2d_problem_size.h"
#include "cutlass/conv/device/implicit_gemm_convolution.h"
#include "cutlass/conv/kernel/default_conv2d_fprop_with_broadcast.h"
#include "cutlass/epilogue/thread/linear_combination_bias_elementwise.h"

template <typename Element, int TbM, int TbN, int TbK, int WM, int WN, int WK, int Stages>
struct Conv80 {
  using Layout = cutlass::layout::TensorNHWC;
  static constexpr int kAlignment = 8;  // 128-bit loads of x and w, stores of y, loads of residual and bias
  using EpilogueOp = cutlass::epilogue::thread::LinearCombinationBiasElementwise<
      Element,  // residual
      float,    // accumulator
      float,    // compute
      Element,  // y
      Element,  // pre-activation (not stored)
      kAlignment,
      CrLeakyReLU<float>,
      cutlass::plus<float>,
      false,     // do not store the pre-activation
      Element>;  // bias
  using Kernel = typename cutlass::conv::kernel::DefaultConv2dFpropWithBroadcast<
      Element, Layout, Element, Layout, Element, Layout, float,
      cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,
      cutlass::gemm::GemmShape<TbM, TbN, TbK>,
      cutlass::gemm::GemmShape<WM, WN, WK>,
      cutlass::gemm::GemmShape<16, 8, 16>,
      EpilogueOp,
      cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<4>,
      Stages,
      cutlass::arch::OpMultiplyAdd,
      cutlass::conv::IteratorAlgorithm::kOptimized,
      cutlass::conv::StrideSupport::kStrided,
      kAlignment, kAlignment>::Kernel;
  using Op = cutlass::conv::device::ImplicitGemmConvolution<Kernel>;
  static constexpr bool kResidual = true, kSplitK = false;
  static int finish(const CrProblem&, const CrOperands*) { return 0; }

  static typename Op::Arguments arguments(const CrProblem& p, const CrOperands* o) {
    CrRefs80<Element> refs(p, o);
    auto r = (o && o->residual) ? typename CrRefs80<Element>::Ref(refs.pointer(o->residual), refs.y.layout()) : refs.y;
    float beta = (o && o->residual) ? 1.f : 0.f;
    typename EpilogueOp::Params epilogue(1.f, beta, {o ? o->leaky_alpha : 0.f});
    return typename Op::Arguments(cr_problem_size(p), refs.x, refs.w, r, refs.y, epilogue,
                                  cutlass::conv::SplitKMode::kSerial, o ? const_cast<void*>(o->bias) : nullptr,
                                  nullptr, 0, p.K);
  }

  static int host_reference(const CrProblem* p, const CrOperands* o) {
    auto args = arguments(*p, o);
    auto const& e = args.output_op;
    return cr_host_reference80<Op, Element>(args, e.alpha, e.beta, (const Element*)args.ptr_Vector,
                                            e.elementwise.leaky_alpha);
  }
};

// One translation unit per instantiation: NAME is the kernel's registry entry.
#define CR_DEFINE_KERNEL80(NAME, ELEMENT, DTYPE, TM, TN, TK, WM, WN, WK, STAGES) \
  using NAME##_t = Conv80<ELEMENT, TM, TN, TK, WM, WN, WK, STAGES>;              \
  CR_KERNEL80_ENTRY(NAME, NAME##_t, DTYPE, 8, CR_REGULAR, TM, TN, TK, STAGES)
