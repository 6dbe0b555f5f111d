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
  using Ref = cutlass::TensorRef<Element, Layout>;

  static typename Op::Arguments arguments(const CrProblem& p, const CrOperands* o) {
    cutlass::conv::Conv2dProblemSize ps = cr_problem_size(p);
    Element* x = o ? (Element*)o->x : nullptr;
    Element* w = o ? (Element*)o->w : nullptr;
    Element* y = o ? (Element*)o->y : nullptr;
    Element* r = (o && o->residual) ? (Element*)o->residual : y;
    Ref rx(x, Layout::packed({p.N, p.H, p.W, p.C}));
    Ref rw(w, Layout::packed({p.K, p.R, p.S, p.C}));
    Ref ry(y, Layout::packed({p.N, p.P, p.Q, p.K}));
    Ref rr(r, Layout::packed({p.N, p.P, p.Q, p.K}));
    float beta = (o && o->residual) ? 1.f : 0.f;
    typename EpilogueOp::Params epilogue(1.f, beta, {o ? o->leaky_alpha : 0.f});
    return typename Op::Arguments(ps, rx, rw, rr, ry, epilogue, cutlass::conv::SplitKMode::kSerial,
                                  o ? const_cast<void*>(o->bias) : nullptr, nullptr, 0, p.K);
  }

  static int can_implement(const CrProblem* p) { return cr_check<Op>(arguments(*p, nullptr)); }

  static int describe(const CrProblem* p, CrLaunchShape* shape) {
    return cr_describe80<Op>(arguments(*p, nullptr), shape);
  }

  static int host_reference(const CrProblem* p, const CrOperands* o) {
    auto args = arguments(*p, o);
    auto const& e = args.output_op;
    return cr_host_reference80<Op, Element>(args, e.alpha, e.beta, (const Element*)args.ptr_Vector,
                                            e.elementwise.leaky_alpha);
  }

  static int run(const CrProblem* p, const CrOperands* o) {
    int st = can_implement(p);
    if (st != 0) return st;
    return cr_launch<Op>(arguments(*p, o), o->stream);
  }
};

// One translation unit per instantiation: NAME is the kernel's registry entry.
#define CR_DEFINE_KERNEL80(NAME, ELEMENT, DTYPE, TM, TN, TK, WM, WN, WK, STAGES)               \
  using NAME##_t = Conv80<ELEMENT, TM, TN, TK, WM, WN, WK, STAGES>;                            \
  extern "C" const CrKernel NAME = {#NAME, DTYPE, 80, 8, CR_REGULAR, TM, TN, TK, STAGES,       \
                                    &NAME##_t::can_implement, &NAME##_t::run, &NAME##_t::describe,    \
                                    &NAME##_t::host_reference};
