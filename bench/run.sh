#!/usr/bin/env bash
# Runs every benchmark of bench/ against an existing build and prints one line per target:
#   <name> <measured ratio> <target> PASS|FAIL
#
#   bench/run.sh [--quick]      # --quick: fewer shapes and repetitions (~2.5 minutes on 2 cores; the GPU check runs it)
#
# Builds nothing: expects the benchmark binaries in $TEMPERED_BUILD_DIR (default build/; build them with
# -DTEMPERED_BENCH=ON). TEMPERED_DEVICE: cpu (default) or cuda. TEMPERED_BENCH_OUT: folder for each benchmark's
# full output (<name>.log) and summary table (<name>.txt); default a new temporary folder, named on stderr.
# Exit status 0 when every target passes. Benchmarks assert nothing in the test suite: only this script judges.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
QUICK=()
[ "${1:-}" = "--quick" ] && QUICK=(--quick)
BUILD=${TEMPERED_BUILD_DIR:-build}
DEVICE=${TEMPERED_DEVICE:-cpu}
OUT=${TEMPERED_BENCH_OUT:-$(mktemp -d /tmp/tempered-bench.XXXXXX)}
mkdir -p "$OUT"
echo "bench/run.sh: build $BUILD, device $DEVICE, logs in $OUT" >&2
status=0

# run_bench NAME COMMAND...: runs COMMAND (plus --quick), its output in $OUT/NAME.log; prints its TARGET lines.
run_bench() {
  local name=$1
  shift
  { echo "### $* ${QUICK[*]}"; echo "### load before: $(cat /proc/loadavg)"; } >"$OUT/$name.log"
  "$@" "${QUICK[@]}" >>"$OUT/$name.log" 2>&1
  local rc=$?
  echo "### rc $rc; load after: $(cat /proc/loadavg)" >>"$OUT/$name.log"
  if ! grep -q '^TARGET ' "$OUT/$name.log"; then
    echo "$name - - FAIL (rc $rc, no result; see $OUT/$name.log)"
    status=1
    return
  fi
  grep '^TARGET ' "$OUT/$name.log" | cut -d' ' -f2-
  grep -q '^TARGET .* FAIL$' "$OUT/$name.log" && status=1
}

# One line per benchmark binary; each prints the TARGET lines of the targets it measures.
run_bench loss "$BUILD/bench/loss_bench" --device="$DEVICE" --out="$OUT/loss.txt" --benchmark_color=false
# Training speed and the gather: CPU targets (2 cores), driven by bench/train_bench.py.
[ "$DEVICE" = cpu ] && run_bench gather /usr/bin/python3 bench/train_bench.py gather --build "$BUILD"
[ "$DEVICE" = cpu ] && run_bench train_vs_pytorch /usr/bin/python3 bench/train_bench.py train_vs_pytorch --build "$BUILD"
[ "$DEVICE" = cpu ] && run_bench scaling_2rank /usr/bin/python3 bench/train_bench.py scaling_2rank --build "$BUILD"
[ "$DEVICE" = cpu ] && run_bench compute_fraction /usr/bin/python3 bench/train_bench.py compute_fraction --build "$BUILD"
# The input pipeline: CPU targets, driven by bench/input_bench.py (torchvision's pipeline is the baseline).
[ "$DEVICE" = cpu ] && run_bench input_pipeline /usr/bin/python3 bench/input_bench.py input_pipeline --build "$BUILD"
[ "$DEVICE" = cpu ] && run_bench input_memory /usr/bin/python3 bench/input_bench.py input_memory --build "$BUILD"
[ "$DEVICE" = cpu ] && run_bench input_wait /usr/bin/python3 bench/input_bench.py input_wait --build "$BUILD"

exit $status
