// The thin binding: checks tensors, then runs one kernel of the torch-free table (conv_api.h). Which kernel runs,
// and what falls back, is decided in Python (cutlass_resnet/ops/select.py); everything else happens here, on
// every call, in one place (run_decided): the stem's input and filter packed to 4 channels, a grouped filter laid
// out block-diagonally, the batch split, the split-K workspace, and the launch, or in a dry run everything but
// the launch, or in an emulated run CUTLASS's host reference on the very arguments the launch would get. Python
// remembers its choice here per problem, so that the next conv of that problem (conv2d) runs from C++ alone.
// Nothing is launched whose can_implement has not accepted the problem. It uses only the LibTorch stable ABI
// (built with TORCH_TARGET_VERSION 2.10), so one compiled library serves every torch from 2.10 on.
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include <dlfcn.h>

#include <array>
#include <climits>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "conv_api.h"
#include "record.h"

namespace {

using torch::stable::Tensor;
using ScalarType = torch::headeronly::ScalarType;
using IntList = std::vector<int64_t>;

#define CR_CHECK(cond, ...) STD_TORCH_CHECK(cond, "cutlass_resnet: ", __VA_ARGS__)

const CrKernel& kernel_at(int64_t index) {
  const CrKernel* k = cr_kernel(static_cast<int>(index));
  CR_CHECK(k != nullptr, "no kernel with index ", index, " (there are ", cr_kernel_count(), ")");
  return *k;
}

std::string device_string(const Tensor& t) {
  const auto device = t.device();
  if (device.type() == torch::headeronly::DeviceType::CPU) return "cpu";
  return (device.type() == torch::headeronly::DeviceType::CUDA ? "cuda:" : "device:") + std::to_string(device.index());
}

// Whether a 4-D tensor is NHWC in memory, as torch's is_contiguous(memory_format=channels_last) says:
// strides of size-1 dimensions do not count.
bool is_channels_last(const Tensor& t) {
  if (t.dim() != 4) return false;
  int64_t expected = 1;
  for (int64_t d : {1, 3, 2, 0}) {
    if (t.size(d) != 1 && t.stride(d) != expected) return false;
    expected *= t.size(d);
  }
  return true;
}

std::vector<std::string> kernels() {
  std::vector<std::string> names;
  for (int i = 0; i < cr_kernel_count(); ++i) names.emplace_back(cr_kernel(i)->name);
  return names;
}

// dtype (CrDtype), min_sm, alignment, kind (CrKind), tile_m, tile_n, tile_k, stages
std::vector<int64_t> kernel_info(int64_t index) {
  const CrKernel& k = kernel_at(index);
  return {k.dtype, k.min_sm, k.alignment, k.kind, k.tile_m, k.tile_n, k.tile_k, k.stages};
}

// An output extent of a conv or a pool along one dimension, as torch computes it.
int64_t out_extent(int64_t in, int64_t window, int64_t stride, int64_t pad, int64_t dilation) {
  return (in + 2 * pad - dilation * (window - 1) - 1) / stride + 1;
}

// A conv record (record.h: N, C, H, W, K, R, S, stride, padding, dilation, groups[, split_k]) as CUTLASS's problem.
CrProblem to_problem(const IntList& v) {
  CR_CHECK(v.size() == CR_REC_FIELDS - 1 || v.size() == CR_REC_FIELDS, "a conv record is ", CR_REC_FIELDS - 1, " or ",
           CR_REC_FIELDS, " integers (N, C, H, W, K, R, S, stride, padding, dilation, groups[, split_k]), got ",
           v.size());
  for (size_t j = 0; j < v.size(); ++j) {
    const int64_t least = (j == CR_REC_PAD_H || j == CR_REC_PAD_W) ? 0 : 1;  // the rest divide
    CR_CHECK(v[j] >= least && v[j] <= INT_MAX, "conv record entry ", j, " is ", v[j], ", outside ", least, " to ",
             INT_MAX);
  }
  const int64_t P = out_extent(v[CR_REC_H], v[CR_REC_R], v[CR_REC_STRIDE_H], v[CR_REC_PAD_H], v[CR_REC_DIL_H]);
  const int64_t Q = out_extent(v[CR_REC_W], v[CR_REC_S], v[CR_REC_STRIDE_W], v[CR_REC_PAD_W], v[CR_REC_DIL_W]);
  CR_CHECK(P >= 1 && Q >= 1, "empty output ", P, "x", Q);
  auto i = [&](int j) { return static_cast<int>(v[j]); };
  return {i(CR_REC_N),        i(CR_REC_H),        i(CR_REC_W),      i(CR_REC_C),      i(CR_REC_K),
          i(CR_REC_R),        i(CR_REC_S),        int(P),           int(Q),           i(CR_REC_PAD_H),
          i(CR_REC_PAD_W),    i(CR_REC_STRIDE_H), i(CR_REC_STRIDE_W), i(CR_REC_DIL_H), i(CR_REC_DIL_W),
          i(CR_REC_GROUPS),   v.size() == CR_REC_FIELDS ? i(CR_REC_SPLIT_K) : 1};
}

// The record of a conv of x (N, C, H, W) with a (K, C / groups, R, S) filter.
IntList record_of(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t S, const IntList& stride,
                  const IntList& padding, const IntList& dilation, int64_t groups) {
  return {N, C, H, W, K, R, S, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], groups};
}

bool is_split_k(const CrKernel& k) { return cr_kind_split(k.kind); }

// Host-only: needs no GPU.
int64_t can_implement(int64_t index, IntList record) {
  CrProblem p = to_problem(record);
  return kernel_at(index).can_implement(&p);
}

std::string status_string(int64_t status) { return cr_status_string(static_cast<int>(status)); }

// Host-only: CTAs, main-loop iterations and shared memory of a launch on an accepted problem.
std::vector<int64_t> describe(int64_t index, IntList record) {
  const CrKernel& k = kernel_at(index);
  CrProblem p = to_problem(record);
  int status = k.can_implement(&p);
  CR_CHECK(status == 0, "kernel ", k.name, " cannot implement this convolution: ", cr_status_string(status));
  CrLaunchShape shape{};
  CR_CHECK(k.describe(&p, &shape) == 0, "kernel ", k.name, " cannot describe its launch");
  return {shape.ctas, shape.mainloop_iterations, shape.shared_memory, shape.threads, shape.parameter_bytes};
}

double activation(double value, double leaky_alpha) {
  return cr_activation(static_cast<float>(value), static_cast<float>(leaky_alpha));
}

// Strides and dilations of at least 1 and paddings of at least 0, before anything divides by them.
void check_geometry(const IntList& stride, const IntList& padding, const IntList& dilation) {
  CR_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
           "stride, padding and dilation must have two entries each");
  for (int i = 0; i < 2; ++i) {
    CR_CHECK(stride[i] >= 1 && dilation[i] >= 1 && padding[i] >= 0, "stride and dilation must be >= 1 and padding ",
             ">= 0, got stride (", stride[0], ", ", stride[1], "), padding (", padding[0], ", ", padding[1],
             "), dilation (", dilation[0], ", ", dilation[1], ")");
  }
}

void check_operand(const Tensor& t, const char* name, const Tensor& x, ScalarType dtype, int64_t align_bytes,
                   bool nhwc) {
  CR_CHECK(t.device() == x.device(), name, " must be on ", device_string(x), ", got ", device_string(t));
  CR_CHECK(t.scalar_type() == dtype, name, " must be ", torch::headeronly::toString(dtype), ", got ",
           torch::headeronly::toString(t.scalar_type()));
  if (nhwc) {
    CR_CHECK(is_channels_last(t), name, " must be a 4-D channels_last (NHWC) tensor");
  } else {
    CR_CHECK(t.is_contiguous(), name, " must be contiguous");
  }
  CR_CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % align_bytes == 0, name, " must be ", align_bytes,
           "-byte aligned; pass a freshly allocated or .clone()d tensor");
}

// Every check the launch depends on, CUTLASS's can_implement last. Device-independent, so the
// tests run it on CPU tensors.
CrProblem validate(const CrKernel& k, const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                   const std::optional<Tensor>& residual, const IntList& stride, const IntList& padding,
                   const IntList& dilation, int64_t groups, int64_t split_k, bool accepted = false) {
  const bool int8 = k.dtype == CR_INT8;
  const auto dtype = k.dtype == CR_FLOAT16 ? ScalarType::Half : int8 ? ScalarType::Char : ScalarType::BFloat16;
  check_geometry(stride, padding, dilation);
  const int64_t elem = int8 ? 1 : 2;
  check_operand(x, "x", x, dtype, k.alignment * elem, true);
  check_operand(weight, "weight", x, dtype, k.alignment * elem, true);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t K = weight.size(0), R = weight.size(2), S = weight.size(3);
  CR_CHECK(groups >= 1 && (groups == 1 || cr_kind_grouped(k.kind)), "kernel ", k.name, " takes groups=1 only, got ",
           groups);
  CR_CHECK(weight.size(1) * groups == C && K % groups == 0, "weight (", K, ", ", weight.size(1), ", ", R, ", ", S,
           ") with groups=", groups, " does not match ", C, " input channels");
  const int64_t P = out_extent(H, R, stride[0], padding[0], dilation[0]);
  const int64_t Q = out_extent(W, S, stride[1], padding[1], dilation[1]);
  CR_CHECK(P >= 1 && Q >= 1, "empty output ", P, "x", Q);
  CR_CHECK(split_k == 1 || (is_split_k(k) && split_k >= 1), "kernel ", k.name, " takes split_k=",
           is_split_k(k) ? ">= 1" : "1", ", got ", split_k);
  const int64_t out_align = 16;  // the epilogue's 128-bit accesses
  if (int8) {
    // Sm80: (alpha, beta) pairs, read as one broadcast vector in 16-pair (128-byte) accesses on the GPU;
    // Hopper: alpha's row, then beta's (two row broadcasts).
    const bool rows = cr_kind_hopper(k.kind);
    const int64_t rows_of = rows ? 2 : K, columns = rows ? K : 2;
    CR_CHECK(bias.has_value(), "kernel ", k.name, " needs its (", rows_of, ", ", columns, ") float32 alpha and beta");
    check_operand(*bias, "scale_shift", x, ScalarType::Float, x.is_cpu() ? out_align : 128, false);
    CR_CHECK(bias->dim() == 2 && bias->size(0) == rows_of && bias->size(1) == columns, "scale_shift must have shape (",
             rows_of, ", ", columns, ") for kernel ", k.name);
  } else if (bias) {
    check_operand(*bias, "bias", x, dtype, out_align, false);
    CR_CHECK(bias->dim() == 1 && bias->size(0) == K, "bias must have shape (", K, ",)");
  }
  if (residual) {
    CR_CHECK(cr_kind_residual(k.kind), "kernel ", k.name, " takes no residual (its epilogue adds none)");
    check_operand(*residual, "residual", x, dtype, out_align, true);
    const Tensor& r = *residual;
    CR_CHECK(r.size(0) == N && r.size(1) == K && r.size(2) == P && r.size(3) == Q, "residual must have shape (", N,
             ", ", K, ", ", P, ", ", Q, "), got (", r.size(0), ", ", r.size(1), ", ", r.size(2), ", ", r.size(3), ")");
  }
  IntList record = record_of(N, C, H, W, K, R, S, stride, padding, dilation, groups);
  record.push_back(split_k);
  CrProblem p = to_problem(record);
  if (!accepted) {
    int status = k.can_implement(&p);
    CR_CHECK(status == 0, "kernel ", k.name, " cannot implement this convolution: ", cr_status_string(status));
  }
  return p;
}

// torch's current CUDA stream, looked up when first needed: linking the function would make the library need
// libtorch_cuda.so, which a CPU build of torch lacks (and the host-side functions serve there too).
cudaStream_t current_stream(int32_t device_index) {
  using GetStream = AOTITorchError (*)(int32_t, void**);
  static GetStream get = reinterpret_cast<GetStream>(dlsym(RTLD_DEFAULT, "aoti_torch_get_current_cuda_stream"));
  CR_CHECK(get != nullptr, "this torch has no CUDA streams (a CPU build?)");
  void* stream = nullptr;
  TORCH_ERROR_CODE_CHECK(get(device_index, &stream));
  return static_cast<cudaStream_t>(stream);
}

// A new tensor on x's device from the shim's empty_strided: torch::stable::empty looks the op up by name in the
// dispatcher on every call, a good part of a launch's host time.
Tensor empty_strided(const Tensor& x, std::vector<int64_t> sizes, std::vector<int64_t> strides, int32_t dtype) {
  const int32_t type = x.is_cpu() ? aoti_torch_device_type_cpu() : aoti_torch_device_type_cuda();
  AtenTensorHandle handle = nullptr;
  TORCH_ERROR_CODE_CHECK(aoti_torch_empty_strided(int64_t(sizes.size()), sizes.data(), strides.data(), dtype, type,
                                                  x.is_cpu() ? 0 : x.get_device_index(), &handle));
  return Tensor(handle);
}

// (N, C, H, W) in x's dtype, channels_last.
Tensor empty_nhwc(const Tensor& x, int64_t N, int64_t C, int64_t H, int64_t W) {
  const ScalarType t = x.scalar_type();
  const int32_t dtype = t == ScalarType::Half   ? aoti_torch_dtype_float16()
                        : t == ScalarType::Char ? aoti_torch_dtype_int8()
                                                : aoti_torch_dtype_bfloat16();
  return empty_strided(x, {N, C, H, W}, {H * W * C, 1, W * C, C}, dtype);
}

Tensor empty_output(const Tensor& x, const CrProblem& p) { return empty_nhwc(x, p.N, p.K, p.P, p.Q); }

// Split-K kernels' fp32 partial sums, from torch's allocator (on the current stream); none for the others.
std::optional<Tensor> workspace(const CrKernel& k, const Tensor& x, const CrProblem& p) {
  if (!is_split_k(k)) return std::nullopt;
  const int64_t floats = int64_t(p.split_k) * p.N * p.P * p.Q * p.K;
  return empty_strided(x, {floats}, {1}, aoti_torch_dtype_float32());
}

// The operands of a launch: one place packs them for the GPU and for the host reference.
CrOperands operands(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                    const std::optional<Tensor>& residual, const Tensor& y, bool relu, float gamma, cudaStream_t stream,
                    const std::optional<Tensor>& partials) {
  return {x.data_ptr(),
          weight.data_ptr(),
          bias ? bias->data_ptr() : nullptr,
          residual ? residual->data_ptr() : nullptr,
          y.data_ptr(),
          relu ? 0.f : 1.f,
          stream,
          partials ? static_cast<float*>(partials->data_ptr()) : nullptr,
          0,
          gamma};
}

// CrDtype of a torch dtype, -1 for one no kernel takes.
int64_t dtype_code(ScalarType t) {
  return t == ScalarType::Half ? CR_FLOAT16 : t == ScalarType::BFloat16 ? CR_BFLOAT16 : -1;
}

// What Python chose for a conv: the kernel (its index; -1: aten's convolution, run by Python) and how its
// launches are prepared.
struct Decided {
  int64_t kernel;
  int64_t pad_channels;  // C the stem's input and filter are zero-padded to, 0 for none
  int64_t merge_groups;  // adjacent groups merged into one block-diagonal group, 0 or 1 for none
  int64_t batch_chunk;   // images per launch, 0 for the whole batch
  int64_t split_k;       // slices of a split-K kernel, 0 for none
};

Decided decided_from(const IntList& v) {
  CR_CHECK(v.size() == 5, "a choice is 5 integers (kernel, pad_channels, merge_groups, batch_chunk, split_k)");
  CR_CHECK(v[0] >= -1 && v[0] < cr_kernel_count(), "no kernel with index ", v[0]);
  for (size_t i = 1; i < v.size(); ++i) CR_CHECK(v[i] >= 0, "choice entry ", i, " is negative: ", v[i]);
  return {v[0], v[1], v[2], v[3], v[4]};
}

// What a call does: launch on the GPU, everything but the launch (a dry run, on tensors of any device), or the
// launch's arguments through CUTLASS's host reference (an emulated GPU, on CPU tensors).
enum Mode : int64_t { kLaunch = 0, kDryRun = 1, kEmulate = 2 };

// A conv's arguments as conv2d and run take them, in one list (each argument costs the dispatcher's boxing about
// half a microsecond): stride (2), padding (2), dilation (2), groups, relu, mode.
struct ConvArgs {
  IntList stride, padding, dilation;
  int64_t groups;
  bool relu;
  int64_t mode;
  float gamma = 0.f;  // int8 kernels: the residual's scale
};

ConvArgs conv_args(const IntList& conv) {
  CR_CHECK(conv.size() == 9, "a conv is 9 integers (stride, padding, dilation: two each; groups, relu, mode), got ",
           conv.size());
  ConvArgs a{{conv[0], conv[1]}, {conv[2], conv[3]}, {conv[4], conv[5]}, conv[6], conv[7] != 0, conv[8]};
  CR_CHECK(a.mode >= kLaunch && a.mode <= kEmulate, "mode is 0 (launch), 1 (dry run) or 2 (emulate), got ", a.mode);
  check_geometry(a.stride, a.padding, a.dilation);
  CR_CHECK(a.groups >= 1, "groups must be >= 1, got ", a.groups);
  return a;
}

// A layout pass on x's data: run(1, nullptr), the host loop, for a CPU tensor; else run(0, stream), a launch on
// x's device and its current stream.
template <class Run>
int on_device(const Tensor& x, Run run) {
  if (x.is_cpu()) return run(1, nullptr);
  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  return run(0, current_stream(x.get_device_index()));
}

// t (N, C, H, W), any strides, as NHWC with `channels` channels, t's at an offset of ((n / group_n) % merge) * C
// and zeros elsewhere (CrPack); in a dry run only the output.
Tensor pack(const Tensor& t, int64_t channels, int64_t group_n, int64_t merge, bool dry_run) {
  const int64_t dtype = dtype_code(t.scalar_type());
  CR_CHECK(dtype >= 0, "packing takes fp16 or bf16, got ", torch::headeronly::toString(t.scalar_type()));
  CR_CHECK(t.dim() == 4 && merge >= 1 && group_n >= 1 && channels >= t.size(1) * merge && channels <= INT_MAX,
           "packing takes a 4-D tensor of at most ", channels, " channels (", merge, " groups side by side)");
  Tensor y = empty_nhwc(t, t.size(0), channels, t.size(2), t.size(3));
  if (dry_run || y.numel() == 0) return y;
  CrPack p{int(t.size(0)), int(t.size(1)), int(t.size(2)), int(t.size(3)), int(channels),
           t.stride(0),    t.stride(1),    t.stride(2),    t.stride(3),    int(group_n),
           int(merge)};
  const int status = on_device(t, [&](int host, cudaStream_t stream) {
    return cr_pack_channels(int(dtype), &p, t.data_ptr(), y.data_ptr(), host, stream);
  });
  CR_CHECK(status == 0, "packing failed: ", cr_status_string(status));
  return y;
}

// The filter as the chosen kernel takes it, made from the live weight on every call (so that no change to the
// weight, by whatever means, is ever missed): the stem's padded, merged groups' block-diagonal, else the weight.
Tensor kernel_weight(const Tensor& weight, const Decided& d, int64_t groups, bool dry_run) {
  if (d.pad_channels) return pack(weight, d.pad_channels, 1, 1, dry_run);
  if (d.merge_groups > 1) {
    return pack(weight, d.merge_groups * weight.size(1), weight.size(0) / groups, d.merge_groups, dry_run);
  }
  return weight;
}

const char* mode_failure(int64_t mode) {
  return mode == kDryRun ? " cannot prepare its launch: " : mode == kEmulate ? " host reference failed: " : " failed: ";
}

// One conv with a decided kernel: packing, kernel-ready filter, batch split, workspace, then per launch the mode's
// step. `accepted`: remember() had can_implement accept these launches. With `status`, a kernel's own nonzero
// status is stored there and returned at once (dry runs report it); else it raises.
Tensor run_decided(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                   const std::optional<Tensor>& residual, const ConvArgs& a, const Decided& d, bool accepted,
                   int* status = nullptr) {
  const CrKernel& k = kernel_at(d.kernel);
  CR_CHECK(x.dim() == 4 && weight.dim() == 4, "x and weight must be 4-D");
  const bool cuda = x.device().type() == torch::headeronly::DeviceType::CUDA;
  CR_CHECK(a.mode != kEmulate || x.is_cpu(), "an emulated launch takes CPU tensors, got ", device_string(x));
  std::optional<torch::stable::accelerator::DeviceGuard> guard;
  if (cuda) guard.emplace(x.get_device_index());
  const bool dry = a.mode == kDryRun;
  const int64_t N = x.size(0);
  if (N == 0) {
    const int64_t P = out_extent(x.size(2), weight.size(2), a.stride[0], a.padding[0], a.dilation[0]);
    const int64_t Q = out_extent(x.size(3), weight.size(3), a.stride[1], a.padding[1], a.dilation[1]);
    CR_CHECK(P >= 1 && Q >= 1, "empty output ", P, "x", Q);
    return empty_nhwc(x, 0, weight.size(0), P, Q);
  }
  const int64_t groups = d.merge_groups > 1 ? a.groups / d.merge_groups : a.groups;
  const Tensor xk = d.pad_channels ? pack(x, d.pad_channels, 1, 1, dry) : x;
  const Tensor wk = kernel_weight(weight, d, a.groups, dry);
  const int64_t chunk = d.batch_chunk ? std::min(d.batch_chunk, N) : N;
  const int64_t split = d.split_k ? d.split_k : 1;
  cudaStream_t stream = cuda && a.mode == kLaunch ? current_stream(x.get_device_index()) : nullptr;
  std::optional<Tensor> y;
  for (int64_t start = 0; start < N; start += chunk) {
    const int64_t n = std::min(chunk, N - start);
    auto part = [&](Tensor t) { return n == N ? t : torch::stable::narrow(t, 0, start, n); };
    const Tensor xs = part(xk);
    std::optional<Tensor> rs = residual ? std::optional<Tensor>(part(*residual)) : std::nullopt;
    CrProblem p = validate(k, xs, wk, bias, rs, a.stride, a.padding, a.dilation, groups, split, accepted);
    CR_CHECK(a.mode != kLaunch || cuda, "the arguments are valid, but CUTLASS kernels run on CUDA tensors only");
    if (!y) y = empty_nhwc(x, N, p.K, p.P, p.Q);
    const Tensor ys = part(*y);
    auto partials = workspace(k, xs, p);
    CrOperands ops = operands(xs, wk, bias, rs, ys, a.relu, a.gamma, stream, partials);
    ops.accepted = 1;  // by validate or remember
    const int st = a.mode == kLaunch ? k.run(&p, &ops) : dry ? k.prepare(&p, &ops) : k.host_reference(&p, &ops);
    if (st != 0 && status != nullptr) {
      *status = st;
      return *y;
    }
    CR_CHECK(st == 0, "kernel ", k.name, mode_failure(a.mode), cr_status_string(st));
  }
  if (status != nullptr) *status = 0;
  return *y;
}

// One kernel on its own (the self-check's and the tests' entry): no packing, merging or batch split.
Tensor kernel_call(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                   const std::optional<Tensor>& residual, const IntList& stride, const IntList& padding,
                   const IntList& dilation, int64_t groups, bool relu, int64_t index, int64_t split_k, Mode mode,
                   int* status = nullptr) {
  check_geometry(stride, padding, dilation);
  CR_CHECK(split_k >= 1, "split_k must be >= 1, got ", split_k);
  CR_CHECK(kernel_at(index).dtype != CR_INT8, "kernel ", kernel_at(index).name, " is an int8 kernel: call fprop_int8");
  const ConvArgs a{stride, padding, dilation, groups, relu, mode};
  const Decided d{index, 0, 0, 0, is_split_k(kernel_at(index)) ? split_k : 0};
  CR_CHECK(split_k == 1 || d.split_k, "kernel ", kernel_at(index).name, " takes split_k=1, got ", split_k);
  return run_decided(x, weight, bias, residual, a, d, false, status);
}

Tensor fprop(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
             const std::optional<Tensor>& residual, IntList stride, IntList padding, IntList dilation, int64_t groups,
             bool relu, int64_t index, int64_t split_k) {
  return kernel_call(x, weight, bias, residual, stride, padding, dilation, groups, relu, index, split_k, kLaunch);
}

// CPU tensors through the same checks and operand packing, into CUTLASS's host reference instead of a launch.
Tensor host_reference(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                      const std::optional<Tensor>& residual, IntList stride, IntList padding, IntList dilation,
                      int64_t groups, bool relu, int64_t index, int64_t split_k) {
  return kernel_call(x, weight, bias, residual, stride, padding, dilation, groups, relu, index, split_k, kEmulate);
}

// Everything fprop does but the launch: the checks, the output tensor, the kernel's Params and TMA descriptors.
// Host-only, for any device; returns 0 when a launch would follow, else the kernel's status.
int64_t dry_run(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                const std::optional<Tensor>& residual, IntList stride, IntList padding, IntList dilation,
                int64_t groups, bool relu, int64_t index, int64_t split_k) {
  int status = 0;
  kernel_call(x, weight, bias, residual, stride, padding, dilation, groups, relu, index, split_k, kDryRun, &status);
  return status;
}

// An int8 kernel (CR_INT8) on int8 NHWC x and KRSC weight, scale_shift alpha and beta in float32 ((K, 2) pairs for
// the Sm80 kernels, (2, K) rows for Hopper's): y = saturate(round(act(float(acc) * alpha + beta + float(residual) *
// gamma))). conv as conv2d's (with the mode).
Tensor fprop_int8(const Tensor& x, const Tensor& weight, const Tensor& scale_shift,
                  const std::optional<Tensor>& residual, double gamma, IntList conv, int64_t index) {
  const CrKernel& k = kernel_at(index);
  CR_CHECK(k.dtype == CR_INT8, "kernel ", k.name, " is not an int8 kernel");
  ConvArgs a = conv_args(conv);
  a.gamma = static_cast<float>(gamma);
  return run_decided(x, weight, scale_shift, residual, a, Decided{index, 0, 0, 0, 0}, false);
}

// A conv with the choice Python made for it (its first call, and whatever the remembered choice cannot take).
Tensor run(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
           const std::optional<Tensor>& residual, IntList conv, IntList choice) {
  const Decided d = decided_from(choice);
  CR_CHECK(d.kernel >= 0, "run takes a kernel, not aten's convolution");
  const CrKernel& k = kernel_at(d.kernel);
  CR_CHECK(k.dtype != CR_INT8, "kernel ", k.name, " is an int8 kernel: call fprop_int8");
  return run_decided(x, weight, bias, residual, conv_args(conv), d, false);
}

// ---- The problem -> kernel cache: what Python chose for a conv, so its next call needs no Python. ----

// x's N, C, H, W; the weight's K, R, S; stride, padding, dilation, groups; dtype, device (-1: the CPU, dry and
// emulated runs), residual.
using ChoiceKey = std::array<int64_t, 17>;

struct ChoiceKeyHash {
  size_t operator()(const ChoiceKey& key) const {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the integers
    for (int64_t v : key) h = (h ^ uint64_t(v)) * 1099511628211ull;
    return size_t(h);
  }
};

// At most this many problems are remembered (inputs of varying sizes, as in detection, would grow the map
// without end): past it the map starts over, and each problem asks Python once more.
constexpr size_t kMaxChoices = 4096;

std::mutex choices_mutex;
std::unordered_map<ChoiceKey, Decided, ChoiceKeyHash> choices;

// A conv record without split_k, and what else decides the choice.
ChoiceKey choice_key(const IntList& record, int64_t dtype, int64_t device, bool residual) {
  CR_CHECK(record.size() == CR_REC_FIELDS - 1, "a conv record is ", CR_REC_FIELDS - 1,
           " integers (N, C, H, W, K, R, S, stride, padding, dilation, groups)");
  ChoiceKey key{};
  for (size_t i = 0; i < record.size(); ++i) key[i] = record[i];
  key[14] = dtype, key[15] = device, key[16] = residual;
  return key;
}

// The launches of a remembered choice, as CrProblems: a chunk of the batch (and the last, smaller one), the stem's
// channels padded, merged groups.
std::vector<CrProblem> launch_problems(const IntList& record, const Decided& c) {
  IntList launch = record;
  const int64_t N = record[CR_REC_N];
  if (c.pad_channels) launch[CR_REC_C] = c.pad_channels;
  if (c.merge_groups > 1) launch[CR_REC_GROUPS] = record[CR_REC_GROUPS] / c.merge_groups;
  launch.push_back(c.split_k ? c.split_k : 1);
  std::vector<CrProblem> problems;
  for (int64_t n : {c.batch_chunk ? std::min(c.batch_chunk, N) : N, c.batch_chunk ? N % c.batch_chunk : 0}) {
    if (n > 0) {
      launch[CR_REC_N] = n;
      problems.push_back(to_problem(launch));
    }
  }
  return problems;
}

// record: the conv (record.h, without split_k); choice: kernel index (-1 for none), pad_channels, merge_groups,
// batch_chunk, split_k. CUTLASS's can_implement accepts a kernel's launches here, once, or nothing is remembered.
void remember(IntList record, int64_t dtype, int64_t device, bool residual, IntList choice) {
  const Decided decided = decided_from(choice);
  const ChoiceKey key = choice_key(record, dtype, device, residual);
  if (decided.kernel >= 0) {
    const CrKernel& k = kernel_at(decided.kernel);
    for (const CrProblem& p : launch_problems(record, decided)) {
      int status = k.can_implement(&p);
      CR_CHECK(status == 0, "kernel ", k.name, " cannot implement this convolution: ", cr_status_string(status));
    }
  }
  std::lock_guard<std::mutex> lock(choices_mutex);
  if (choices.size() >= kMaxChoices && !choices.count(key)) choices.clear();
  choices[key] = decided;
}

void forget_choices() {
  std::lock_guard<std::mutex> lock(choices_mutex);
  choices.clear();
}

int64_t remembered_choices() {
  std::lock_guard<std::mutex> lock(choices_mutex);
  return int64_t(choices.size());
}

std::optional<Decided> cached_choice(const ChoiceKey& key) {
  std::lock_guard<std::mutex> lock(choices_mutex);
  auto it = choices.find(key);
  if (it == choices.end()) return std::nullopt;
  return it->second;
}

// Whether an operand is as a remembered launch takes it as it is: x's dtype and device, and 16-byte aligned.
bool takes(const Tensor& t, const Tensor& x) {
  return t.scalar_type() == x.scalar_type() && t.device() == x.device() &&
         reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
}

// The stem's input, any strides, as NHWC with `channels` channels (the tests' entry to the packing pass).
Tensor pack_channels(const Tensor& x, int64_t channels) { return pack(x, channels, 1, 1, false); }

// Max-pool of an NHWC (channels_last) fp16/bf16 tensor without indices, as torch's max_pool2d computes it
// (ceil_mode False, dilation 1).
Tensor max_pool2d(const Tensor& x, IntList kernel, IntList stride, IntList padding) {
  const int64_t dtype = dtype_code(x.scalar_type());
  CR_CHECK(dtype >= 0, "max_pool2d takes fp16 or bf16, got ", torch::headeronly::toString(x.scalar_type()));
  CR_CHECK(is_channels_last(x), "max_pool2d takes a 4-D channels_last (NHWC) tensor");
  CR_CHECK(kernel.size() == 2 && stride.size() == 2 && padding.size() == 2, "kernel, stride, padding: two each");
  CR_CHECK(padding[0] * 2 <= kernel[0] && padding[1] * 2 <= kernel[1] && stride[0] > 0 && stride[1] > 0,
           "pad should be at most half of the kernel size and stride positive");
  const int64_t P = out_extent(x.size(2), kernel[0], stride[0], padding[0], 1);
  const int64_t Q = out_extent(x.size(3), kernel[1], stride[1], padding[1], 1);
  CR_CHECK(P >= 1 && Q >= 1, "max_pool2d output would be empty");
  Tensor y = empty_nhwc(x, x.size(0), x.size(1), P, Q);
  CrPool p{int(x.size(0)), int(x.size(2)), int(x.size(3)), int(x.size(1)), int(P), int(Q), int(kernel[0]),
           int(kernel[1]), int(stride[0]), int(stride[1]), int(padding[0]), int(padding[1])};
  const int status = on_device(x, [&](int host, cudaStream_t stream) {
    return cr_max_pool(int(dtype), &p, x.data_ptr(), y.data_ptr(), host, stream);
  });
  CR_CHECK(status == 0, "max_pool2d failed: ", cr_status_string(status));
  return y;
}

// One conv from C++ alone, for a problem whose choice Python remembered, through run_decided (in a dry run:
// everything but the launches, on tensors of any device; emulated: CUTLASS's host reference, on CPU tensors).
// [] when nothing is remembered for the problem, the choice is aten's convolution, or an operand is not as the
// launch takes it (another layout, dtype or device, misaligned): the caller then takes the Python path.
std::vector<Tensor> conv2d(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                           const std::optional<Tensor>& residual, IntList conv) {
  if (x.dim() != 4 || weight.dim() != 4 || conv.size() != 9 || x.size(0) == 0) return {};
  const ConvArgs a = conv_args(conv);
  const int64_t dtype = dtype_code(x.scalar_type());
  const bool cuda = x.device().type() == torch::headeronly::DeviceType::CUDA;
  if (dtype < 0 || (a.mode == kLaunch && !cuda) || (a.mode == kEmulate && !x.is_cpu())) return {};
  const int64_t device = cuda ? x.get_device_index() : -1;
  const IntList record = record_of(x.size(0), x.size(1), x.size(2), x.size(3), weight.size(0), weight.size(2),
                                   weight.size(3), a.stride, a.padding, a.dilation, a.groups);
  auto choice = cached_choice(choice_key(record, dtype, device, residual.has_value()));
  if (!choice || choice->kernel < 0) return {};
  const bool packed = choice->pad_channels != 0, blocked = choice->merge_groups > 1;
  if (weight.size(1) * a.groups != x.size(1) || !takes(weight, x)) return {};
  if (!packed && (!is_channels_last(x) || !takes(x, x))) return {};
  if (!packed && !blocked && !is_channels_last(weight)) return {};
  if (residual && (!is_channels_last(*residual) || !takes(*residual, x))) return {};
  if (bias && (!bias->is_contiguous() || !takes(*bias, x))) return {};
  return {run_decided(x, weight, bias, residual, a, *choice, true)};
}

}  // namespace

STABLE_TORCH_LIBRARY(cutlass_resnet_C, m) {
  m.def("kernels() -> str[]");
  m.def("kernel_info(int index) -> int[]");
  m.def("can_implement(int index, int[] record) -> int");
  m.def("status_string(int status) -> str");
  m.def("describe(int index, int[] record) -> int[]");
  m.def("activation(float value, float leaky_alpha) -> float");
  m.def(
      "fprop(Tensor x, Tensor weight, Tensor? bias, Tensor? residual, int[] stride, int[] padding, "
      "int[] dilation, int groups, bool relu, int index, int split_k=1) -> Tensor");
  m.def(
      "dry_run(Tensor x, Tensor weight, Tensor? bias, Tensor? residual, int[] stride, int[] padding, "
      "int[] dilation, int groups, bool relu, int index, int split_k=1) -> int");
  m.def(
      "host_reference(Tensor x, Tensor weight, Tensor? bias, Tensor? residual, int[] stride, int[] padding, "
      "int[] dilation, int groups, bool relu, int index, int split_k=1) -> Tensor");
  m.def("run(Tensor x, Tensor weight, Tensor? bias, Tensor? residual, int[] conv, int[] choice) -> Tensor");
  m.def(
      "fprop_int8(Tensor x, Tensor weight, Tensor scale_shift, Tensor? residual, float gamma, int[] conv, "
      "int index) -> Tensor");
  m.def("remember(int[] record, int dtype, int device, bool residual, int[] choice) -> ()");
  m.def("forget_choices() -> ()");
  m.def("remembered_choices() -> int");
  m.def("conv2d(Tensor x, Tensor weight, Tensor? bias, Tensor? residual, int[] conv) -> Tensor[]");
  m.def("pack_channels(Tensor x, int channels) -> Tensor");
  m.def("max_pool2d(Tensor x, int[] kernel, int[] stride, int[] padding) -> Tensor");
}

// One implementation for every backend: each function checks the device it needs (a launch, CUDA tensors; the
// host reference, CPU tensors), so that everything but the launch runs and is tested on the host.
STABLE_TORCH_LIBRARY_IMPL(cutlass_resnet_C, CompositeExplicitAutograd, m) {
  m.impl("kernels", TORCH_BOX(&kernels));
  m.impl("kernel_info", TORCH_BOX(&kernel_info));
  m.impl("can_implement", TORCH_BOX(&can_implement));
  m.impl("status_string", TORCH_BOX(&status_string));
  m.impl("describe", TORCH_BOX(&describe));
  m.impl("activation", TORCH_BOX(&activation));
  m.impl("fprop", TORCH_BOX(&fprop));
  m.impl("dry_run", TORCH_BOX(&dry_run));
  m.impl("host_reference", TORCH_BOX(&host_reference));
  m.impl("run", TORCH_BOX(&run));
  m.impl("fprop_int8", TORCH_BOX(&fprop_int8));
  m.impl("remember", TORCH_BOX(&remember));
  m.impl("forget_choices", TORCH_BOX(&forget_choices));
  m.impl("remembered_choices", TORCH_BOX(&remembered_choices));
  m.impl("conv2d", TORCH_BOX(&conv2d));
  m.impl("pack_channels", TORCH_BOX(&pack_channels));
  m.impl("max_pool2d", TORCH_BOX(&max_pool2d));
}
