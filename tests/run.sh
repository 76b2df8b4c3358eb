#!/usr/bin/env bash
# The README's test command: installs every dependency (fresh Debian 12), builds, and runs every test suite but the
# Docker one.
#   tests/run.sh [extra ctest arguments, e.g. -L unit]
#   tests/run.sh -L docker    only tests/docker_test.py (builds docker/Dockerfile with a real engine, runs its
#                             containers; 7 min on 2 idle cores uncached, ~20 s cached); installs docker.io and
#                             debootstrap too
set -euo pipefail
cd "$(dirname "$0")/.."
# The Docker suite, however ctest's label option is spelt: -L docker, -Ldocker, --label-regex[=| ]docker.
docker_suite=0
previous=""
for arg in "$@"; do
  case "$previous $arg" in "-L docker" | "--label-regex docker") docker_suite=1 ;; esac
  case "$arg" in -Ldocker | --label-regex=docker) docker_suite=1 ;; esac
  previous="$arg"
done
if [ "$docker_suite" -eq 1 ]; then
  docker/install-deps.sh --docker
  # ctest needs only the configured test list: the test builds the image, not the host's binaries.
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
  exec ctest --test-dir build --output-on-failure "$@"
fi
docker/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
# Tests run one at a time: the multi-rank ones already use every core (and oversubscribe them). The Docker test is
# slow (label docker, above) and not part of the default run.
ctest --test-dir build --output-on-failure -LE docker "$@"
# ASan + UBSan unit tests and bounded libFuzzer runs of every parser (clang, its own build dir build-asan).
tests/sanitize.sh
