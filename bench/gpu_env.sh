# shellcheck shell=bash
# Sourced (bash) on the GPU machine, or here for a dry run: puts the packages that bench/gpu_deps.sh unpacked into
# .gpu/ to use, and finds the CUDA LibTorch and NCCL of the image's pip torch.
#   source bench/gpu_env.sh
# Exports PATH, LD_LIBRARY_PATH, CMAKE_PREFIX_PATH, the Open MPI relocation variables, and for bench/gpu_check.sh:
#   TEMPERED_GPU_ROOT   .gpu/root (the unpacked Debian packages)
#   TORCH_CMAKE_PREFIX  pip torch's share/cmake (empty when python3 has no torch: the system LibTorch is used)
#   NCCL_HOME, NCCL_INCLUDE_DIR, NCCL_LIBRARY   the pip package nvidia-nccl-cu13, else CUDA's
#   TEMPERED_DATA_DIR   the carried Fashion-MNIST .gz files
# TEMPERED_GPU_FALLBACK=all also uses the carried copies of generic libraries the image already has (for tests
# here, where the system has them all); the default uses each only where the image lacks its soname.
# Nothing the image has is shadowed: no libc/libstdc++/libgcc/zlib is carried, and the carried directories hold
# only the libraries of the packages listed in bench/gpu_deps.sh.

_tg_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export TEMPERED_GPU=${TEMPERED_GPU:-$_tg_repo/.gpu}
export TEMPERED_GPU_ROOT=$TEMPERED_GPU/root
if [ ! -d "$TEMPERED_GPU_ROOT/usr/bin" ]; then
  echo "gpu_env: $TEMPERED_GPU_ROOT is missing: run bench/gpu_deps.sh here and carry .gpu" >&2
  return 1 2>/dev/null || exit 1
fi
_tg_lib=$TEMPERED_GPU_ROOT/usr/lib/x86_64-linux-gnu

# Generic libraries (libudev, libmunge, liblzma): linked into a folder of their own only where the image lacks them.
_tg_farm=$TEMPERED_GPU/lib-fallback
rm -rf "$_tg_farm" 2>/dev/null
mkdir -p "$_tg_farm" 2>/dev/null || { _tg_farm=${TMPDIR:-/tmp}/tempered-lib-fallback; rm -rf "$_tg_farm"; mkdir -p "$_tg_farm"; }
_tg_has_soname() {
  local so=$1 d
  if command -v ldconfig >/dev/null 2>&1 && ldconfig -p 2>/dev/null | awk -v s="$so" '$1 == s {f = 1} END {exit !f}'; then
    return 0
  fi
  for d in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib64 /usr/lib64 /usr/lib /lib; do
    [ -e "$d/$so" ] && return 0
  done
  return 1
}
for _tg_f in "$TEMPERED_GPU"/fallback/*; do
  [ -e "$_tg_f" ] || continue
  _tg_so=$(basename "$_tg_f")
  case "$_tg_so" in *.so.[0-9]) ;; *) continue ;; esac  # the soname links only (libudev.so.1, ...)
  if [ "${TEMPERED_GPU_FALLBACK:-missing}" = all ] || ! _tg_has_soname "$_tg_so"; then
    ln -sfn "$_tg_f" "$_tg_farm/$_tg_so"
  fi
done

# CUDA toolkit (nvcc) and the pip torch's CUDA LibTorch and NCCL.
if [ -z "${CUDA_HOME:-}" ]; then
  if command -v nvcc >/dev/null 2>&1; then
    CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
  elif [ -x /usr/local/cuda/bin/nvcc ]; then
    CUDA_HOME=/usr/local/cuda
  fi
fi
if [ -n "${CUDA_HOME:-}" ]; then
  export CUDA_HOME
  export CUDA_PATH=$CUDA_HOME CUDAToolkit_ROOT=$CUDA_HOME
  [ -x "$CUDA_HOME/bin/nvcc" ] && export CUDACXX=$CUDA_HOME/bin/nvcc
  case ":$PATH:" in *":$CUDA_HOME/bin:"*) ;; *) PATH=$PATH:$CUDA_HOME/bin ;; esac
fi
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}  # H100/H200: skips LibTorch's arch auto-detection

_tg_py=${TEMPERED_PYTHON:-python3}
TORCH_DIR=$("$_tg_py" -c 'import importlib.util as u; s = u.find_spec("torch"); print(s.submodule_search_locations[0] if s else "")' 2>/dev/null || true)
export TORCH_DIR
export TORCH_CMAKE_PREFIX=""
export TEMPERED_SITE_PACKAGES=""
if [ -n "$TORCH_DIR" ] && [ -d "$TORCH_DIR/share/cmake/Torch" ]; then
  TORCH_CMAKE_PREFIX=$TORCH_DIR/share/cmake
  TEMPERED_SITE_PACKAGES=$(dirname "$TORCH_DIR")
fi

export NCCL_HOME="" NCCL_INCLUDE_DIR="" NCCL_LIBRARY=""
if [ -n "$TEMPERED_SITE_PACKAGES" ] && [ -d "$TEMPERED_SITE_PACKAGES/nvidia" ]; then
  _tg_h=$(find "$TEMPERED_SITE_PACKAGES/nvidia" -maxdepth 4 -name nccl.h 2>/dev/null | head -1)
  _tg_l=$(find "$TEMPERED_SITE_PACKAGES/nvidia" -maxdepth 4 -name 'libnccl.so*' 2>/dev/null | sort | head -1)
  if [ -n "$_tg_h" ] && [ -n "$_tg_l" ]; then
    NCCL_INCLUDE_DIR=$(dirname "$_tg_h")
    NCCL_LIBRARY=$_tg_l
    NCCL_HOME=$(dirname "$NCCL_INCLUDE_DIR")
  fi
fi
if [ -z "$NCCL_LIBRARY" ] && [ -n "${CUDA_HOME:-}" ]; then
  for _tg_d in "$CUDA_HOME/include" "$CUDA_HOME"/targets/*/include /usr/include; do
    [ -f "$_tg_d/nccl.h" ] && { NCCL_INCLUDE_DIR=$_tg_d; break; }
  done
  _tg_l=$(find "$CUDA_HOME/lib64" "$CUDA_HOME/lib" "$CUDA_HOME"/targets/*/lib /usr/lib/x86_64-linux-gnu -maxdepth 1 \
          -name 'libnccl.so*' 2>/dev/null | sort | head -1)
  if [ -n "$NCCL_INCLUDE_DIR" ] && [ -n "$_tg_l" ]; then
    NCCL_LIBRARY=$_tg_l
    NCCL_HOME=$(dirname "$NCCL_INCLUDE_DIR")
  fi
fi

# The carried packages: binaries, libraries, CMake packages.
export PATH=$TEMPERED_GPU_ROOT/usr/bin:$PATH
_tg_ld=$_tg_lib:$_tg_lib/pmix2/lib:$_tg_farm
[ -n "$NCCL_LIBRARY" ] && _tg_ld=$_tg_ld:$(dirname "$NCCL_LIBRARY")
export LD_LIBRARY_PATH=$_tg_ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export CMAKE_PREFIX_PATH=$TEMPERED_GPU_ROOT/usr${TORCH_CMAKE_PREFIX:+:$TORCH_CMAKE_PREFIX}${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}

# Open MPI 4.1 moved from /usr: its prefix-relative directories (libdir, pkglibdir with the plugins, pkgdatadir with
# the help files and wrapper data, bindir with orted for singletons) follow OPAL_PREFIX; sysconfdir (/etc/openmpi)
# is absolute in Debian's build, so it is given too. PMIx (libpmix2) has absolute directories under
# /usr/lib/x86_64-linux-gnu/pmix2: each is given (plugins in lib/pmix, help files in share/pmix).
export OPAL_PREFIX=$TEMPERED_GPU_ROOT/usr
export OPAL_SYSCONFDIR=$TEMPERED_GPU_ROOT/etc/openmpi
export PMIX_PREFIX=$_tg_lib/pmix2 PMIX_LIBDIR=$_tg_lib/pmix2/lib PMIX_PKGLIBDIR=$_tg_lib/pmix2/lib/pmix
export PMIX_DATAROOTDIR=$_tg_lib/pmix2/share PMIX_DATADIR=$_tg_lib/pmix2/share PMIX_PKGDATADIR=$_tg_lib/pmix2/share/pmix
# Root, one node, shared memory: no network transports (their plugins are not carried), no CMA single copy
# (refused in some sandboxes), oversubscription allowed.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_btl_base_warn_component_unused=0 OMPI_MCA_rmaps_base_oversubscribe=1
export TEMPERED_DATA_DIR=$TEMPERED_GPU_ROOT/usr/share/datasets/fashion-mnist

tempered_gpu_env_report() {
  echo "TEMPERED_GPU_ROOT=$TEMPERED_GPU_ROOT"
  echo "CUDA_HOME=${CUDA_HOME:-} CUDACXX=${CUDACXX:-}"
  echo "TORCH_DIR=$TORCH_DIR"
  echo "TORCH_CMAKE_PREFIX=$TORCH_CMAKE_PREFIX"
  echo "NCCL_HOME=$NCCL_HOME NCCL_INCLUDE_DIR=$NCCL_INCLUDE_DIR NCCL_LIBRARY=$NCCL_LIBRARY"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo "fallback libraries in use: $(ls "$_tg_farm" 2>/dev/null | tr '\n' ' ')"
  echo "mpirun: $(command -v mpirun) protoc: $(command -v protoc) ($(protoc --version 2>&1))"
}
