// CUTLASS 2.x fprop kernels with the plain epilogue, Sm80 tag, NHWC fp16/bf16, fp32 accumulation,
// for the convs the broadcast epilogue does not serve: the stem (fixed-channels iterator, C padded
// to 4) and grouped convs (single-group mode). The per-channel bias comes in as the source operand
// with stride 0 (CUTLASS example 17):
//   y = act(acc + beta * bias[k]),  beta = bias ? 1 : 0,  act = CrLeakyReLU.  No residual.
// Unlike the broadcast kernel, this kernel's Params count the main-loop iterations by the
// iterator algorithm (the stem: ceil(R*S*C / tile_k), not R*S*ceil(C / tile_k)).
#pragma once
#include "conv_common.cuh"
#include "cutlass/cutlass.h"
#include "cutlass/conv/conv2d_problem_size.h"
#include "cutlass/conv/device/implicit_gemm_convolution.h"
#include "cutlass/conv/kernel/default_conv2d_fprop.h"
#include "cutlass/conv/kernel/default_conv2d_group_fprop.h"
#include "cutlass/epilogue/thread/linear_combination_generic.h"

template <typename Element>
using CrBiasSourceEpilogue = cutlass::epilogue::thread::LinearCombinationGeneric<CrLeakyReLU, Element, 8, float, float>;

template <typename Element, int TbM, int TbN, int TbK, int WM, int WN, int WK, int Stages>
using CrStemKernel = typename cutlass::conv::kernel::DefaultConv2dFprop<
    Element, cutlass::layout::TensorNHWC, Element, cutlass::layout::TensorNHWC, Element, cutlass::layout::TensorNHWC,
    float, cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,
    cutlass::gemm::GemmShape<TbM, TbN, TbK>, cutlass::gemm::GemmShape<WM, WN, WK>, cutlass::gemm::GemmShape<16, 8, 16>,
    CrBiasSourceEpilogue<Element>, cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<4>, Stages,
    cutlass::arch::OpMultiplyAdd, cutlass::conv::IteratorAlgorithm::kFixedChannels,
    cutlass::conv::StrideSupport::kStrided, 4, 4>::Kernel;

template <typename Element, int TbM, int TbN, int TbK, int WM, int WN, int WK, int Stages>
using CrGroupKernel = typename cutlass::conv::kernel::DefaultConv2dGroupFprop<
    Element, cutlass::layout::TensorNHWC, Element, cutlass::layout::TensorNHWC, Element, cutlass::layout::TensorNHWC,
    float, cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,
    cutlass::gemm::GemmShape<TbM, TbN, TbK>, cutlass::gemm::GemmShape<WM, WN, WK>, cutlass::gemm::GemmShape<16, 8, 16>,
    CrBiasSourceEpilogue<Element>, cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<4>, Stages,
    cutlass::arch::OpMultiplyAdd, cutlass::conv::GroupMode::kSingleGroup, cutlass::conv::IteratorAlgorithm::kOptimized,
    cutlass::conv::StrideSupport::kStrided, 8, 8>::Kernel;

template <typename Element, class Kernel>
struct ConvBiasSource80 {
  using Layout = cutlass::layout::TensorNHWC;
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
    typename CrBiasSourceEpilogue<Element>::Params epilogue(1.f, has_bias ? 1.f : 0.f);
    epilogue.leaky_alpha = o ? o->leaky_alpha : 0.f;
    return typename Op::Arguments(ps, rx, rw, rc, ry, epilogue);
  }

  static int can_implement(const CrProblem* p) { return cr_check<Op>(arguments(*p, nullptr)); }

  static int describe(const CrProblem* p, CrLaunchShape* shape) {
    return cr_describe80<Op>(arguments(*p, nullptr), shape);
  }

  static int host_reference(const CrProblem* p, const CrOperands* o) {
    if (o->residual) return int(cutlass::Status::kErrorNotSupported);
    auto args = arguments(*p, o);
    return cr_host_reference80<Op, Element>(args, args.output_op.alpha, args.output_op.beta, nullptr,
                                            args.output_op.leaky_alpha);
  }

  static int run(const CrProblem* p, const CrOperands* o) {
    if (o->residual) return int(cutlass::Status::kErrorNotSupported);
    int st = can_implement(p);
    if (st != 0) return st;
    return cr_launch<Op>(arguments(*p, o), o->stream);
  }
};

#define CR_DEFINE_BIAS_SOURCE_KERNEL80(NAME, ELEMENT, DTYPE, KIND, KERNEL, ALIGN, TM, TN, TK, WM, WN, WK, STAGES) \
  using NAME##_t = ConvBiasSource80<ELEMENT, KERNEL<ELEMENT, TM, TN, TK, WM, WN, WK, STAGES>>;                  \
  extern "C" const CrKernel NAME = {#NAME, DTYPE, 80, ALIGN, KIND, TM, TN, TK, STAGES,                          \
                                    &NAME##_t::can_implement, &NAME##_t::run, &NAME##_t::describe,    \
                                    &NAME##_t::host_reference};
