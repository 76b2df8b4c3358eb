#!/bin/bash
# Builds comm/ (all but the MPI backend) against the LibTorch and NCCL of the pip torch on a GPU machine and runs
# nccl_world1_check. Usage, from the repository root: bash comm/gpu_check/run.sh
set -euo pipefail
PY=${PYTHON:-python3}
TORCH=$($PY -c 'import os, torch; print(os.path.dirname(torch.__file__))')
ABI=$($PY -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
CUDA=${CUDA_HOME:-/usr/local/cuda}
# NCCL and the CUDA runtime of the pip torch (its nvidia-* wheels), else CUDA_HOME's.
find_in_wheels() {
  $PY - "$1" <<'PYEOF' || true
import glob, os, sys, torch
site = os.path.dirname(os.path.dirname(torch.__file__))
hits = sorted(glob.glob(os.path.join(site, "nvidia", "**", sys.argv[1]), recursive=True))
print(hits[0] if hits else "")
PYEOF
}
NCCL_H=$(find_in_wheels nccl.h); NCCL_H=${NCCL_H:-$CUDA/include/nccl.h}
NCCL_LIB=$(find_in_wheels 'libnccl.so*'); NCCL_LIB=${NCCL_LIB:-$(ls $CUDA/lib64/libnccl.so* | head -1)}
CUDART=$(find_in_wheels 'libcudart.so*'); CUDART=${CUDART:-$(ls $CUDA/lib64/libcudart.so* | head -1)}
echo "nccl.h: $NCCL_H  libnccl: $NCCL_LIB  libcudart: $CUDART"
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "nccl", torch.cuda.nccl.version())'
OUTDIR=/tmp/gpu_check_build
mkdir -p "$OUTDIR"
FLAGS="-std=c++17 -O1 -Wall -Wextra -Wno-unused-parameter -D_GLIBCXX_USE_CXX11_ABI=$ABI -I. -I$(dirname $NCCL_H)
       -I$CUDA/include -isystem $TORCH/include -isystem $TORCH/include/torch/csrc/api/include"
pids=()
for src in comm/comm.cc comm/gather.cc comm/reducer.cc comm/nccl_backend.cc comm/gpu_check/nccl_world1_check.cc; do
  g++ $FLAGS -c "$src" -o "$OUTDIR/$(basename "$src").o" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
g++ "$OUTDIR"/*.o -o "$OUTDIR/nccl_world1_check" -L"$TORCH/lib" -Wl,-rpath,"$TORCH/lib" \
    -Wl,--no-as-needed -ltorch -ltorch_cuda -ltorch_cpu -lc10_cuda -lc10 -Wl,--as-needed "$NCCL_LIB" \
    "$CUDART" -Wl,-rpath,"$(dirname "$NCCL_LIB")":"$(dirname "$CUDART")"
NCCL_DEBUG=${NCCL_DEBUG:-WARN} "$OUTDIR/nccl_world1_check"
