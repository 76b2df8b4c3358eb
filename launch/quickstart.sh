#!/usr/bin/env bash
# The README's main command: installs the dependencies (fresh Debian 12), builds, and runs the built-in
# temperature sweep on Fashion-MNIST (InfoNCE at several tau, plus the simple and hard losses), ending with the
# report. Re-running it resumes the sweep: finished runs are kept.
#   launch/quickstart.sh [sweep directory, default sweep-fashion-mnist] [extra tempered-sweep flags]
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir=${1:-sweep-fashion-mnist}
shift $(( $# > 0 ? 1 : 0 ))
docker/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)" --target tempered-train tempered-sweep
build/launch/tempered-sweep --out_dir "$out_dir" "$@"
