// The CUDA driver's tensor-map encoders, looked up once and checked. CUTLASS calls them through
// CUTLASS_CUDA_DRIVER_WRAPPER_CALL, which looks the entry point up again on every call and only
// asserts the result (nothing at all with NDEBUG). Included before CUTLASS's TMA headers, this
// routes those calls here: the first failure of a thread is kept until cr_encode_check takes it.
#pragma once
#include <cuda.h>
#include <cudaTypedefs.h>

#include "conv_api.h"
#include "cutlass/cuda_host_adapter.hpp"

extern "C" {
// The encoders in use (the driver's, found once; or what cr_testing_set_tensor_map_encoders set).
PFN_cuTensorMapEncodeIm2col_v12000 cr_tensor_map_encoder_im2col(void);
PFN_cuTensorMapEncodeTiled_v12000 cr_tensor_map_encoder_tiled(void);
}

namespace cr_driver {

inline thread_local CUresult first_error = CUDA_SUCCESS;

inline CUresult note(CUresult result) {
  if (result != CUDA_SUCCESS && first_error == CUDA_SUCCESS) first_error = result;
  return result;
}

template <typename... Args>
CUresult call_cuTensorMapEncodeIm2col(Args... args) {
  auto encode = cr_tensor_map_encoder_im2col();
  return note(encode ? encode(args...) : CUDA_ERROR_NOT_FOUND);
}

template <typename... Args>
CUresult call_cuTensorMapEncodeTiled(Args... args) {
  auto encode = cr_tensor_map_encoder_tiled();
  return note(encode ? encode(args...) : CUDA_ERROR_NOT_FOUND);
}

}  // namespace cr_driver

#undef CUTLASS_CUDA_DRIVER_WRAPPER_CALL
#define CUTLASS_CUDA_DRIVER_WRAPPER_CALL(func) cr_driver::call_##func

// Runs `make` (which encodes tensor maps) and returns 0, or CR_STATUS_TMA_ENCODE + the CUresult of the
// first encode that failed in it.
template <class Make>
int cr_encode_check(Make&& make) {
  cr_driver::first_error = CUDA_SUCCESS;
  make();
  CUresult error = cr_driver::first_error;
  cr_driver::first_error = CUDA_SUCCESS;
  return error == CUDA_SUCCESS ? 0 : CR_STATUS_TMA_ENCODE + int(error);
}
