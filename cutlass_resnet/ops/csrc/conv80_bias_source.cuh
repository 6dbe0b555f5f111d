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
  using Op = cutlass::conv::device::ImplicitGemmConvolution<Kernel>;
  static constexpr bool kResidual = false, kSplitK = false;
  static int finish(const CrProblem&, const CrOperands*) { return 0; }

  static typename Op::Arguments arguments(const CrProblem& p, const CrOperands* o) {
    CrRefs80<Element> refs(p, o);
    bool has_bias = o && o->bias;
    auto c = has_bias ? typename CrRefs80<Element>::Ref(refs.pointer(o->bias), cutlass::layout::TensorNHWC::Stride(0))
                      : refs.y;
    typename CrBiasSourceEpilogue<Element>::Params epilogue(1.f, has_bias ? 1.f : 0.f);
    epilogue.leaky_alpha = o ? o->leaky_alpha : 0.f;
    return typename Op::Arguments(cr_problem_size(p), refs.x, refs.w, c, refs.y, epilogue);
  }

  static int host_reference(const CrProblem* p, const CrOperands* o) {
    if (o->residual) return int(cutlass::Status::kErrorNotSupported);
    auto args = arguments(*p, o);
    return cr_host_reference80<Op, Element>(args, args.output_op.alpha, args.output_op.beta, nullptr,
                                            args.output_op.leaky_alpha);
  }
};

#define CR_DEFINE_BIAS_SOURCE_KERNEL80(NAME, ELEMENT, DTYPE, KIND, KERNEL, ALIGN, TM, TN, TK, WM, WN, WK, STAGES) \
  using NAME##_t = ConvBiasSource80<ELEMENT, KERNEL<ELEMENT, TM, TN, TK, WM, WN, WK, STAGES>>;                  \
  CR_KERNEL80_ENTRY(NAME, NAME##_t, DTYPE, ALIGN, KIND, TM, TN, TK, STAGES)
