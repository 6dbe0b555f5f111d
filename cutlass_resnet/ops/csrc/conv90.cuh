// CUTLASS 3.x SM90 implicit-GEMM fprop for Hopper (compiled for sm_90a only): TMA im2col loads, wgmma,
// warp-specialized. Conv90 has the fused EVT epilogue LinCombPerColBiasEltAct<CrLeakyReLU>:
//   y = act(acc + beta * residual + bias[k]),  beta = residual ? 1 : 0,
// leaky_alpha 0 for ReLU, 1 for none; fp32 accumulation, one rounding. Conv90SplitK splits C into
// split_k slices (CUTLASS's SM90 conv kernels have no split-K or persistent schedule), all in one launch
// whose grid z picks the slice, writing fp32 partial sums that the reduction of splitk.cuh finishes.
#pragma once
#include "cr_driver.cuh"  // first: CUTLASS's TMA headers must see its encoders
#include "conv_common.cuh"
#include "splitk.cuh"

#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_map>

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

// One launch's problem, operand addresses, activation and device: what its TMA descriptors depend on.
struct CrParamsKey {
  CrProblem problem;
  const void* operands[6];
  float leaky_alpha;
  int device;

  CrParamsKey(const CrProblem& p, const CrOperands& o, int device_index) {
    std::memset(this, 0, sizeof(*this));  // compared bytewise
    problem = p;
    operands[0] = o.x, operands[1] = o.w, operands[2] = o.bias, operands[3] = o.residual, operands[4] = o.y;
    operands[5] = o.workspace;
    leaky_alpha = o.leaky_alpha;
    device = device_index;
  }
  std::string bytes() const { return std::string(reinterpret_cast<const char*>(this), sizeof(*this)); }
};

// Params made for launches that repeat (the same layer on the same buffers), at most kEntries of them.
template <class Params, size_t kEntries = 1024>
class CrParamsCache {
 public:
  bool find(const std::string& key, Params* out) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = entries_.find(key);
    if (it == entries_.end()) return false;
    *out = it->second;
    return true;
  }

  void insert(const std::string& key, const Params& params) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (entries_.size() >= kEntries) entries_.clear();
    entries_[key] = params;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, Params> entries_;
};

// SMs of a device, asked once per device.
inline int cr_sm_count(int device) {
  static std::atomic<int> counts[64];
  if (device < 0 || device >= 64) return cutlass::KernelHardwareInfo::query_device_multiprocessor_count(device);
  int n = counts[device].load();
  if (n == 0) counts[device].store(n = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(device));
  return n;
}

// The split-K slices of a Hopper kernel in one launch: grid z picks a slice's Params, each a whole conv over
// that slice's channels (the kernel takes its tile from grid x and y only: a conv has no batch mode). The
// Params, TMA descriptors included, stay in kernel parameter space, as CUTLASS's own launch keeps them; a
// launch passes room for 4, 8 or 16 slices (about 1.6 KB each), the fewest that hold its split.
constexpr int kCrMaxSlices = 16;

template <class Kernel, int N>
struct CrSlices {
  typename Kernel::Params slice[N];
};

template <class Kernel, int N>
__global__ void __launch_bounds__(Kernel::MaxThreadsPerBlock, Kernel::MinBlocksPerMultiprocessor)
    cr_sliced_kernel(CUTLASS_GRID_CONSTANT CrSlices<Kernel, N> const slices) {
  extern __shared__ char smem[];
  Kernel op;
  op(slices.slice[blockIdx.z], smem);
}

// The room a launch of `split` slices passes: 4, 8 or 16 slices' Params.
constexpr int cr_slice_room(int split) { return split <= 4 ? 4 : split <= 8 ? 8 : kCrMaxSlices; }

// The CUTLASS types of one SM90 fprop kernel: output ElementD (alignment AlignD), source ElementC (void:
// none), epilogue Fusion, Stages of the main loop's pipeline (0: as many as shared memory holds), the accumulator
// (fp32; int32 for int8). The epilogue computes in fp32.
template <typename Element, class TileShape, class Fusion, typename ElementC, typename ElementD, int AlignD,
          int Stages = 0, typename ElementAccumulator = float>
struct Sm90Fprop {
  using Layout = cutlass::layout::TensorNHWC;
  using ClusterShape = cute::Shape<cute::_1, cute::_1, cute::_1>;
  static constexpr int kAlignment = 16 / int(sizeof(Element));  // 16-byte TMA: C and K multiples of it
  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, ElementAccumulator, float, ElementC, Layout, AlignD, ElementD,
      Layout, AlignD, cutlass::epilogue::TmaWarpSpecialized, Fusion>::CollectiveOp;
  using CollectiveMainloop = typename cutlass::conv::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, cutlass::conv::Operator::kFprop, Element, Layout,
      kAlignment, Element, Layout, kAlignment, ElementAccumulator, TileShape, ClusterShape,
      std::conditional_t<(Stages > 0), cutlass::conv::collective::StageCount<(Stages > 0 ? Stages : 1)>,
                         cutlass::conv::collective::StageCountAutoCarveout<static_cast<int>(
                             sizeof(typename CollectiveEpilogue::SharedStorage))>>,
      cutlass::conv::KernelImplicitTmaWarpSpecializedSm90>::CollectiveOp;
  using ProblemShape = cutlass::conv::ConvProblemShape<cutlass::conv::Operator::kFprop, 2>;
  using Kernel = cutlass::conv::kernel::ConvUniversal<ProblemShape, CollectiveMainloop, CollectiveEpilogue>;
  using Op = cutlass::conv::device::ConvUniversalAdapter<Kernel>;
  using Params = typename Kernel::Params;
  using StrideC = typename Kernel::StrideC;
  using StrideD = typename Kernel::StrideD;
  static constexpr int kTileM = cute::size<0>(TileShape{}), kTileN = cute::size<1>(TileShape{}),
                       kTileK = cute::size<2>(TileShape{});

  // The conv over channels [c0, c0 + channels) of x and w (all of them: 0, C), packed output.
  static ProblemShape problem_shape(const CrProblem& p, int channels) {
    const int64_t C = p.C;
    return ProblemShape(cutlass::conv::Mode::kCrossCorrelation, {p.N, p.H, p.W, channels},
                        {int64_t(p.H) * p.W * C, int64_t(p.W) * C, C, 1}, {p.K, p.R, p.S, channels},
                        {int64_t(p.R) * p.S * C, int64_t(p.S) * C, C, 1}, {p.pad_h, p.pad_w}, {p.pad_h, p.pad_w},
                        {p.stride_h, p.stride_w}, {p.dil_h, p.dil_w}, 1);
  }

  static void output_strides(const ProblemShape& ps, StrideC& sC, StrideD& sD) {
    cute::for_each(cute::make_seq<cute::rank<0>(StrideD{})>{}, [&](auto i) {
      if constexpr (!std::is_void_v<ElementC>) cute::get<0, i>(sC) = ps.stride_C[ProblemShape::RankT - 2 - i];
      cute::get<0, i>(sD) = ps.stride_C[ProblemShape::RankT - 2 - i];
    });
  }

  // Host-only checks of a problem over `channels` channels, with the TMA limits CUTLASS does not check.
  template <class Arguments>
  static int check(const CrProblem& p, const Arguments& args) {
    const ProblemShape& ps = args.problem_shape;
    if (p.groups != 1 || ps.shape_C[1] != p.P || ps.shape_C[2] != p.Q) {
      return int(cutlass::Status::kErrorInvalidProblem);
    }
    if (p.stride_h > 8 || p.stride_w > 8) return CR_STATUS_TMA_LIMIT;  // im2col traversal strides are 1 to 8
    return cr_check<Op>(args);
  }

  // Params of a launch: encoding their TMA descriptors is a driver call, so they are kept per problem,
  // operand addresses and device, and the encoders' results are checked (CUTLASS only asserts them).
  template <class Arguments>
  static int params(const CrParamsKey& key, const Arguments& args, Params* out) {
    static CrParamsCache<Params> cache;
    const std::string bytes = key.bytes();
    if (cache.find(bytes, out)) return 0;
    int st = cr_encode_check([&] { *out = Kernel::to_underlying_arguments(args, nullptr); });
    if (st == 0) cache.insert(bytes, *out);
    return st;
  }

  static int launch(Params& params, cudaStream_t stream) {
    constexpr int smem = Kernel::SharedStorageSize;
    if (int st = cr_allow_shared_memory<Kernel>((const void*)cutlass::device_kernel<Kernel>, smem)) return st;
    cutlass::device_kernel<Kernel><<<Kernel::get_grid_shape(params), Kernel::get_block_shape(), smem, stream>>>(
        params);
    return cr_cuda_status(cudaGetLastError());
  }

  // One launch of split_k <= N slices (grid z), on Params made for each.
  template <int N>
  static int launch_slices(const CrSlices<Kernel, N>& slices, int split_k, cudaStream_t stream) {
    static_assert(sizeof(CrSlices<Kernel, N>) <= 32764, "the slices' Params exceed a kernel's parameter space");
    constexpr int smem = Kernel::SharedStorageSize;
    const void* kernel = (const void*)cr_sliced_kernel<Kernel, N>;
    if (int st = cr_allow_shared_memory<CrSlices<Kernel, N>>(kernel, smem)) return st;
    dim3 grid = Kernel::get_grid_shape(slices.slice[0]);
    grid.z = split_k;
    cr_sliced_kernel<Kernel, N><<<grid, Kernel::get_block_shape(), smem, stream>>>(slices);
    return cr_cuda_status(cudaGetLastError());
  }

  // The arguments of an unsplit launch over all of x's channels, the epilogue's own (thread) arguments left to the
  // wrapper: the source is the residual, else y (TMA needs a tensor to describe; the epilogue then reads none).
  // Operands may be null (host-only checks); no device is queried, so can_implement runs without a GPU.
  static typename Op::Arguments arguments(const CrProblem& p, const CrOperands* o, int sm_count) {
    static_assert(!std::is_void_v<ElementC>, "unsplit kernels have a source");
    ProblemShape ps = problem_shape(p, p.C);
    StrideC sC{};
    StrideD sD{};
    output_strides(ps, sC, sD);
    cutlass::KernelHardwareInfo hw;
    hw.sm_count = sm_count;
    const Element* x = o ? (const Element*)o->x : nullptr;
    const Element* w = o ? (const Element*)o->w : nullptr;
    ElementD* y = o ? (ElementD*)o->y : nullptr;
    const ElementC* c = (o && o->residual) ? (const ElementC*)o->residual : y;
    return typename Op::Arguments{ps, {x, w}, {{}, c, sC, y, sD}, hw};
  }

  // CUTLASS's host reference convolution of an unsplit launch's x and w (its own pointers and strides) in the
  // accumulator type, unscaled: what the main loop hands the epilogue, NPQK.
  static std::vector<ElementAccumulator> host_accumulate(const CrProblem& p, const typename Op::Arguments& args) {
    using L = cutlass::layout::TensorNHWC;
    const auto& shape = args.problem_shape;
    auto layout = [](const auto& stride) { return L(cutlass::make_Coord(stride[2], stride[1], stride[0])); };
    cutlass::TensorRef<Element, L> x(const_cast<Element*>(args.mainloop.ptr_A), layout(shape.stride_A));
    cutlass::TensorRef<Element, L> w(const_cast<Element*>(args.mainloop.ptr_B), layout(shape.stride_B));
    std::vector<ElementAccumulator> acc(size_t(p.N) * p.P * p.Q * p.K, ElementAccumulator(0));
    cutlass::TensorRef<ElementAccumulator, L> d(acc.data(), L::packed({p.N, p.P, p.Q, p.K}));
    cutlass::reference::host::Conv2dFprop<Element, L, Element, L, ElementAccumulator, L, ElementAccumulator,
                                          ElementAccumulator>(cr_problem_size(p), x, w, d, d, ElementAccumulator(1),
                                                              ElementAccumulator(0));
    return acc;
  }

  static void describe(int64_t m, int n, int iterations, int splits, CrLaunchShape* shape) {
    shape->ctas = ((m + kTileM - 1) / kTileM) * ((n + kTileN - 1) / kTileN) * splits;
    shape->mainloop_iterations = iterations;
    shape->shared_memory = int(Kernel::SharedStorageSize);
    shape->threads = int(Kernel::MaxThreadsPerBlock);
    shape->parameter_bytes = int(sizeof(Params));
  }
};

// The CrKernel functions of an unsplit SM90 wrapper W, from its Sm90Fprop (W::F) and its arguments for a problem
// (W::arguments; operands may be null, and no device is queried there: can_implement runs on a host without a GPU).
template <class W>
struct CrKernel90 {
  using F = typename W::F;

  static int can_implement(const CrProblem* p) {
    if (p->split_k != 1) return int(cutlass::Status::kErrorNotSupported);
    return F::check(*p, W::arguments(*p, nullptr, 1));
  }

  // A tile per CTA (no persistent scheduling); the im2col main loop steps through tile K channels at each of
  // the R*S filter positions.
  static int describe(const CrProblem* p, CrLaunchShape* shape) {
    F::describe(int64_t(p->N) * p->P * p->Q, p->K, p->R * p->S * ((p->C + F::kTileK - 1) / F::kTileK), 1, shape);
    return 0;
  }

  static int prepare(const CrProblem* p, const CrOperands* o) {
    if (int st = o->accepted ? 0 : can_implement(p)) return st;
    typename F::Params unused;
    return F::params(CrParamsKey(*p, *o, -1), W::arguments(*p, o, 1), &unused);
  }

  static int run(const CrProblem* p, const CrOperands* o) {
    if (int st = o->accepted ? 0 : can_implement(p)) return st;
    int device = 0;
    if (int st = cr_cuda_status(cudaGetDevice(&device))) return st;
    typename F::Params params;
    if (int st = F::params(CrParamsKey(*p, *o, device), W::arguments(*p, o, cr_sm_count(device)), &params)) return st;
    return F::launch(params, o->stream);
  }
};

// The registry entry NAME of unsplit SM90 wrapper W.
#define CR_KERNEL90_ENTRY(NAME, W, DTYPE, ALIGN, TM, TN, TK)                                                  \
  extern "C" const CrKernel NAME = {#NAME, DTYPE, 90, ALIGN, CR_REGULAR_SM90A, TM, TN, TK, 0,                 \
                                    &CrKernel90<W>::can_implement, &CrKernel90<W>::run, &CrKernel90<W>::describe, \
                                    &W::host_reference, &CrKernel90<W>::prepare};

template <typename Element, class TileShape>
struct Conv90 {
  using Fusion = cutlass::epilogue::fusion::LinCombPerColBiasEltAct<CrLeakyReLU, Element /*out*/, float /*compute*/,
                                                                    Element /*bias*/, Element /*source*/,
                                                                    float /*scalar*/>;
  using F = Sm90Fprop<Element, TileShape, Fusion, Element, Element, 8>;

  static typename F::Op::Arguments arguments(const CrProblem& p, const CrOperands* o, int sm_count) {
    auto args = F::arguments(p, o, sm_count);
    auto& f = args.epilogue.thread;
    f.alpha = 1.f;
    f.beta = (o && o->residual) ? 1.f : 0.f;
    f.bias_ptr = o ? (const Element*)o->bias : nullptr;
    f.activation.leaky_alpha = o ? o->leaky_alpha : 0.f;
    return args;
  }

  // CUTLASS's host reference on the very pointers, strides and epilogue arguments a launch gets, then the
  // fusion's epilogue, activation(beta * C + (alpha * acc + bias[k])), in fp32 and rounded once. The source is
  // read only where beta is nonzero, as the kernel reads it.
  static int host_reference(const CrProblem* p, const CrOperands* o) {
    if (int st = o->accepted ? 0 : CrKernel90<Conv90>::can_implement(p)) return st;
    auto args = arguments(*p, o, 1);
    const std::vector<float> acc = F::host_accumulate(*p, args);
    const int64_t size = int64_t(acc.size());
    const auto& f = args.epilogue.thread;
    const Element* source = args.epilogue.ptr_C;
    Element* y = const_cast<Element*>(args.epilogue.ptr_D);
    CrLeakyReLU<float> act;
    for (int64_t i = 0; i < size; ++i) {
      const float bias = f.bias_ptr ? float(f.bias_ptr[i % p->K]) : 0.f;
      float z = f.alpha * acc[size_t(i)] + bias;
      if (f.beta != 0.f) z = f.beta * float(source[i]) + z;
      y[i] = Element(act(z, f.activation.leaky_alpha));
    }
    return 0;
  }
};

// Stages fixed: a small tile's slices run many CTAs, and as many stages as shared memory holds (13 at 64x64x64,
// 209 KiB) would leave one CTA per SM.
template <typename Element, class TileShape, int Stages>
struct Conv90SplitK {
  using Fusion = cutlass::epilogue::fusion::LinearCombination<float, float, void, float>;
  using F = Sm90Fprop<Element, TileShape, Fusion, void, float, 4, Stages>;

  static int channels(const CrProblem& p) { return p.split_k > 0 ? p.C / p.split_k : 0; }
  static int64_t output_size(const CrProblem& p) { return int64_t(p.N) * p.P * p.Q * p.K; }

  // Slice j: channels [j * C/split, (j + 1) * C/split) of x and w, partial sums into workspace slice j.
  static CrOperands slice(const CrProblem& p, const CrOperands& o, int j) {
    CrOperands s = o;
    const int64_t c0 = int64_t(j) * channels(p);
    s.x = o.x ? (const Element*)o.x + c0 : nullptr;
    s.w = o.w ? (const Element*)o.w + c0 : nullptr;
    s.workspace = o.workspace ? o.workspace + j * output_size(p) : nullptr;
    s.bias = s.residual = s.y = nullptr;  // the reduction's
    return s;
  }

  static typename F::Op::Arguments arguments(const CrProblem& p, const CrOperands& s, int sm_count) {
    typename F::ProblemShape ps = F::problem_shape(p, channels(p));
    typename F::StrideC sC{};
    typename F::StrideD sD{};
    F::output_strides(ps, sC, sD);
    cutlass::KernelHardwareInfo hw;
    hw.sm_count = sm_count;
    typename F::Op::Arguments args{ps, {(const Element*)s.x, (const Element*)s.w}, {{}, nullptr, sC, s.workspace, sD},
                                   hw};
    args.epilogue.thread.alpha = 1.f;
    args.epilogue.thread.beta = 0.f;
    return args;
  }

  static int can_implement(const CrProblem* p) {
    if (p->split_k < 1 || p->split_k > kCrMaxSlices || p->C % p->split_k || channels(*p) % F::kAlignment ||
        p->K % kCrReduceVector) {
      return int(cutlass::Status::kErrorInvalidProblem);
    }
    return F::check(*p, arguments(*p, CrOperands{}, 1));
  }

  static int describe(const CrProblem* p, CrLaunchShape* shape) {
    const int iterations = p->R * p->S * ((channels(*p) + F::kTileK - 1) / F::kTileK);
    F::describe(int64_t(p->N) * p->P * p->Q, p->K, iterations, p->split_k, shape);
    shape->parameter_bytes = int(sizeof(CrSlices<typename F::Kernel, 1>)) * cr_slice_room(p->split_k);
    return 0;
  }

  static int accepts(const CrProblem* p, const CrOperands* o) {
    if (!o->workspace) return int(cutlass::Status::kErrorWorkspaceNull);
    return o->accepted ? 0 : can_implement(p);
  }

  static int prepare(const CrProblem* p, const CrOperands* o) {
    if (int st = accepts(p, o)) return st;
    for (int j = 0; j < p->split_k; ++j) {
      CrOperands s = slice(*p, *o, j);
      typename F::Params unused;
      if (int st = F::params(CrParamsKey(*p, s, -1), arguments(*p, s, 1), &unused)) return st;
    }
    return 0;
  }

  // The slices' Params, in room for N, and their launch.
  template <int N>
  static int launch(const CrProblem* p, const CrOperands* o, int device) {
    CrSlices<typename F::Kernel, N> slices;
    for (int j = 0; j < p->split_k; ++j) {
      CrOperands s = slice(*p, *o, j);
      if (int st = F::params(CrParamsKey(*p, s, device), arguments(*p, s, cr_sm_count(device)), &slices.slice[j])) {
        return st;
      }
    }
    return F::launch_slices(slices, p->split_k, o->stream);
  }

  static int run(const CrProblem* p, const CrOperands* o) {
    if (int st = accepts(p, o)) return st;
    int device = 0;
    if (int st = cr_cuda_status(cudaGetDevice(&device))) return st;
    const int room = cr_slice_room(p->split_k);
    const int st = room == 4 ? launch<4>(p, o, device) : room == 8 ? launch<8>(p, o, device) : launch<16>(p, o, device);
    if (st) return st;
    return cr_splitk_reduce<Element>(o->workspace, p->split_k, output_size(*p), p->K, (const Element*)o->bias,
                                     (const Element*)o->residual, (Element*)o->y, o->leaky_alpha, o->stream);
  }

  // Each slice through CUTLASS's host reference on the very pointers and strides its launch gets (the slice's
  // channels of x and w, C apart per pixel and per filter tap), then the reduction on the host.
  static int host_reference(const CrProblem* p, const CrOperands* o) {
    if (int st = accepts(p, o)) return st;
    using Layout = cutlass::layout::TensorNHWC;
    const int c = channels(*p);
    CrProblem sliced = *p;
    sliced.C = c;
    sliced.split_k = 1;
    cutlass::conv::Conv2dProblemSize ps = cr_problem_size(sliced);
    for (int j = 0; j < p->split_k; ++j) {
      CrOperands s = slice(*p, *o, j);
      auto args = arguments(*p, s, 1);
      const auto& shape = args.problem_shape;
      auto layout = [](const auto& stride) { return Layout(cutlass::make_Coord(stride[2], stride[1], stride[0])); };
      cutlass::TensorRef<Element, Layout> x((Element*)s.x, layout(shape.stride_A));
      cutlass::TensorRef<Element, Layout> w((Element*)s.w, layout(shape.stride_B));
      cutlass::TensorRef<float, Layout> d(s.workspace, Layout::packed({p->N, p->P, p->Q, p->K}));
      cutlass::reference::host::Conv2dFprop<Element, Layout, Element, Layout, float, Layout, float, float, float>(
          ps, x, w, d, d, 1.f, 0.f);
    }
    cr_splitk_reduce_host<Element>(o->workspace, p->split_k, output_size(*p), p->K, (const Element*)o->bias,
                                   (const Element*)o->residual, (Element*)o->y, o->leaky_alpha);
    return 0;
  }
};

#define CR_SM90_TILE(TM, TN, TK) cute::Shape<cute::Int<TM>, cute::Int<TN>, cute::Shape<cute::Int<TK>>>

#define CR_DEFINE_KERNEL90(NAME, ELEMENT, DTYPE, TM, TN, TK)     \
  using NAME##_t = Conv90<ELEMENT, CR_SM90_TILE(TM, TN, TK)>;    \
  CR_KERNEL90_ENTRY(NAME, NAME##_t, DTYPE, 8, TM, TN, TK)

#define CR_DEFINE_SPLITK_KERNEL90(NAME, ELEMENT, DTYPE, TM, TN, TK, STAGES)                               \
  using NAME##_t = Conv90SplitK<ELEMENT, CR_SM90_TILE(TM, TN, TK), STAGES>;                               \
  extern "C" const CrKernel NAME = {#NAME, DTYPE, 90, 8, CR_SPLITK_SM90A, TM, TN, TK, STAGES,             \
                                    &NAME##_t::can_implement, &NAME##_t::run, &NAME##_t::describe,        \
                                    &NAME##_t::host_reference, &NAME##_t::prepare};
