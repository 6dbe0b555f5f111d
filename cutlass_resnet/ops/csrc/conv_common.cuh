// What every kernel wrapper does the same way: CUTLASS's host-only checks, then one launch.
#pragma once
#include "conv_api.h"
#include "cutlass/cutlass.h"
#include "cutlass/conv/conv2d_problem_size.h"

// 0 when CUTLASS accepts the arguments and needs no workspace (no split-k), else a status.
template <class Op>
int cr_check(typename Op::Arguments const& args) {
  cutlass::Status st = Op::can_implement(args);
  if (st != cutlass::Status::kSuccess) return int(st);
  return Op::get_workspace_size(args) == 0 ? 0 : CR_STATUS_WORKSPACE_NEEDED;
}

// Initialize and run on `stream`; call only with arguments cr_check accepted.
template <class Op>
int cr_launch(typename Op::Arguments const& args, cudaStream_t stream) {
  Op op;
  cutlass::Status s = op.initialize(args, nullptr, stream);
  if (s != cutlass::Status::kSuccess) return int(s);
  s = op.run(stream);
  if (s != cutlass::Status::kSuccess) return int(s);
  return cudaPeekAtLastError() == cudaSuccess ? 0 : CR_STATUS_CUDA_ERROR;
}

// The CUTLASS 2.x problem of a CrProblem.
inline cutlass::conv::Conv2dProblemSize cr_problem_size(const CrProblem& p) {
  return cutlass::conv::Conv2dProblemSize(p.N, p.H, p.W, p.C, p.K, p.R, p.S, p.P, p.Q, p.pad_h, p.pad_w,
                                          p.stride_h, p.stride_w, p.dil_h, p.dil_w,
                                          cutlass::conv::Mode::kCrossCorrelation, 1 /*split_k_slices*/, p.groups);
}
