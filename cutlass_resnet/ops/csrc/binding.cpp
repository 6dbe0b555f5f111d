// The thin binding: checks tensors, then runs one kernel of the torch-free table (conv_api.h).
// Which kernel runs, and what falls back, is decided in Python (cutlass_resnet/ops/select.py);
// this file refuses anything the chosen kernel cannot take, and never launches a kernel whose
// can_implement has not accepted the problem.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <climits>
#include <cstdint>
#include <string>
#include <vector>

#include "conv_api.h"

namespace {

const CrKernel& kernel_at(int64_t index) {
  const CrKernel* k = cr_kernel(static_cast<int>(index));
  TORCH_CHECK(k != nullptr, "cutlass_resnet: no kernel with index ", index, " (there are ", cr_kernel_count(), ")");
  return *k;
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

CrProblem to_problem(c10::IntArrayRef v) {
  TORCH_CHECK(v.size() == 16, "cutlass_resnet: a problem is 16 integers "
              "(N, H, W, C, K, R, S, P, Q, pad_h, pad_w, stride_h, stride_w, dil_h, dil_w, groups), got ", v.size());
  for (int64_t d : v) TORCH_CHECK(d >= 0 && d <= INT_MAX, "cutlass_resnet: problem extent ", d, " out of range");
  auto i = [&](int j) { return static_cast<int>(v[j]); };
  return {i(0), i(1), i(2), i(3), i(4), i(5), i(6), i(7), i(8), i(9), i(10), i(11), i(12), i(13), i(14), i(15)};
}

// Host-only: needs no GPU.
int64_t can_implement(int64_t index, c10::IntArrayRef problem) {
  CrProblem p = to_problem(problem);
  return kernel_at(index).can_implement(&p);
}

std::string status_string(int64_t status) { return cr_status_string(static_cast<int>(status)); }

// Host-only: CTAs, main-loop iterations and shared memory of a launch on an accepted problem.
std::vector<int64_t> describe(int64_t index, c10::IntArrayRef problem) {
  const CrKernel& k = kernel_at(index);
  CrProblem p = to_problem(problem);
  int status = k.can_implement(&p);
  TORCH_CHECK(status == 0, "cutlass_resnet: kernel ", k.name, " cannot implement this convolution: ",
              cr_status_string(status));
  CrLaunchShape shape{};
  TORCH_CHECK(k.describe(&p, &shape) == 0, "cutlass_resnet: kernel ", k.name, " cannot describe its launch");
  return {shape.ctas, shape.mainloop_iterations, shape.shared_memory};
}

double activation(double value, double leaky_alpha) {
  return cr_activation(static_cast<float>(value), static_cast<float>(leaky_alpha));
}

void check_operand(const at::Tensor& t, const char* name, const at::Tensor& x, c10::ScalarType dtype,
                   int64_t align_bytes, bool nhwc) {
  TORCH_CHECK(t.device() == x.device(), "cutlass_resnet: ", name, " must be on ", x.device(), ", got ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, "cutlass_resnet: ", name, " must be ", dtype, ", got ", t.scalar_type());
  if (nhwc) {
    TORCH_CHECK(t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast), "cutlass_resnet: ", name,
                " must be a 4-D channels_last (NHWC) tensor");
  } else {
    TORCH_CHECK(t.is_contiguous(), "cutlass_resnet: ", name, " must be contiguous");
  }
  TORCH_CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % align_bytes == 0, "cutlass_resnet: ", name,
              " must be ", align_bytes, "-byte aligned; pass a freshly allocated or .clone()d tensor");
}

// Every check the launch depends on, CUTLASS's can_implement last. Device-independent, so the
// tests run it on CPU tensors.
CrProblem validate(const CrKernel& k, const at::Tensor& x, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                   c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups) {
  const auto dtype = k.dtype == CR_FLOAT16 ? at::kHalf : at::kBFloat16;
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "cutlass_resnet: stride, padding and dilation must have two entries each");
  const int64_t elem = 2;  // fp16 and bf16
  check_operand(x, "x", x, dtype, k.alignment * elem, true);
  check_operand(weight, "weight", x, dtype, k.alignment * elem, true);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t K = weight.size(0), R = weight.size(2), S = weight.size(3);
  TORCH_CHECK(groups >= 1 && (groups == 1 || k.kind == CR_GROUPED), "cutlass_resnet: kernel ", k.name,
              " takes groups=1 only, got ", groups);
  TORCH_CHECK(weight.size(1) * groups == C && K % groups == 0, "cutlass_resnet: weight ", weight.sizes(),
              " with groups=", groups, " does not match ", C, " input channels");
  const int64_t P = (H + 2 * padding[0] - dilation[0] * (R - 1) - 1) / stride[0] + 1;
  const int64_t Q = (W + 2 * padding[1] - dilation[1] * (S - 1) - 1) / stride[1] + 1;
  TORCH_CHECK(P >= 1 && Q >= 1, "cutlass_resnet: empty output ", P, "x", Q);
  const int64_t out_align = 16;  // the epilogue's 128-bit accesses
  if (bias) {
    check_operand(*bias, "bias", x, dtype, out_align, false);
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == K, "cutlass_resnet: bias must have shape (", K, ",)");
  }
  if (residual) {
    TORCH_CHECK(k.kind != CR_GROUPED && k.kind != CR_STEM, "cutlass_resnet: kernel ", k.name,
                " takes no residual (grouped and stem kernels have the plain epilogue)");
    check_operand(*residual, "residual", x, dtype, out_align, true);
    TORCH_CHECK(residual->sizes() == at::IntArrayRef({N, K, P, Q}), "cutlass_resnet: residual must have shape (",
                N, ", ", K, ", ", P, ", ", Q, "), got ", residual->sizes());
  }
  CrProblem p = to_problem({N, H, W, C, K, R, S, P, Q, padding[0], padding[1], stride[0], stride[1], dilation[0],
                            dilation[1], groups});
  int status = k.can_implement(&p);
  TORCH_CHECK(status == 0, "cutlass_resnet: kernel ", k.name, " cannot implement this convolution: ",
              cr_status_string(status));
  return p;
}

// The operands of a launch: one place packs them for the GPU and for the host reference.
CrOperands operands(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                    const std::optional<at::Tensor>& residual, at::Tensor& y, bool relu, cudaStream_t stream) {
  return {x.data_ptr(),
          weight.data_ptr(),
          bias ? bias->data_ptr() : nullptr,
          residual ? residual->data_ptr() : nullptr,
          y.data_ptr(),
          relu ? 0.f : 1.f,
          stream};
}

at::Tensor fprop_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                      const std::optional<at::Tensor>& residual, c10::IntArrayRef stride, c10::IntArrayRef padding,
                      c10::IntArrayRef dilation, int64_t groups, bool relu, int64_t index) {
  const CrKernel& k = kernel_at(index);
  CrProblem p = validate(k, x, weight, bias, residual, stride, padding, dilation, groups);
  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty({p.N, p.K, p.P, p.Q}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (p.N == 0) return y;
  CrOperands ops = operands(x, weight, bias, residual, y, relu,
                            c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
  int status = k.run(&p, &ops);
  TORCH_CHECK(status == 0, "cutlass_resnet: kernel ", k.name, " failed: ", cr_status_string(status));
  return y;
}

// CPU tensors through the same checks and operand packing, into CUTLASS's host reference instead of a launch.
at::Tensor host_reference(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                          const std::optional<at::Tensor>& residual, c10::IntArrayRef stride, c10::IntArrayRef padding,
                          c10::IntArrayRef dilation, int64_t groups, bool relu, int64_t index) {
  const CrKernel& k = kernel_at(index);
  TORCH_CHECK(x.device().is_cpu(), "cutlass_resnet: host_reference takes CPU tensors");
  TORCH_CHECK(k.host_reference != nullptr, "cutlass_resnet: kernel ", k.name, " has no host reference");
  CrProblem p = validate(k, x, weight, bias, residual, stride, padding, dilation, groups);
  at::Tensor y = at::empty({p.N, p.K, p.P, p.Q}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  CrOperands ops = operands(x, weight, bias, residual, y, relu, nullptr);
  int status = k.host_reference(&p, &ops);
  TORCH_CHECK(status == 0, "cutlass_resnet: kernel ", k.name, " host reference failed: ", cr_status_string(status));
  return y;
}

at::Tensor fprop_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                     const std::optional<at::Tensor>& residual, c10::IntArrayRef stride, c10::IntArrayRef padding,
                     c10::IntArrayRef dilation, int64_t groups, bool relu, int64_t index) {
  validate(kernel_at(index), x, weight, bias, residual, stride, padding, dilation, groups);
  TORCH_CHECK(false, "cutlass_resnet: the arguments are valid, but CUTLASS kernels run on CUDA tensors only");
}

}  // namespace

TORCH_LIBRARY(cutlass_resnet_C, m) {
  m.def("kernels() -> str[]", &kernels);
  m.def("kernel_info(int index) -> int[]", &kernel_info);
  m.def("can_implement(int index, int[] problem) -> int", &can_implement);
  m.def("status_string(int status) -> str", &status_string);
  m.def("describe(int index, int[] problem) -> int[]", &describe);
  m.def("activation(float value, float leaky_alpha) -> float", &activation);
  m.def(
      "host_reference(Tensor x, Tensor weight, Tensor? bias, Tensor? residual, int[] stride, int[] padding, "
      "int[] dilation, int groups, bool relu, int index) -> Tensor");
  m.def(
      "fprop(Tensor x, Tensor weight, Tensor? bias, Tensor? residual, int[] stride, int[] padding, "
      "int[] dilation, int groups, bool relu, int index) -> Tensor");
}

TORCH_LIBRARY_IMPL(cutlass_resnet_C, CUDA, m) { m.impl("fprop", &fprop_cuda); }

// CPU: the same checks and no launch, so that they can be tested without a GPU.
TORCH_LIBRARY_IMPL(cutlass_resnet_C, CPU, m) {
  m.impl("fprop", &fprop_cpu);
  m.impl("host_reference", &host_reference);
}
