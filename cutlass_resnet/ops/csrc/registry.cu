// The table of kernels the binding can dispatch to, status names, the epilogue's activation and the
// driver's tensor-map encoders. No kernel templates here.
#include <cuda.h>
#include <cudaTypedefs.h>

#include <atomic>
#include <cstring>
#include <string>

#include "conv_api.h"
#include "conv_common.cuh"
#include "cutlass/cutlass.h"

#include "kernels.inc"  // every kernel: generated from cutlass_resnet/ops/kernels.py

extern "C" int cr_kernel_count(void) { return int(sizeof(kKernels) / sizeof(kKernels[0])); }

extern "C" const CrKernel* cr_kernel(int index) {
  return (index >= 0 && index < cr_kernel_count()) ? kKernels[index] : nullptr;
}

static const char* cu_result_name(CUresult result) {
  switch (result) {
    case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
    case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
    case CUDA_ERROR_DEINITIALIZED: return "CUDA_ERROR_DEINITIALIZED";
    case CUDA_ERROR_NO_DEVICE: return "CUDA_ERROR_NO_DEVICE";
    case CUDA_ERROR_INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
    case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND (the driver's encoder was not found: no CUDA driver?)";
    case CUDA_ERROR_NOT_SUPPORTED: return "CUDA_ERROR_NOT_SUPPORTED";
    default: return nullptr;
  }
}

extern "C" const char* cr_status_string(int status) {
  if (status == CR_STATUS_WORKSPACE_NEEDED) return "needs a workspace (split-k), which is not supported";
  if (status == CR_STATUS_TMA_LIMIT) return "outside the TMA im2col limits (stride above 8)";
  if (status >= CR_STATUS_TMA_ENCODE) {
    static thread_local std::string text;
    CUresult result = CUresult(status - CR_STATUS_TMA_ENCODE);
    const char* name = cu_result_name(result);
    text = std::string("the CUDA driver could not encode a TMA descriptor for it: ") +
           (name ? name : "CUresult " + std::to_string(int(result)));
    return text.c_str();
  }
  if (status >= CR_STATUS_CUDA_ERROR) return cudaGetErrorString(cudaError_t(status - CR_STATUS_CUDA_ERROR));
  return cutlassGetStatusString(cutlass::Status(status));
}

// The driver's entry points are looked up once (CUTLASS would on every encode); a test may replace them.
static std::atomic<void*> testing_im2col{nullptr}, testing_tiled{nullptr};

static void* driver_entry_point(const char* name) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found;
  if (cudaGetDriverEntryPointByVersion(name, &fn, 12000, cudaEnableDefault, &found) != cudaSuccess ||
      found != cudaDriverEntryPointSuccess) {
    cudaGetLastError();  // no driver: not an error for whoever launches next
    return nullptr;
  }
  return fn;
}

// Where no CUDA driver is loaded (a host without a GPU: dry runs), host stand-ins encode instead: they check what
// the driver documents for cuTensorMapEncodeTiled/Im2col (alignment, extents, strides, boxes) and fill no
// descriptor, which nothing launches there.
static bool cr_map_args_valid(const CUtensorMap* map, cuuint32_t rank, const void* address, const cuuint64_t* dims,
                              const cuuint64_t* strides, const cuuint32_t* element_strides) {
  if (map == nullptr || reinterpret_cast<uintptr_t>(map) % 64 || rank < 1 || rank > 5) return false;
  if (reinterpret_cast<uintptr_t>(address) % 16) return false;
  for (cuuint32_t i = 0; i < rank; ++i) {
    if (dims[i] == 0 || dims[i] > (cuuint64_t(1) << 32)) return false;
    if (element_strides[i] == 0 || element_strides[i] > 8) return false;
    if (i + 1 < rank && (strides[i] % 16 || strides[i] >= (cuuint64_t(1) << 40))) return false;
  }
  return true;
}

static CUresult CUDAAPI cr_host_encode_tiled(CUtensorMap* map, CUtensorMapDataType, cuuint32_t rank, void* address,
                                             const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                                             const cuuint32_t* element_strides, CUtensorMapInterleave,
                                             CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill) {
  if (!cr_map_args_valid(map, rank, address, dims, strides, element_strides)) return CUDA_ERROR_INVALID_VALUE;
  for (cuuint32_t i = 0; i < rank; ++i)
    if (box[i] == 0 || box[i] > 256) return CUDA_ERROR_INVALID_VALUE;
  std::memset(map, 0, sizeof(*map));
  return CUDA_SUCCESS;
}

static CUresult CUDAAPI cr_host_encode_im2col(CUtensorMap* map, CUtensorMapDataType, cuuint32_t rank, void* address,
                                              const cuuint64_t* dims, const cuuint64_t* strides, const int* lower,
                                              const int* upper, cuuint32_t channels, cuuint32_t pixels,
                                              const cuuint32_t* element_strides, CUtensorMapInterleave,
                                              CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill) {
  if (rank < 3 || !cr_map_args_valid(map, rank, address, dims, strides, element_strides)) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (channels == 0 || channels > 256 || pixels == 0 || pixels > 1024) return CUDA_ERROR_INVALID_VALUE;
  const int bound = 1 << (rank == 3 ? 15 : rank == 4 ? 7 : 4);  // the corners' range, by the spatial rank
  for (cuuint32_t i = 0; i + 2 < rank; ++i)
    if (lower[i] < -bound || lower[i] >= bound || upper[i] < -bound || upper[i] >= bound) return CUDA_ERROR_INVALID_VALUE;
  std::memset(map, 0, sizeof(*map));
  return CUDA_SUCCESS;
}

extern "C" PFN_cuTensorMapEncodeIm2col_v12000 cr_tensor_map_encoder_im2col(void) {
  static void* const driver = driver_entry_point("cuTensorMapEncodeIm2col");
  void* testing = testing_im2col.load();
  if (testing) return reinterpret_cast<PFN_cuTensorMapEncodeIm2col_v12000>(testing);
  return driver ? reinterpret_cast<PFN_cuTensorMapEncodeIm2col_v12000>(driver) : &cr_host_encode_im2col;
}

extern "C" PFN_cuTensorMapEncodeTiled_v12000 cr_tensor_map_encoder_tiled(void) {
  static void* const driver = driver_entry_point("cuTensorMapEncodeTiled");
  void* testing = testing_tiled.load();
  if (testing) return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(testing);
  return driver ? reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(driver) : &cr_host_encode_tiled;
}

extern "C" void cr_testing_set_tensor_map_encoders(void* im2col, void* tiled) {
  testing_im2col.store(im2col);
  testing_tiled.store(tiled);
}

extern "C" float cr_activation(float value, float leaky_alpha) { return CrLeakyReLU<float>()(value, leaky_alpha); }
