#!/usr/bin/env bash
# The libFuzzer targets of tests/fuzz (one per parser of user input), under ASan + UBSan: builds them, replays every
# regression input kept in tests/fuzz/regressions/<target>/, then fuzzes each target for a bounded time from the
# seeds of tests/fuzz/seeds.py, two targets at a time. Fails on any crash, sanitizer report, leak, timeout or an
# exception other than UserError escaping a parser; the input that did it is left in BUILD/fuzz/<target>/ and the
# log says which. Fix the bug, then keep the input: cp BUILD/fuzz/<target>/crash-* tests/fuzz/regressions/<target>/
#   tests/fuzz.sh [seconds per target, default 20]
# TEMPERED_FUZZ_SEED: libFuzzer's -seed (default 1; 0 = random).
# TEMPERED_FUZZ_BUILD: the build directory (default build-fuzz; tests/sanitize.sh shares its build-asan).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/sanitizer_common.sh
seconds=${1:-20}
build=${TEMPERED_FUZZ_BUILD:-build-fuzz}
jobs=${TEMPERED_FUZZ_JOBS:-$(nproc)}
# A fixed seed makes a run from the same corpus the same sequence of inputs (a slower machine runs a prefix of it): a
# failure CI (empty corpus) reports replays here; TEMPERED_FUZZ_SEED=0 lets libFuzzer pick one, for exploring.
seed=${TEMPERED_FUZZ_SEED:-1}

sanitizer_configure "$build"
cmake --build "$build" -j"$jobs" --target tempered_fuzzers
targets=($(fuzz_targets "$build"))
work=$build/fuzz
rm -rf "$work/seeds" "$work/tmp"
mkdir -p "$work/tmp"
export TMPDIR=$(cd "$work/tmp" && pwd)  # the directory-based targets write their inputs here
/usr/bin/python3 tests/fuzz/seeds.py "$work/seeds"

# Leak checking stays on (a parser that leaks on bad input is a bug). The first inputs pay for LibTorch's lazy
# initialisation; -timeout is per input and generous because ASan on 2 shared cores is slow.
export ASAN_OPTIONS="detect_leaks=1"
fuzz_one() {
  local target=$1 name=${1%_fuzzer} dir=$work/${1%_fuzzer}
  mkdir -p "$dir/corpus"
  local options=(-seed="$seed" -timeout=25 -rss_limit_mb=2048 -artifact_prefix="$dir/" -print_final_stats=1)
  [ -f "$work/seeds/$name.dict" ] && options+=(-dict="$work/seeds/$name.dict")
  local regressions=() file
  for file in tests/fuzz/regressions/"$name"/*; do [ -f "$file" ] && regressions+=("$file"); done
  if [ ${#regressions[@]} -gt 0 ]; then
    "$build/tests/fuzz/$target" "${options[@]}" "${regressions[@]}" >"$dir/regressions.log" 2>&1 ||
      { echo "fuzz: $target fails on a kept regression input:"; tail -40 "$dir/regressions.log"; return 1; }
  fi
  "$build/tests/fuzz/$target" "${options[@]}" -max_total_time="$seconds" "$dir/corpus" "$work/seeds/$name" \
    >"$dir/fuzz.log" 2>&1 ||
    { echo "fuzz: $target FAILED (input in $dir/):"; tail -60 "$dir/fuzz.log"; return 1; }
  echo "fuzz: $target ok: ${#regressions[@]} regression inputs, $(grep -o 'stat::number_of_executed_units: [0-9]*' \
    "$dir/fuzz.log" | grep -o '[0-9]*$') runs in ${seconds}s, corpus $(ls "$dir/corpus" | wc -l) inputs"
}

start=$(date +%s)
failed=0
running=0
for target in "${targets[@]}"; do
  fuzz_one "$target" &
  if (( ++running >= jobs )); then wait -n || failed=1; running=$((running - 1)); fi
done
while (( running > 0 )); do wait -n || failed=1; running=$((running - 1)); done
echo "fuzz: ${#targets[@]} targets x ${seconds} s, $jobs at a time: $(($(date +%s) - start)) s"
exit $failed
