// Torch-free C interface between the binding (binding.cpp) and the CUTLASS kernels (k80_*.cu).
#pragma once
#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

// One 2-D cross-correlation, NHWC activations, KRSC filters, NPQK output.
typedef struct {
  int N, H, W, C, K, R, S, P, Q;
  int pad_h, pad_w, stride_h, stride_w, dil_h, dil_w;
  int groups;  // C and K split into this many groups; the filter is (K, C / groups, R, S)
} CrProblem;

// y = act(conv(x, w) + bias[k] + residual), act(z) = z > 0 ? z : leaky_alpha * z,
// so leaky_alpha = 0 is ReLU and 1 the identity. bias and residual may be null
// (grouped kernels take no residual).
typedef struct {
  const void* x;
  const void* w;
  const void* bias;
  const void* residual;
  void* y;
  float leaky_alpha;
  cudaStream_t stream;
} CrOperands;

enum CrDtype { CR_FLOAT16 = 0, CR_BFLOAT16 = 1 };
enum CrKind {
  CR_REGULAR = 0,  // groups == 1, C a multiple of the alignment
  CR_STEM = 1,     // fixed-channels iterator: C == alignment (the padded 3-channel stem)
  CR_GROUPED = 2,  // single-group mode: C / groups a multiple of the alignment, K / groups of tile_n
  CR_REGULAR_SM90A = 3,  // Hopper only (sm_90a code): groups == 1, C and K multiples of 8
};

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
} CrKernel;

int cr_kernel_count(void);
const CrKernel* cr_kernel(int index);
// A readable name for a status returned by can_implement or run.
const char* cr_status_string(int status);

#define CR_STATUS_WORKSPACE_NEEDED 1000
#define CR_STATUS_CUDA_ERROR 1001

#ifdef __cplusplus
}
#endif
