// CUTLASS 2.x grouped implicit-GEMM fprop (single-group mode: each threadblock inside one group),
// Sm80 tag, NHWC fp16/bf16, fp32 accumulation. No broadcast epilogue exists for grouped convs, so
// the per-channel bias comes in as the source operand with stride 0 (CUTLASS example 17):
//   y = LeakyReLU(acc + beta * bias[k]),  beta = bias ? 1 : 0.  No residual.
#pragma once
#include "conv_common.cuh"
#include "cutlass/cutlass.h"
#include "cutlass/conv/conv2d_problem_size.h"
#include "cutlass/conv/device/implicit_gemm_convolution.h"
#include "cutlass/conv/kernel/default_conv2d_group_fprop.h"
#include "cutlass/epilogue/thread/linear_combination_leaky_relu.h"

template <typename Element, int TbM, int TbN, int TbK, int WM, int WN, int WK, int Stages>
struct ConvGroup80 {
  using Layout = cutlass::layout::TensorNHWC;
  static constexpr int kAlignment = 8;
  using EpilogueOp = cutlass::epilogue::thread::LinearCombinationLeakyRelu<Element, kAlignment, float, float>;
  using Kernel = typename cutlass::conv::kernel::DefaultConv2dGroupFprop<
      Element, Layout, Element, Layout, Element, Layout, float,
      cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,
      cutlass::gemm::GemmShape<TbM, TbN, TbK>,
      cutlass::gemm::GemmShape<WM, WN, WK>,
      cutlass::gemm::GemmShape<16, 8, 16>,
      EpilogueOp,
      cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<4>,
      Stages,
      cutlass::arch::OpMultiplyAdd,
      cutlass::conv::GroupMode::kSingleGroup,
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
    bool has_bias = o && o->bias;
    Ref rx(x, Layout::packed({p.N, p.H, p.W, p.C}));
    Ref rw(w, Layout::packed({p.K, p.R, p.S, p.C / (p.groups > 0 ? p.groups : 1)}));
    Ref ry(y, Layout::packed({p.N, p.P, p.Q, p.K}));
    Ref rc = has_bias ? Ref((Element*)o->bias, Layout::Stride(0)) : ry;
    typename EpilogueOp::Params epilogue(1.f, has_bias ? 1.f : 0.f, o ? o->leaky_alpha : 0.f);
    return typename Op::Arguments(ps, rx, rw, rc, ry, epilogue);
  }

  static int can_implement(const CrProblem* p) {
    return cr_check<Op>(arguments(*p, nullptr));
  }

  static int run(const CrProblem* p, const CrOperands* o) {
    if (o->residual) return int(cutlass::Status::kErrorNotSupported);
    int st = can_implement(p);
    if (st != 0) return st;
    return cr_launch<Op>(arguments(*p, o), o->stream);
  }
};

#define CR_DEFINE_GROUP_KERNEL80(NAME, ELEMENT, DTYPE, TM, TN, TK, WM, WN, WK, STAGES) \
  using NAME##_t = ConvGroup80<ELEMENT, TM, TN, TK, WM, WN, WK, STAGES>;               \
  extern "C" const CrKernel NAME = {#NAME, DTYPE, 80, 8, CR_GROUPED, TM, TN, TK, STAGES, \
                                    &NAME##_t::can_implement, &NAME##_t::run};
