#!/usr/bin/env bash
# The README's test command: installs every dependency (fresh Debian 12), builds, and runs every test suite.
#   tests/run.sh [extra ctest arguments, e.g. -L unit]
set -euo pipefail
cd "$(dirname "$0")/.."
docker/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
# Tests run one at a time: the multi-rank ones already use every core (and oversubscribe them).
ctest --test-dir build --output-on-failure "$@"
# ASan + UBSan unit tests and bounded libFuzzer runs of every parser (clang, its own build dir build-asan).
tests/sanitize.sh
