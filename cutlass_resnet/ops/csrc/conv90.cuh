// CUTLASS 3.x SM90 implicit-GEMM fprop for Hopper (compiled for sm_90a only): TMA im2col loads,
// wgmma, warp-specialized, with the fused EVT epilogue LinCombPerColBiasEltAct<CrLeakyReLU>:
//   y = act(acc + beta * residual + bias[k]),  beta = residual ? 1 : 0,
// leaky_alpha 0 for ReLU, 1 for none; fp32 accumulation, one rounding.
#pragma once
#include "cr_driver.cuh"  // first: CUTLASS's TMA headers must see its encoders
#include "conv_common.cuh"
#include <cstring>
#include <mutex>
#include "cutlass/cutlass.h"
#include "cute/tensor.hpp"
#include "cutlass/numeric_types.h"
#include "cutlass/kernel_hardware_info.hpp"
#include "cutlass/conv/convnd_problem_shape.hpp"
#include "cutlass/conv/device/conv_universal_adapter.hpp"
#include "cutlass/conv/kernel/conv_universal.hpp"
#include "cutlass/conv/collective/collective_builder.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"

// A launch's problem, operand addresses, activation and device: what its TMA descriptors depend on.
struct CrParamsKey {
  CrProblem problem;
  const void* operands[5];
  float leaky_alpha;
  int device;

  CrParamsKey() { std::memset(this, 0, sizeof(*this)); }  // compared bytewise
  CrParamsKey(const CrProblem& p, const CrOperands* o, int device_index) : CrParamsKey() {
    problem = p;
    if (o) {
      operands[0] = o->x, operands[1] = o->w, operands[2] = o->bias, operands[3] = o->residual, operands[4] = o->y;
      leaky_alpha = o->leaky_alpha;
    }
    device = device_index;
  }
  bool operator==(const CrParamsKey& other) const { return std::memcmp(this, &other, sizeof(*this)) == 0; }
};

// The last kEntries Params made, for launches that repeat (the same layer on the same buffers).
template <class Params, int kEntries = 64>
class CrParamsCache {
 public:
  bool find(const CrParamsKey& key, Params* out) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (int i = 0; i < used_; ++i) {
      if (keys_[i] == key) {
        *out = params_[i];
        return true;
      }
    }
    return false;
  }

  void insert(const CrParamsKey& key, const Params& params) {
    std::lock_guard<std::mutex> lock(mutex_);
    keys_[next_] = key;
    params_[next_] = params;
    next_ = (next_ + 1) % kEntries;
    used_ = used_ < kEntries ? used_ + 1 : kEntries;
  }

 private:
  std::mutex mutex_;
  CrParamsKey keys_[kEntries];
  Params params_[kEntries];
  int next_ = 0, used_ = 0;
};

// SMs of a device, asked once per device.
inline int cr_sm_count(int device) {
  static std::atomic<int> counts[64];
  if (device < 0 || device >= 64) return cutlass::KernelHardwareInfo::query_device_multiprocessor_count(device);
  int n = counts[device].load();
  if (n == 0) counts[device].store(n = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(device));
  return n;
}

template <typename Element, class TileShape, class ClusterShape>
struct Conv90 {
  using Layout = cutlass::layout::TensorNHWC;
  static constexpr int kAlignment = 8;  // 16-byte TMA: C and K multiples of 8
  using Fusion = cutlass::epilogue::fusion::LinCombPerColBiasEltAct<
      CrLeakyReLU, Element /*out*/, float /*compute*/, Element /*bias*/,
      Element /*source*/, float /*scalar*/>;
  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
      TileShape, ClusterShape, cutlass::epilogue::collective::EpilogueTileAuto,
      float, float,
      Element, Layout, kAlignment,
      Element, Layout, kAlignment,
      cutlass::epilogue::TmaWarpSpecialized, Fusion>::CollectiveOp;
  using CollectiveMainloop = typename cutlass::conv::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
      cutlass::conv::Operator::kFprop,
      Element, Layout, kAlignment,
      Element, Layout, kAlignment,
      float,
      TileShape, ClusterShape,
      cutlass::conv::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      cutlass::conv::KernelImplicitTmaWarpSpecializedSm90>::CollectiveOp;
  using ProblemShape = cutlass::conv::ConvProblemShape<cutlass::conv::Operator::kFprop, 2>;
  using Kernel = cutlass::conv::kernel::ConvUniversal<ProblemShape, CollectiveMainloop, CollectiveEpilogue>;
  using Op = cutlass::conv::device::ConvUniversalAdapter<Kernel>;
  using Params = typename Kernel::Params;
  using StrideC = typename Kernel::StrideC;
  using StrideD = typename Kernel::StrideD;

  static ProblemShape problem_shape(const CrProblem& p) {
    return ProblemShape(cutlass::conv::Mode::kCrossCorrelation, {p.N, p.H, p.W, p.C}, {p.K, p.R, p.S, p.C},
                        {p.pad_h, p.pad_w}, {p.pad_h, p.pad_w}, {p.stride_h, p.stride_w}, {p.dil_h, p.dil_w}, 1);
  }

  // No device query here: can_implement must work on a host without a GPU.
  static typename Op::Arguments arguments(const CrProblem& p, const CrOperands* o, int sm_count) {
    ProblemShape ps = problem_shape(p);
    StrideC sC{};
    StrideD sD{};
    cute::for_each(cute::make_seq<cute::rank<0>(StrideC{})>{}, [&](auto i) {
      cute::get<0, i>(sC) = ps.stride_C[ProblemShape::RankT - 2 - i];
      cute::get<0, i>(sD) = ps.stride_C[ProblemShape::RankT - 2 - i];
    });
    cutlass::KernelHardwareInfo hw;
    hw.sm_count = sm_count;
    const Element* x = o ? (const Element*)o->x : nullptr;
    const Element* w = o ? (const Element*)o->w : nullptr;
    Element* y = o ? (Element*)o->y : nullptr;
    const Element* c = (o && o->residual) ? (const Element*)o->residual : y;
    typename Op::Arguments args{ps, {x, w}, {{}, c, sC, y, sD}, hw};
    auto& f = args.epilogue.thread;
    f.alpha = 1.f;
    f.beta = (o && o->residual) ? 1.f : 0.f;
    f.bias_ptr = o ? (const Element*)o->bias : nullptr;
    f.activation.leaky_alpha = o ? o->leaky_alpha : 0.f;
    return args;
  }

  static bool output_matches(const CrProblem& p) {
    ProblemShape ps = problem_shape(p);
    return ps.shape_C[1] == p.P && ps.shape_C[2] == p.Q;
  }

  static int can_implement(const CrProblem* p) {
    if (p->groups != 1 || !output_matches(*p)) return int(cutlass::Status::kErrorInvalidProblem);
    // The im2col tensor map takes traversal strides of 1 to 8, which CUTLASS does not check.
    if (p->stride_h > 8 || p->stride_w > 8) return CR_STATUS_TMA_LIMIT;
    return cr_check<Op>(arguments(*p, nullptr, 1));
  }

  // A tile per CTA (no persistent scheduling); the im2col main loop steps through tile K channels at
  // each of the R*S filter positions.
  static int describe(const CrProblem* p, CrLaunchShape* shape) {
    constexpr int tm = cute::size<0>(TileShape{}), tn = cute::size<1>(TileShape{}), tk = cute::size<2>(TileShape{});
    const int64_t m = int64_t(p->N) * p->P * p->Q;
    shape->ctas = ((m + tm - 1) / tm) * ((p->K + tn - 1) / tn);
    shape->mainloop_iterations = p->R * p->S * ((p->C + tk - 1) / tk);
    shape->shared_memory = int(Kernel::SharedStorageSize);
    return 0;
  }

  // The Params of a launch: encoding their TMA descriptors is a driver call, so they are kept per problem,
  // operand addresses and device, and the encoders' results are checked (CUTLASS only asserts them).
  static int params(const CrProblem& p, const CrOperands* o, int device, int sm_count, Params* out) {
    CrParamsKey key(p, o, device);
    if (cache().find(key, out)) return 0;
    int st = cr_encode_check([&] { *out = Kernel::to_underlying_arguments(arguments(p, o, sm_count), nullptr); });
    if (st == 0) cache().insert(key, *out);
    return st;
  }

  static int prepare(const CrProblem* p, const CrOperands* o) {
    if (int st = can_implement(p)) return st;
    Params unused;
    return params(*p, o, -1, 1, &unused);
  }

  static int run(const CrProblem* p, const CrOperands* o) {
    if (int st = can_implement(p)) return st;
    int device = 0;
    if (int st = cr_cuda_status(cudaGetDevice(&device))) return st;
    Params launch;
    if (int st = params(*p, o, device, cr_sm_count(device), &launch)) return st;
    constexpr int smem = Kernel::SharedStorageSize;
    if (int st = cr_allow_shared_memory<Kernel>((const void*)cutlass::device_kernel<Kernel>, smem)) return st;
    cutlass::device_kernel<Kernel><<<Kernel::get_grid_shape(launch), Kernel::get_block_shape(), smem, o->stream>>>(
        launch);
    return cr_cuda_status(cudaGetLastError());
  }

 private:
  static CrParamsCache<Params>& cache() {
    static CrParamsCache<Params> instance;
    return instance;
  }
};

#define CR_DEFINE_KERNEL90(NAME, ELEMENT, DTYPE, TM, TN, TK)                                              \
  using NAME##_t = Conv90<ELEMENT, cute::Shape<cute::Int<TM>, cute::Int<TN>, cute::Shape<cute::Int<TK>>>, \
                          cute::Shape<cute::_1, cute::_1, cute::_1>>;                                      \
  extern "C" const CrKernel NAME = {#NAME, DTYPE, 90, 8, CR_REGULAR_SM90A, TM, TN, TK, 0,                 \
                                    &NAME##_t::can_implement, &NAME##_t::run, &NAME##_t::describe, nullptr, \
                                    &NAME##_t::prepare};
