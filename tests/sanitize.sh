#!/usr/bin/env bash
# ASan + UBSan: builds (clang, build-asan) and runs the fast unit tests of Tempered's own parsing and numerics code,
# and the multi-rank collectives at an uneven world size; then runs tests/fuzz.sh on the same build (the fuzz
# targets share every library object with these tests). Called by tests/run.sh after the main ctest.
#   tests/sanitize.sh [fuzz seconds per target, default 20]
# TEMPERED_ASAN_BUILD: the build directory (default build-asan).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/sanitizer_common.sh
build=${TEMPERED_ASAN_BUILD:-build-asan}
start=$(date +%s)

# The readers (IDX, CIFAR, SVHN, image folders, .npy, event files, specs), the losses, augmentations and the
# collectives' uneven-shard arithmetic. Tests not in the tree yet are skipped.
wanted=(data_test datasets_test npy_test event_writer_test sweep_test loss_test streaming_loss_test
        loss_golden_test augment_test batched_augment_test mpi_comm_test mpi_gather_test)
unit_tests=()
for test in "${wanted[@]}"; do [ -f "tests/$test.cc" ] && unit_tests+=("$test"); done

sanitizer_configure "$build"
cmake --build "$build" -j"$(nproc)" --target "${unit_tests[@]}" tempered_fuzzers
built=$(date +%s)

# detect_leaks=0: the tests call MPI_Init (tests/test_main.cc), and Open MPI leaves ~14 KiB allocated at exit from
# MCA components it has already dlclose()d: LSan shows their frames as <unknown module>, so no suppression can
# name them. (The fuzz targets do not start MPI and keep leak checking on.) LibTorch needed no other option:
# protect_shadow_gap and allocator settings stay at ASan's defaults.
export ASAN_OPTIONS="detect_leaks=0:check_initialization_order=1:strict_init_order=1"
regex="^($(IFS='|'; echo "${unit_tests[*]}" | sed -E 's/(mpi_[a-z_]+)/\1_np3/g'))\$"
ctest --test-dir "$build" --output-on-failure -R "$regex"
tested=$(date +%s)

TEMPERED_FUZZ_BUILD=$build tests/fuzz.sh "${1:-20}"
echo "sanitize: build $((built - start)) s, unit tests $((tested - built)) s, fuzzing $(($(date +%s) - tested)) s"
