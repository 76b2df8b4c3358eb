#!/usr/bin/env bash
# The one place that lists the system packages Tempered needs (README, CI and the Dockerfiles call it).
# Non-interactive and idempotent: packages already installed are left as they are.
#   docker/install-deps.sh            what building, running and the default test suite need
#   docker/install-deps.sh --runtime  only what building and running need (docker/Dockerfile: its image holds no
#                                     test suite, and the test-only packages were half of it)
#   docker/install-deps.sh --docker   also a Docker engine and debootstrap, for tests/docker_test.py
set -euo pipefail

with_tests=1
with_docker=0
case "${1:-}" in
  "") ;;
  --runtime) with_tests=0 ;;
  --docker) with_docker=1 ;;
  *) echo "install-deps: unknown argument '$1' (expected nothing, --runtime or --docker)" >&2; exit 2 ;;
esac

packages=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git
  # the fixed stack (GoogleTest below, with the tests)
  libtorch-dev libopenmpi-dev openmpi-bin libprotobuf-dev protobuf-compiler libgflags-dev libgoogle-glog-dev
  # without OpenBLAS Debian's reference BLAS makes every matmul ~20x slower (docs/cpu.md)
  libopenblas0-pthread
  # data and solved problems: .gz reading, JSON, plots
  zlib1g-dev nlohmann-json3-dev gnuplot-nox
  # the embedded default data set (60k + 10k Fashion-MNIST images, IDX .gz)
  dataset-fashion-mnist
  # the native data set formats: SVHN's .mat files (matio), image folders (OpenCV's decoders and resize only: the
  # libopencv-dev metapackage would pull in ~1 GB more)
  libmatio-dev libopencv-imgcodecs-dev libopencv-imgproc-dev
  # JPEG decoding at a DCT scale (1/8 .. 1) for image folders: libjpeg-turbo's TurboJPEG API
  libturbojpeg0-dev
)
test_packages=(
  # the unit tests and benchmarks (TEMPERED_TESTS, TEMPERED_BENCH); pmccabe: the function-length check of docs/contributing.md
  # (`pmccabe trainer/*.cc`)
  libgtest-dev libgmock-dev libbenchmark-dev pmccabe
  # the PyTorch reference scripts of the tests and benchmarks (use /usr/bin/python3); torchvision: the backbone
  # interop test loads backbone.pth into its ResNets
  python3-torch python3-torchvision python3-numpy python3-protobuf
  # the data set end-to-end test writes its JPEGs with PIL
  python3-pil
  # tests/sanitize.sh and tests/fuzz.sh: clang with its ASan, UBSan and libFuzzer runtimes
  clang libclang-rt-14-dev
  # a real Slurm for the Slurm backend's tests
  slurm-wlm slurmctld slurmd slurm-client munge
  # ip netns: the multi-node test's two hosts are network namespaces joined by a veth pair (not in Docker's
  # minimal images)
  iproute2
)
[ "$with_tests" -eq 1 ] && packages+=("${test_packages[@]}")
# tests/docker_test.py builds docker/Dockerfile with a real engine and makes its base image with debootstrap (no
# registry needed). Only when asked: the image runs this script and must not contain an engine. A host that already
# has an engine (Docker's own docker-ce, whose packages conflict with Debian's docker.io) keeps it.
if [ "$with_docker" -eq 1 ]; then
  packages+=(debootstrap)
  command -v dockerd >/dev/null || packages+=(docker.io)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
