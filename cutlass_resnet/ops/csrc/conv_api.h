// Torch-free C interface between the binding (binding.cpp) and the CUTLASS kernels (k80_*.cu).
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#include "kinds.h"  // CrKind and its traits, generated from cutlass_resnet/ops/kernels.py

#ifdef __cplusplus
extern "C" {
#endif

// One 2-D cross-correlation, NHWC activations, KRSC filters, NPQK output.
typedef struct {
  int N, H, W, C, K, R, S, P, Q;
  int pad_h, pad_w, stride_h, stride_w, dil_h, dil_w;
  int groups;   // C and K split into this many groups; the filter is (K, C / groups, R, S)
  int split_k;  // split-K kernels: slices of the GEMM K (R*S*C) summed by a reduction; 1 for the others
} CrProblem;

// y = act(conv(x, w) + bias[k] + residual), act(z) = z > 0 ? z : leaky_alpha * z,
// so leaky_alpha = 0 is ReLU and 1 the identity. bias and residual may be null
// (grouped kernels take no residual). int8 kernels (CR_INT8): bias is alpha and beta in float32 ((K, 2) pairs for
// the Sm80 kernels, (2, K) rows for Hopper's) and
// y = saturate(round(act(float(acc) * alpha[k] + beta[k] + float(residual) * gamma))), act ReLU or the identity.
typedef struct {
  const void* x;
  const void* w;
  const void* bias;
  const void* residual;
  void* y;
  float leaky_alpha;
  cudaStream_t stream;
  float* workspace;  // split-K kernels: split_k * N*P*Q*K floats of partial sums; null for the others
  int accepted;      // nonzero: the caller has had can_implement accept this very problem, run need not ask again
  float gamma;       // int8 kernels: the residual's scale; unused by the others
} CrOperands;

enum CrDtype { CR_FLOAT16 = 0, CR_BFLOAT16 = 1, CR_INT8 = 2 };

// What one launch of a kernel on a problem does, from the kernel's own parameters (host-only).
typedef struct {
  int64_t ctas;             // threadblocks launched
  int mainloop_iterations;  // k-iterations of the main loop per threadblock
  int shared_memory;        // bytes of shared memory per threadblock
  int threads;              // threads per threadblock
  int parameter_bytes;      // the kernel parameters a launch passes (copied with every launch)
} CrLaunchShape;

typedef struct {
  const char* name;  // e.g. "sm80_f16_t128x128_64x3", named for its tile shape
  int dtype;         // CrDtype
  int min_sm;        // lowest compute capability (x10) it runs on
  int alignment;     // elements per access of x and w
  int kind;          // CrKind
  int tile_m, tile_n, tile_k, stages;
  // Host-only: CUTLASS can_implement on the problem (no device, no pointers). 0 = accepted.
  int (*can_implement)(const CrProblem*);
  // Checks can_implement again, then launches on ops->stream. 0 = launched.
  int (*run)(const CrProblem*, const CrOperands*);
  // Host-only: the launch shape of an accepted problem. 0 = filled in.
  int (*describe)(const CrProblem*, CrLaunchShape*);
  // Host-only, operands in host memory: CUTLASS's host reference convolution on the arguments a
  // launch would get, with this kernel's epilogue (the emulated GPU's launch).
  int (*host_reference)(const CrProblem*, const CrOperands*);
  // Host-only: everything run does but the launch (checks, Params, TMA descriptors). 0 = ready.
  int (*prepare)(const CrProblem*, const CrOperands*);
} CrKernel;

// An NCHW tensor of any strides as NHWC with C_out >= C channels, the source's channels at an offset of
// ((n / group_n) % merge) * C and zeros elsewhere: the stem's input and filter padded to 4 channels (merge 1),
// or a grouped conv's filter (K, C, R, S) as merge groups' block-diagonal filter (K, merge * C, R, S).
typedef struct {
  int N, C, H, W, C_out;
  int64_t stride_n, stride_c, stride_h, stride_w;  // of the source, in elements
  int group_n, merge;                              // merge 1: no offset
} CrPack;

// Max-pool of NHWC x (N, H, W, C) into NHWC y (N, P, Q, C), padding never the maximum, NaN propagated.
typedef struct {
  int N, H, W, C, P, Q, R, S, stride_h, stride_w, pad_h, pad_w;
} CrPool;

// fp16 or bf16 (CrDtype); on the host (host != 0: host memory, for the tests) or on `stream`. 0 = done.
int cr_pack_channels(int dtype, const CrPack* p, const void* src, void* dst, int host, cudaStream_t stream);
int cr_max_pool(int dtype, const CrPool* p, const void* x, void* y, int host, cudaStream_t stream);

int cr_kernel_count(void);
const CrKernel* cr_kernel(int index);
// A readable name for a status returned by can_implement or run.
const char* cr_status_string(int status);
// The epilogue's activation (CrLeakyReLU), on the host: what every kernel applies to acc + bias + residual.
float cr_activation(float value, float leaky_alpha);

#define CR_STATUS_WORKSPACE_NEEDED 1000
#define CR_STATUS_TMA_LIMIT 1001  // outside what the TMA im2col descriptor encodes (e.g. stride > 8)
#define CR_STATUS_CUDA_ERROR 2000  // + the cudaError_t of a failed launch
#define CR_STATUS_TMA_ENCODE 3000  // + the CUresult of a failed tensor-map encode (3.x kernels)

// Tests only: replace the driver's tensor-map encoders (cuTensorMapEncodeIm2col, cuTensorMapEncodeTiled,
// with their driver signatures) by these; null restores the driver's.
void cr_testing_set_tensor_map_encoders(void* im2col, void* tiled);

#ifdef __cplusplus
}
#endif
