#!/usr/bin/env bash
# The GPU check, in one command on a lent GPU machine (bench/README.md "GPU check" gives the exact call):
#   bash bench/gpu_check.sh            # from the repo root, with $OUT set and .gpu/ carried (bench/gpu_deps.sh)
# Builds Tempered against the image's pip CUDA LibTorch with NCCL (-DTEMPERED_CUDA=ON -DTEMPERED_NCCL=ON), runs the
# unit tests and the 1-rank MPI tests with the GPU visible, a 1-rank Fashion-MNIST training run on CUDA in fp32
# (under mpirun -np 1) and in bf16 (a singleton, no mpirun), the loss benchmark if bench/ has one, and the 2-4 rank
# MPI tests with the GPU hidden (2 ranks cannot share one GPU under NCCL), in this order: build, fp32 run, tests,
# bf16 run, benchmark, multi-rank tests. Each phase is timed and bounded, one failure does not stop the others, and
# the whole stays inside GPU_CHECK_BUDGET seconds (default 470; later phases are cut short or skipped first).
# Then issue 32's Part B: ResNet-18 at global batch 512 in fp32 and bf16 against torchvision's (resnet18_reference.py)
# with the GPU's busy fraction, as TARGET lines in summary.txt.
#
# Files written to $OUT (at most 8, all at its top level, so that the run tool brings every one back):
#   summary.txt env.log build.log ctest.log train.log result-fp32.json result-bf16.json bench.log
#
# Knobs: GPU_CHECK_CPU_DRYRUN=1 (here, no GPU: CPU LibTorch, no CUDA/NCCL, short CPU run, -j2),
#        GPU_CHECK_BUDGET (s), GPU_CHECK_BUILD_CAP (s, default 330), GPU_CHECK_JOBS, GPU_CHECK_CTEST_JOBS, GPU_CHECK_BUILD_DIR,
#        GPU_CHECK_SKIP (comma list of: ctest,mpi,train,bf16,resnet,bench), GPU_CHECK_TARGETS (build only these),
#        GPU_CHECK_CTEST_REGEX (run only the matching unit/1-rank tests).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
REPO=$PWD
T0=$(date +%s)
DRY=${GPU_CHECK_CPU_DRYRUN:-0}
BUDGET=${GPU_CHECK_BUDGET:-470}
DEADLINE=$((T0 + BUDGET))
OUT=${OUT:-/tmp/gpu-check-out}
mkdir -p "$OUT"
if [ "$DRY" = 1 ]; then
  BUILD=${GPU_CHECK_BUILD_DIR:-build-gpucheck-dry}
  JOBS=${GPU_CHECK_JOBS:-2}
  CTEST_JOBS=${GPU_CHECK_CTEST_JOBS:-1}
else
  BUILD=${GPU_CHECK_BUILD_DIR:-build-gpu}
  JOBS=${GPU_CHECK_JOBS:-16}
  CTEST_JOBS=${GPU_CHECK_CTEST_JOBS:-4}
fi
SKIP=",${GPU_CHECK_SKIP:-},"
SUMMARY=$OUT/summary.txt
ENVLOG=$OUT/env.log
BUILDLOG=$OUT/build.log
CTESTLOG=$OUT/ctest.log
TRAINLOG=$OUT/train.log
BENCHLOG=$OUT/bench.log
: >"$SUMMARY"

now() { date +%s; }
left() { echo $((DEADLINE - $(now))); }
# cap SECONDS: the smaller of SECONDS and what the budget has left (minus a 15 s reserve for the summary), >= 0.
# (timeout 0 would mean no limit: never below 1.)
cap() { local l=$(($(left) - 15)); [ "$l" -lt 1 ] && l=1; [ "$1" -lt "$l" ] && echo "$1" || echo "$l"; }
note() { echo "$*" | tee -a "$SUMMARY"; }
skipped() { case "$SKIP" in *",$1,"*) return 0 ;; esac; return 1; }
PHASE_T=0
phase() { PHASE_T=$(now); echo; echo "=== [$(($(now) - T0))s] $*"; }
done_phase() { note "$(printf '%-34s %-6s %4ds' "$1" "$2" $(($(now) - PHASE_T)))"; }

# ---------------------------------------------------------------------------------------------------------------
phase "environment"
# shellcheck source=bench/gpu_env.sh
if ! source bench/gpu_env.sh; then
  note "gpu_env.sh failed: is .gpu/ carried? (run bench/gpu_deps.sh here and pass carry [\".gpu\"])"
  exit 1
fi
{
  echo "date: $(date -u)  host: $(hostname)  cores: $(nproc)  dry run: $DRY"
  echo "--- nvidia-smi"; timeout 20 nvidia-smi 2>&1 || echo "(no nvidia-smi)"
  echo "--- tools"; uname -a; cat /etc/os-release 2>/dev/null | head -2
  g++ --version 2>&1 | head -1; cmake --version 2>&1 | head -1; ninja --version 2>&1 | head -1
  nvcc --version 2>&1 | tail -2; python3 --version 2>&1
  echo "--- env"; tempered_gpu_env_report
  echo "--- torch (python3)"
  timeout 60 python3 - <<'EOF' 2>&1
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cxx11abi", torch._C._GLIBCXX_USE_CXX11_ABI)
print("cmake_prefix_path", torch.utils.cmake_prefix_path)
print("cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
    print("nccl", torch.cuda.nccl.version())
    print("bf16 supported", torch.cuda.is_bf16_supported())
EOF
  if [ -n "$TORCH_DIR" ]; then
    echo "--- LibTorch exports (a clash with the carried protobuf/glog/gflags would show here)"
    for l in "$TORCH_DIR"/lib/libtorch_cpu.so "$TORCH_DIR"/lib/libc10.so; do
      [ -f "$l" ] || continue
      echo "$(basename "$l"): protobuf $(nm -D --defined-only "$l" 2>/dev/null | grep -c '_ZN6google8protobuf')" \
           "glog $(nm -D --defined-only "$l" 2>/dev/null | grep -c '_ZN6google.*LogMessage')" \
           "gflags $(nm -D --defined-only "$l" 2>/dev/null | grep -c '_ZN6google.*FlagRegisterer')"
    done
    grep -E "define C10_USE_(GLOG|GFLAGS)" "$TORCH_DIR"/include/c10/macros/cmake_macros.h 2>/dev/null || echo "c10: no glog, no gflags"
  fi
  echo "--- what the image already has"
  ldconfig -p 2>/dev/null | grep -E "libmpi\.|libprotobuf\.|libgflags|libglog|libz\.so|libudev|libmunge|liblzma|libnccl" || true
  ls /usr/include/zlib.h 2>&1
  echo "--- carried Open MPI"
  timeout 30 mpirun -np 2 hostname 2>&1; echo "mpirun -np 2 hostname: rc=$?"
  # data_test and datasets_test failed in mkdtemp under temp_directory_path() on the 2026-11-27 image: what it sees.
  echo "--- temp directory"; echo "TMPDIR=${TMPDIR-<unset>}"; ls -ld "${TMPDIR:-/tmp}" /tmp 2>&1; df -h /tmp 2>&1 | tail -1
  probe=$(mktemp -d "${TMPDIR:-/tmp}/tempered_probe_XXXXXX" 2>&1) && rmdir "$probe" && echo "mktemp -d: ok" ||
    echo "mktemp -d: failed: $probe"
} >"$ENVLOG" 2>&1
grep -E "^(torch|device|nccl|cuda available|NVIDIA-SMI)" "$ENVLOG" | head -6
done_phase "environment" "ok"

# ---------------------------------------------------------------------------------------------------------------
phase "configure + build ($BUILD, -j$JOBS)"
R=$TEMPERED_GPU_ROOT
L=$R/usr/lib/x86_64-linux-gnu
CMAKE_ARGS=(-S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTEMPERED_TESTS=ON -DTEMPERED_BENCH=ON
  "-DCMAKE_PREFIX_PATH=$CMAKE_PREFIX_PATH"
  "-DProtobuf_PROTOC_EXECUTABLE=$R/usr/bin/protoc" "-DProtobuf_INCLUDE_DIR=$R/usr/include"
  "-DProtobuf_LIBRARY=$L/libprotobuf.so"
  "-DMPI_CXX_COMPILER=$R/usr/bin/mpicxx" "-DMPI_C_COMPILER=$R/usr/bin/mpicc" "-DMPIEXEC_EXECUTABLE=$R/usr/bin/mpiexec"
  "-DGTest_DIR=$L/cmake/GTest" "-Dgflags_DIR=$L/cmake/gflags" "-Dglog_DIR=$L/cmake/glog"
  "-Dnlohmann_json_DIR=$R/usr/share/cmake/nlohmann_json" "-DZLIB_INCLUDE_DIR=$R/usr/include")
[ -d "$L/cmake/benchmark" ] && CMAKE_ARGS+=("-Dbenchmark_DIR=$L/cmake/benchmark")
# zlib: the image's libz.so.1 (zlib1g is in every image; its -dev link may not be).
if [ ! -e /usr/lib/x86_64-linux-gnu/libz.so ] && [ ! -e /usr/lib64/libz.so ]; then
  ZLIB_SO=$(ldconfig -p 2>/dev/null | awk '$1 == "libz.so.1" && /x86-64/ {print $NF; exit}')
  [ -n "$ZLIB_SO" ] && CMAKE_ARGS+=("-DZLIB_LIBRARY=$ZLIB_SO")
fi
command -v ninja >/dev/null 2>&1 && CMAKE_ARGS+=(-G Ninja)
if [ "$DRY" = 1 ]; then
  CMAKE_ARGS+=(-DTEMPERED_CUDA=OFF -DTEMPERED_NCCL=OFF)
  export CCACHE_BASEDIR=$REPO  # reuse the other build folders' ccache entries here
else
  # The image has neither matio nor OpenCV: SVHN and image folders are CPU-side readers, checked in CI.
  CMAKE_ARGS+=(-DTEMPERED_DATASETS=OFF -DTEMPERED_CUDA=ON -DTEMPERED_NCCL=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DUSE_SYSTEM_NVTX=ON
    "-DNCCL_INCLUDE_DIR=$NCCL_INCLUDE_DIR" "-DNCCL_LIBRARY=$NCCL_LIBRARY")
  [ -n "${CUDACXX:-}" ] && CMAKE_ARGS+=("-DCMAKE_CUDA_COMPILER=$CUDACXX")
  [ -n "${CUDA_HOME:-}" ] && CMAKE_ARGS+=("-DCUDA_TOOLKIT_ROOT_DIR=$CUDA_HOME")
  for d in "${CUDA_HOME:-/usr/local/cuda}/include" "${CUDA_HOME:-/usr/local/cuda}"/targets/*/include \
           "$TEMPERED_SITE_PACKAGES"/nvidia/nvtx/include "$TEMPERED_SITE_PACKAGES"/nvidia/cu13/include; do
    [ -d "$d/nvtx3" ] && { CMAKE_ARGS+=("-Dnvtx3_dir=$d"); break; }
  done
  # cuDNN / cuSPARSELt of the pip wheels (LibTorch's CMake looks for them; pip ships only versioned .so files).
  if [ -n "$TEMPERED_SITE_PACKAGES" ]; then
    # CUDA libraries LibTorch's targets link (CUDA::cublas, ...): where the toolkit lacks one, the pip wheel's copy.
    for lib in cudart cublas cublasLt cufft curand cusolver cusparse nvrtc nvJitLink cupti cufile; do
      found=""
      for d in "${CUDA_HOME:-/usr/local/cuda}"/lib64 "${CUDA_HOME:-/usr/local/cuda}"/lib "${CUDA_HOME:-/usr/local/cuda}"/targets/*/lib; do
        [ -e "$d/lib$lib.so" ] && { found=1; break; }
      done
      [ -n "$found" ] && continue
      l=$(find "$TEMPERED_SITE_PACKAGES/nvidia" -maxdepth 4 -name "lib$lib.so*" 2>/dev/null | sort | head -1)
      var=$lib; [ "$lib" = cufile ] && var=cuFile
      [ -n "$l" ] && CMAKE_ARGS+=("-DCUDA_${var}_LIBRARY=$l")
    done
    h=$(find "$TEMPERED_SITE_PACKAGES/nvidia" -maxdepth 4 -name cudnn.h 2>/dev/null | head -1)
    l=$(find "$TEMPERED_SITE_PACKAGES/nvidia" -maxdepth 4 -name 'libcudnn.so*' 2>/dev/null | sort | head -1)
    [ -n "$h" ] && [ -n "$l" ] && CMAKE_ARGS+=("-DCUDNN_INCLUDE_PATH=$(dirname "$h")" "-DCUDNN_LIBRARY_PATH=$l")
    h=$(find "$TEMPERED_SITE_PACKAGES/nvidia" -maxdepth 4 -name cusparseLt.h 2>/dev/null | head -1)
    l=$(find "$TEMPERED_SITE_PACKAGES/nvidia" -maxdepth 4 -name 'libcusparseLt.so*' 2>/dev/null | sort | head -1)
    [ -n "$h" ] && [ -n "$l" ] && CMAKE_ARGS+=("-DCUSPARSELT_INCLUDE_PATH=$(dirname "$h")" "-DCUSPARSELT_LIBRARY_PATH=$l")
  fi
fi
{
  echo "cmake ${CMAKE_ARGS[*]}"
  timeout "$(cap 150)" cmake "${CMAKE_ARGS[@]}"
} >"$BUILDLOG" 2>&1
CONF_RC=$?
if [ "$CONF_RC" -ne 0 ] && [ "$DRY" != 1 ] && [ "$(left)" -gt 200 ]; then
  # Second chance without the NCCL backend: the CUDA build and a 1-rank CUDA run still say something.
  echo "STEP FAILED: configure with NCCL (rc $CONF_RC); the end of build.log:"; tail -25 "$BUILDLOG"
  note "configure with NCCL: FAIL, retrying with -DTEMPERED_NCCL=OFF"
  { echo; echo "### retry: cmake ${CMAKE_ARGS[*]} -DTEMPERED_NCCL=OFF"
    rm -f "$BUILD/CMakeCache.txt"
    timeout "$(cap 150)" cmake "${CMAKE_ARGS[@]}" -DTEMPERED_NCCL=OFF; } >>"$BUILDLOG" 2>&1
  CONF_RC=$?
fi
if [ "$CONF_RC" -ne 0 ]; then
  echo "STEP FAILED: configure (rc $CONF_RC); the end of build.log:"; tail -40 "$BUILDLOG"
  done_phase "configure" "FAIL"
else
  grep -E "Caffe2: CUDA|PyTorch: CUDA|Found (CUDA|Torch|MPI|Protobuf|GTest|nvtx3|NCCL|CUDNN)|CUDA detected|nvtx" "$BUILDLOG" | head -12
  done_phase "configure" "ok"
  PHASE_T=$(now)
  timeout "$(cap "${GPU_CHECK_BUILD_CAP:-330}")" cmake --build "$BUILD" -j"$JOBS" ${GPU_CHECK_TARGETS:+--target $GPU_CHECK_TARGETS} >>"$BUILDLOG" 2>&1
  B_RC=$?
  if [ "$B_RC" -eq 0 ]; then
    done_phase "build" "ok"
  else
    echo "STEP FAILED: build (rc $B_RC); the errors in build.log:"
    grep -E "error|FAILED|undefined reference" "$BUILDLOG" | head -40
    tail -15 "$BUILDLOG"
    done_phase "build" "FAIL"
    # Keep going with whatever targets did build (tempered-train may well be there).
    timeout "$(cap 120)" cmake --build "$BUILD" -j"$JOBS" ${GPU_CHECK_TARGETS:+--target $GPU_CHECK_TARGETS} -- -k 0 >>"$BUILDLOG" 2>&1 || true
  fi
fi
[ -x "$BUILD/trainer/tempered-train" ] && echo "tempered-train: built" || echo "tempered-train: NOT built"

# ---------------------------------------------------------------------------------------------------------------
# Training runs: out_dir outside $OUT (checkpoints and event files would exceed the 8 files that come back).
run_train() {  # NAME MODE(mpirun|single) EXTRA_CONFIG_LINES
  local name=$1 mode=$2 extra=$3 dir=/tmp/gpu-check-$1 cfg=/tmp/gpu-check-$1.pbtxt rc
  rm -rf "$dir"
  printf '%b' "$extra" >"$cfg"
  local args=(--config "$cfg" --data_dir "$TEMPERED_DATA_DIR" --out_dir "$dir" --epochs 1 --log_every_steps 50)
  if [ "$DRY" = 1 ]; then
    args+=(--max_steps 4 --train_subset 2048 --test_subset 512 --linear_epochs 0 --threads 2)
  else
    args+=(--threads 16)
  fi
  local cmd=("$BUILD/trainer/tempered-train" "${args[@]}")
  [ "$mode" = mpirun ] && cmd=(mpirun -np 1 "${cmd[@]}")
  phase "train $name ($mode): ${cmd[*]}"
  if [ "$(left)" -lt 45 ]; then note "train $name: skipped, budget spent"; return; fi
  { echo "### $name: ${cmd[*]}"; echo "### config:"; cat "$cfg"; } >>"$TRAINLOG"
  local t
  t=$(now)
  timeout "$(cap 130)" "${cmd[@]}" >>"$TRAINLOG" 2>&1
  rc=$?
  { echo "### $name: rc $rc, $(($(now) - t)) s"
    nvidia-smi --query-gpu=memory.used,memory.total --format=csv 2>/dev/null || true; } >>"$TRAINLOG" 2>&1
  tail -4 "$TRAINLOG"
  if [ -f "$dir/result.json" ]; then
    cp "$dir/result.json" "$OUT/result-$name.json"
    python3 - "$dir/result.json" "$name" <<'EOF' 2>&1 | tee -a "$SUMMARY"
import json, sys
r = json.load(open(sys.argv[1]))
e = (r.get("epochs") or [{}])[-1]
m = e.get("metrics") or {}
print(f"  {sys.argv[2]}: status {r.get('status')} {r.get('error', '')} world {r.get('world_size')} "
      f"loss {e.get('mean_loss')} img/s {e.get('images_per_second')} knn {m.get('knn_top1')} "
      f"linear {m.get('linear_top1')} uniformity {m.get('uniformity')} alignment {m.get('alignment')}")
EOF
  else
    echo "  (no result.json in $dir)"
  fi
  done_phase "train $name" "$([ $rc -eq 0 ] && echo ok || echo FAIL)"
}
: >"$TRAINLOG"
: >"$CTESTLOG"
HAVE_TRAIN=0
[ -x "$BUILD/trainer/tempered-train" ] && ! skipped train && HAVE_TRAIN=1
# The 1-rank training run with NCCL first (the heart of the check), then the tests, then bf16.
if [ "$HAVE_TRAIN" = 1 ]; then
  if [ "$DRY" = 1 ]; then run_train fp32 mpirun 'device: "cpu"\n'; else run_train fp32 mpirun 'device: "cuda"\n'; fi
fi

# ---------------------------------------------------------------------------------------------------------------
if ! skipped ctest && [ -f "$BUILD/CTestTestfile.cmake" ]; then
  phase "ctest: unit tests + 1-rank MPI tests, GPU visible"
  { echo "### ctest -L unit + mpi _np1 (GPU visible)"
    timeout "$(cap 100)" ctest --test-dir "$BUILD" --output-on-failure -j"$CTEST_JOBS" --timeout 90 -L "unit|mpi" -E "_np[2-9]$" ${GPU_CHECK_CTEST_REGEX:+-R "$GPU_CHECK_CTEST_REGEX"}
  } >>"$CTESTLOG" 2>&1
  rc=$?
  grep -E "tests passed|tests failed|\*\*\*|Failed|Not Run|Timeout" "$CTESTLOG" | head -20
  done_phase "ctest unit+np1 (GPU)" "$([ $rc -eq 0 ] && echo ok || echo FAIL)"
fi

# ---------------------------------------------------------------------------------------------------------------
if [ "$HAVE_TRAIN" = 1 ]; then
  if [ "$DRY" = 1 ]; then
    run_train single single 'device: "cpu"\n'
  else
    skipped bf16 || run_train bf16 single 'device: "cuda"\nbf16: true\n'
  fi
fi

# ---------------------------------------------------------------------------------------------------------------
# Issue 32 Part B: ResNet-18 (CIFAR stem), two views, global batch 512, fp32 and bf16, tempered-train against
# torchvision's ResNet-18 fed by DataLoader workers (bench/resnet18_reference.py), with the GPU's busy fraction:
# nvidia-smi's utilization.gpu (the share of each 100 ms sample in which a kernel ran), averaged over the middle 60%
# of each run's samples (past start-up and warm-up, before the end-of-run evaluation).
busy_of() {  # SAMPLES_FILE -> mean utilisation (0-1) of the middle 60% of the samples, or "nan"
  python3 -c '
import sys
v = [float(x) for x in open(sys.argv[1]).read().split() if x.replace(".", "").isdigit()]
m = v[len(v) // 5: len(v) - len(v) // 5]
print(f"{sum(m) / len(m) / 100:.2f}" if m else "nan")' "$1"
}
sampled() {  # SAMPLES_FILE CMD...: runs CMD while nvidia-smi samples the GPU every 100 ms
  local samples=$1 sampler=""
  shift
  : >"$samples"
  if [ "$DRY" != 1 ]; then
    nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 100 >"$samples" 2>/dev/null &
    sampler=$!
  fi
  "$@"
  local rc=$?
  [ -n "$sampler" ] && { kill "$sampler"; wait "$sampler"; } 2>/dev/null
  return $rc
}
# The steady rate of a tempered-train log: the median img/s of its last progress lines but the first.
steady_rate() {
  grep -oE "step [0-9]+/[0-9]+ .* [0-9]+ img/s" "$1" | tail -n +2 | tail -6 | grep -oE "[0-9]+ img/s" |
    awk '{print $1}' | sort -n | awk '{a[NR] = $1} END {print NR ? a[int((NR + 1) / 2)] : 0}'
}
compare_resnet18() {  # PRECISION (fp32|bf16)
  local precision=$1 dir=/tmp/gpu-check-r18-$1 log=/tmp/gpu-check-r18-$1.log device=cuda steps=70 rc
  local flag=()
  [ "$precision" = bf16 ] && flag=(--bf16)
  phase "resnet18 vs pytorch ($precision)"
  if [ "$(left)" -lt 120 ]; then note "resnet18 $precision: skipped, budget spent"; return; fi
  rm -rf "$dir"
  local ours=("$BUILD/trainer/tempered-train" --model resnet18 --norm batch --batch_size 512 --image_size 32
              --tau 0.2 --epochs 1 --log_every_steps 10 --linear_epochs 0 --test_subset 512
              --curve_train_samples 512 --data_dir "$TEMPERED_DATA_DIR" --out_dir "$dir" "${flag[@]}")
  local ref=(python3 bench/resnet18_reference.py --data_dir "$TEMPERED_DATA_DIR" "${flag[@]}")
  if [ "$DRY" = 1 ]; then  # the plumbing only: a few steps of a batch of 32 on the CPU
    ours+=(--device cpu --train_subset 2048 --batch_size 32 --max_steps 4 --log_every_steps 1 --threads 2)
    ref+=(--device cpu --subset 2048 --batch_size 32 --steps 2 --warmup 1 --workers 2)
  else
    ours+=(--device cuda --max_steps $((steps + 10)) --threads 16)
    ref+=(--device cuda --steps "$steps")
  fi
  echo "### resnet18 $precision, tempered: ${ours[*]}" >>"$TRAINLOG"
  sampled /tmp/gpu-busy-ours timeout "$(cap 100)" "${ours[@]}" >"$log" 2>&1
  rc=$?
  tail -5 "$log" >>"$TRAINLOG"
  local ours_rate ref_json ref_rate busy_ours busy_ref
  ours_rate=$(steady_rate "$log")
  echo "### resnet18 $precision, pytorch: ${ref[*]}" >>"$TRAINLOG"
  ref_json=$(sampled /tmp/gpu-busy-ref timeout "$(cap 120)" "${ref[@]}" 2>>"$TRAINLOG" | tail -1)
  echo "$ref_json" >>"$TRAINLOG"
  ref_rate=$(echo "$ref_json" | python3 -c "import json, sys; print(round(json.load(sys.stdin)['images_per_second']))" \
             2>/dev/null || echo 0)
  busy_ours=$(busy_of /tmp/gpu-busy-ours)
  busy_ref=$(busy_of /tmp/gpu-busy-ref)
  note "  resnet18 $precision: tempered $ours_rate img/s (rc $rc, GPU busy $busy_ours), pytorch $ref_rate img/s (GPU busy $busy_ref)"
  python3 -c '
import sys
ours, ref, busy, p = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
ratio = ours / ref if ref > 0 else float("nan")
b = float(busy)
verdict = {True: "PASS", False: "FAIL"}
print(f"TARGET resnet18_vs_pytorch_{p} {ratio:.2f} >=1.0 {verdict[ratio >= 1.0]}")
print(f"TARGET gpu_busy_{p} {b:.2f} >=0.9 {verdict[b >= 0.9]}")' \
    "$ours_rate" "$ref_rate" "$busy_ours" "$precision" | tee -a "$SUMMARY"
  done_phase "resnet18 vs pytorch $precision" "$([ $rc -eq 0 ] && [ "$ref_rate" != 0 ] && echo ran || echo FAIL)"
}
if [ "$HAVE_TRAIN" = 1 ] && ! skipped resnet; then
  compare_resnet18 fp32
  compare_resnet18 bf16
fi

# ---------------------------------------------------------------------------------------------------------------
: >"$BENCHLOG"
if ! skipped bench; then
  phase "loss benchmark"
  ran=0
  TEMPERED_DEVICE=cuda
  [ "$DRY" = 1 ] && TEMPERED_DEVICE=cpu
  export TEMPERED_BUILD_DIR=$REPO/$BUILD TEMPERED_DEVICE
  export TEMPERED_BENCH_OUT=/tmp/gpu-check-bench
  rm -rf "$TEMPERED_BENCH_OUT"; mkdir -p "$TEMPERED_BENCH_OUT"
  if [ -x "$BUILD/bench/loss_bench" ]; then
    # Issue 32 Part B: loss_time at every shape (not --quick) and the 1M-candidate memory bank case (--million).
    ran=1
    quick=(); [ "$DRY" = 1 ] && quick=(--quick)
    { echo "### loss_bench --device $TEMPERED_DEVICE --million ${quick[*]}"
      timeout "$(cap 150)" "$BUILD/bench/loss_bench" --device "$TEMPERED_DEVICE" --million --repetitions 3 \
        --benchmark_color=false "${quick[@]}"
      echo "### rc $?"; } >>"$BENCHLOG" 2>&1
    grep '^TARGET ' "$BENCHLOG" | tee -a "$SUMMARY"
  elif [ -f bench/run.sh ]; then
    ran=1
    { echo "### bench/run.sh --quick"; timeout "$(cap 150)" bash bench/run.sh --quick; echo "### rc $?"; } >>"$BENCHLOG" 2>&1
  fi
  # bench/run.sh presumably runs the binaries itself; without it, each loss benchmark binary with a --device flag.
  [ "$ran" = 1 ] || for b in $(find "$BUILD/bench" -maxdepth 2 -type f -executable -name '*loss*' 2>/dev/null | sort); do
    [ "$(left)" -gt 40 ] || break
    if timeout 20 "$b" --help 2>&1 | grep -qE -- '-?-device'; then
      ran=1
      { echo "### $b --device $TEMPERED_DEVICE"; timeout "$(cap 120)" "$b" --device "$TEMPERED_DEVICE"; echo "### rc $?"; } >>"$BENCHLOG" 2>&1
    else
      echo "### $b: no --device flag, not run" >>"$BENCHLOG"
    fi
  done
  for f in $(find "$TEMPERED_BENCH_OUT" -type f \( -name '*.json' -o -name '*.csv' -o -name '*.md' -o -name '*.txt' \) 2>/dev/null | head -20); do
    { echo "### file $f"; head -c 20000 "$f"; echo; } >>"$BENCHLOG"
  done
  tail -25 "$BENCHLOG"
  done_phase "loss benchmark" "$([ $ran = 1 ] && echo ran || echo none)"
fi

# ---------------------------------------------------------------------------------------------------------------
# 2-4 rank MPI tests with the GPU hidden: NCCL refuses two ranks on one GPU; their CPU path is what runs here.
if ! skipped ctest && ! skipped mpi && [ -f "$BUILD/CTestTestfile.cmake" ] && [ "$(left)" -gt 60 ]; then
  phase "ctest: 2-4 rank MPI tests (CPU, GPU hidden)"
  { echo "### ctest -L mpi -R _np[2-4] (CUDA_VISIBLE_DEVICES='')"
    CUDA_VISIBLE_DEVICES="" timeout "$(cap 150)" ctest --test-dir "$BUILD" --output-on-failure -j"$CTEST_JOBS" --timeout 140 -L mpi -R "_np[2-4]$"
  } >>"$CTESTLOG" 2>&1
  rc=$?
  grep -E "tests passed|tests failed" "$CTESTLOG" | tail -1
  done_phase "ctest mpi np2-4 (CPU)" "$([ $rc -eq 0 ] && echo ok || echo FAIL)"
fi

# ---------------------------------------------------------------------------------------------------------------
{ grep -E "tests passed|tests failed" "$CTESTLOG" 2>/dev/null
  grep -E "^\s+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Not Run|Subprocess aborted|Exception)\)" "$CTESTLOG" 2>/dev/null | head -20
  echo "total $(($(now) - T0)) s of a $BUDGET s budget; files in \$OUT: $(ls "$OUT" | tr '\n' ' ')"; } >>"$SUMMARY"
echo
echo "=== summary"
cat "$SUMMARY"
