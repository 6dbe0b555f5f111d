// The thin binding: checks tensors, then runs one kernel of the torch-free table (conv_api.h).
// Which kernel runs, and what falls back, is decided in Python (cutlass_resnet/ops/select.py);
// this file refuses anything the chosen kernel cannot take, and never launches a kernel whose
// can_implement has not accepted the problem. It uses only the LibTorch stable ABI (built with
// TORCH_TARGET_VERSION 2.10), so one compiled library serves every torch from 2.10 on.
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include <dlfcn.h>

#include <climits>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "conv_api.h"

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

CrProblem to_problem(const IntList& v) {
  CR_CHECK(v.size() == 16 || v.size() == 17, "a problem is 16 or 17 integers "
           "(N, H, W, C, K, R, S, P, Q, pad_h, pad_w, stride_h, stride_w, dil_h, dil_w, groups[, split_k]), got ",
           v.size());
  for (int64_t d : v) CR_CHECK(d >= 0 && d <= INT_MAX, "problem extent ", d, " out of range");
  auto i = [&](int j) { return static_cast<int>(v[j]); };
  return {i(0), i(1), i(2), i(3),  i(4),  i(5),  i(6),  i(7),  i(8),
          i(9), i(10), i(11), i(12), i(13), i(14), i(15), v.size() == 17 ? i(16) : 1};
}

bool is_split_k(const CrKernel& k) { return k.kind == CR_SPLITK || k.kind == CR_SPLITK_SM90A; }

// Host-only: needs no GPU.
int64_t can_implement(int64_t index, IntList problem) {
  CrProblem p = to_problem(problem);
  return kernel_at(index).can_implement(&p);
}

std::string status_string(int64_t status) { return cr_status_string(static_cast<int>(status)); }

// Host-only: CTAs, main-loop iterations and shared memory of a launch on an accepted problem.
std::vector<int64_t> describe(int64_t index, IntList problem) {
  const CrKernel& k = kernel_at(index);
  CrProblem p = to_problem(problem);
  int status = k.can_implement(&p);
  CR_CHECK(status == 0, "kernel ", k.name, " cannot implement this convolution: ", cr_status_string(status));
  CrLaunchShape shape{};
  CR_CHECK(k.describe(&p, &shape) == 0, "kernel ", k.name, " cannot describe its launch");
  return {shape.ctas, shape.mainloop_iterations, shape.shared_memory};
}

double activation(double value, double leaky_alpha) {
  return cr_activation(static_cast<float>(value), static_cast<float>(leaky_alpha));
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
                   const IntList& dilation, int64_t groups, int64_t split_k) {
  const auto dtype = k.dtype == CR_FLOAT16 ? ScalarType::Half : ScalarType::BFloat16;
  CR_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
           "stride, padding and dilation must have two entries each");
  const int64_t elem = 2;  // fp16 and bf16
  check_operand(x, "x", x, dtype, k.alignment * elem, true);
  check_operand(weight, "weight", x, dtype, k.alignment * elem, true);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t K = weight.size(0), R = weight.size(2), S = weight.size(3);
  CR_CHECK(groups >= 1 && (groups == 1 || k.kind == CR_GROUPED), "kernel ", k.name, " takes groups=1 only, got ",
           groups);
  CR_CHECK(weight.size(1) * groups == C && K % groups == 0, "weight (", K, ", ", weight.size(1), ", ", R, ", ", S,
           ") with groups=", groups, " does not match ", C, " input channels");
  const int64_t P = (H + 2 * padding[0] - dilation[0] * (R - 1) - 1) / stride[0] + 1;
  const int64_t Q = (W + 2 * padding[1] - dilation[1] * (S - 1) - 1) / stride[1] + 1;
  CR_CHECK(P >= 1 && Q >= 1, "empty output ", P, "x", Q);
  CR_CHECK(split_k == 1 || (is_split_k(k) && split_k >= 1), "kernel ", k.name, " takes split_k=",
           is_split_k(k) ? ">= 1" : "1", ", got ", split_k);
  const int64_t out_align = 16;  // the epilogue's 128-bit accesses
  if (bias) {
    check_operand(*bias, "bias", x, dtype, out_align, false);
    CR_CHECK(bias->dim() == 1 && bias->size(0) == K, "bias must have shape (", K, ",)");
  }
  if (residual) {
    CR_CHECK(k.kind != CR_GROUPED && k.kind != CR_STEM, "kernel ", k.name,
             " takes no residual (grouped and stem kernels have the plain epilogue)");
    check_operand(*residual, "residual", x, dtype, out_align, true);
    const Tensor& r = *residual;
    CR_CHECK(r.size(0) == N && r.size(1) == K && r.size(2) == P && r.size(3) == Q, "residual must have shape (", N,
             ", ", K, ", ", P, ", ", Q, "), got (", r.size(0), ", ", r.size(1), ", ", r.size(2), ", ", r.size(3), ")");
  }
  CrProblem p = to_problem({N, H, W, C, K, R, S, P, Q, padding[0], padding[1], stride[0], stride[1], dilation[0],
                            dilation[1], groups, split_k});
  int status = k.can_implement(&p);
  CR_CHECK(status == 0, "kernel ", k.name, " cannot implement this convolution: ", cr_status_string(status));
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

Tensor empty_output(const Tensor& x, const CrProblem& p) {
  return torch::stable::empty({p.N, p.K, p.P, p.Q}, x.scalar_type(), std::nullopt, x.device(), std::nullopt,
                              torch::headeronly::MemoryFormat::ChannelsLast);
}

// Split-K kernels' fp32 partial sums, from torch's allocator (on the current stream); none for the others.
std::optional<Tensor> workspace(const CrKernel& k, const Tensor& x, const CrProblem& p) {
  if (!is_split_k(k)) return std::nullopt;
  const int64_t floats = int64_t(p.split_k) * p.N * p.P * p.Q * p.K;
  return torch::stable::empty({floats}, ScalarType::Float, std::nullopt, x.device());
}

// The operands of a launch: one place packs them for the GPU and for the host reference.
CrOperands operands(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                    const std::optional<Tensor>& residual, const Tensor& y, bool relu, cudaStream_t stream,
                    const std::optional<Tensor>& partials) {
  return {x.data_ptr(),
          weight.data_ptr(),
          bias ? bias->data_ptr() : nullptr,
          residual ? residual->data_ptr() : nullptr,
          y.data_ptr(),
          relu ? 0.f : 1.f,
          stream,
          partials ? static_cast<float*>(partials->data_ptr()) : nullptr};
}

Tensor fprop_cuda(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                  const std::optional<Tensor>& residual, IntList stride, IntList padding, IntList dilation,
                  int64_t groups, bool relu, int64_t index, int64_t split_k) {
  const CrKernel& k = kernel_at(index);
  CrProblem p = validate(k, x, weight, bias, residual, stride, padding, dilation, groups, split_k);
  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  Tensor y = empty_output(x, p);
  if (p.N == 0) return y;
  auto partials = workspace(k, x, p);
  CrOperands ops = operands(x, weight, bias, residual, y, relu, current_stream(x.get_device_index()), partials);
  int status = k.run(&p, &ops);
  CR_CHECK(status == 0, "kernel ", k.name, " failed: ", cr_status_string(status));
  return y;
}

// CPU tensors through the same checks and operand packing, into CUTLASS's host reference instead of a launch.
Tensor host_reference(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                      const std::optional<Tensor>& residual, IntList stride, IntList padding, IntList dilation,
                      int64_t groups, bool relu, int64_t index, int64_t split_k) {
  const CrKernel& k = kernel_at(index);
  CR_CHECK(x.is_cpu(), "host_reference takes CPU tensors");
  CR_CHECK(k.host_reference != nullptr, "kernel ", k.name, " has no host reference");
  CrProblem p = validate(k, x, weight, bias, residual, stride, padding, dilation, groups, split_k);
  Tensor y = empty_output(x, p);
  auto partials = workspace(k, x, p);
  CrOperands ops = operands(x, weight, bias, residual, y, relu, nullptr, partials);
  int status = k.host_reference(&p, &ops);
  CR_CHECK(status == 0, "kernel ", k.name, " host reference failed: ", cr_status_string(status));
  return y;
}

// Everything fprop does but the launch: the checks, the output tensor, the kernel's Params and TMA
// descriptors. Host-only, for any device, so the host path can be checked and timed without a GPU;
// returns 0 when a launch would follow, else the kernel's status.
int64_t dry_run(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                const std::optional<Tensor>& residual, IntList stride, IntList padding, IntList dilation,
                int64_t groups, bool relu, int64_t index, int64_t split_k) {
  const CrKernel& k = kernel_at(index);
  CrProblem p = validate(k, x, weight, bias, residual, stride, padding, dilation, groups, split_k);
  Tensor y = empty_output(x, p);
  auto partials = workspace(k, x, p);
  CrOperands ops = operands(x, weight, bias, residual, y, relu, nullptr, partials);
  return k.prepare(&p, &ops);
}

Tensor fprop_cpu(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                 const std::optional<Tensor>& residual, IntList stride, IntList padding, IntList dilation,
                 int64_t groups, bool relu, int64_t index, int64_t split_k) {
  validate(kernel_at(index), x, weight, bias, residual, stride, padding, dilation, groups, split_k);
  CR_CHECK(false, "the arguments are valid, but CUTLASS kernels run on CUDA tensors only");
  return x;
}

}  // namespace

STABLE_TORCH_LIBRARY(cutlass_resnet_C, m) {
  m.def("kernels() -> str[]");
  m.def("kernel_info(int index) -> int[]");
  m.def("can_implement(int index, int[] problem) -> int");
  m.def("status_string(int status) -> str");
  m.def("describe(int index, int[] problem) -> int[]");
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
}

// The host-only functions: one implementation for every backend.
STABLE_TORCH_LIBRARY_IMPL(cutlass_resnet_C, CompositeExplicitAutograd, m) {
  m.impl("kernels", TORCH_BOX(&kernels));
  m.impl("kernel_info", TORCH_BOX(&kernel_info));
  m.impl("can_implement", TORCH_BOX(&can_implement));
  m.impl("status_string", TORCH_BOX(&status_string));
  m.impl("describe", TORCH_BOX(&describe));
  m.impl("activation", TORCH_BOX(&activation));
  m.impl("dry_run", TORCH_BOX(&dry_run));
}

STABLE_TORCH_LIBRARY_IMPL(cutlass_resnet_C, CUDA, m) { m.impl("fprop", TORCH_BOX(&fprop_cuda)); }

// CPU: the same checks and no launch, so that they can be tested without a GPU; and the host reference.
STABLE_TORCH_LIBRARY_IMPL(cutlass_resnet_C, CPU, m) {
  m.impl("fprop", TORCH_BOX(&fprop_cpu));
  m.impl("host_reference", TORCH_BOX(&host_reference));
}
