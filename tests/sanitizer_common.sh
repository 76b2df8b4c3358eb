# Sourced by tests/sanitize.sh and tests/fuzz.sh: how the ASan + UBSan (+ libFuzzer) build is configured and run.

# One clang build serves the sanitized unit tests and the fuzz targets (TEMPERED_FUZZ implies TEMPERED_SANITIZE):
# every library is compiled once. -O1 is what the sanitizers recommend; -gline-tables-only gives file:line in their
# reports at a fraction of full debug info's compile time. No benchmarks, no NCCL compile check: not needed here.
# LibTorch, Open MPI, protobuf and glog are Debian's uninstrumented libraries: ASan sees our code, and their memory
# only through the malloc/free interceptors.
sanitizer_configure() {
  local build=$1
  if [ ! -f "$build/build.ninja" ]; then
    mkdir -p "$build"
    CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only" -DTEMPERED_SANITIZE=ON -DTEMPERED_FUZZ=ON \
      -DTEMPERED_BENCH=OFF -DTEMPERED_NCCL_COMPILE_CHECK=OFF >"$build/configure.log" 2>&1 ||
      { cat "$build/configure.log"; return 1; }
  fi
}

# The fuzz targets built in a build directory (all of tests/fuzz/<name>_fuzzer.cc that this build can link).
fuzz_targets() {
  local binary
  for binary in "$1"/tests/fuzz/*_fuzzer; do [ -x "$binary" ] && basename "$binary"; done
}

SANITIZER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/sanitizers
# halt_on_error: a UBSan report fails the test instead of scrolling by; print_stacktrace: where it happened.
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$SANITIZER_DIR/ubsan.supp"
