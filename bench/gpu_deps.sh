#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored) for the one-shot GPU check (bench/gpu_check.sh, bench/README.md "GPU check").
# Run HERE (Debian 12 with apt), not on the GPU machine: that machine has no network and lacks gflags, glog,
# protobuf (protoc + libprotobuf), Open MPI, GoogleTest, Google Benchmark, nlohmann-json, the unwind and zlib
# headers, and the Fashion-MNIST files. This script downloads the Debian 12 packages with `apt-get download`,
# unpacks them with `dpkg -x` into .gpu/root, prunes what the build and the runs do not use, adds the
# Fashion-MNIST .gz files, and checks that every carried ELF file resolves its shared libraries from .gpu alone
# plus the base libraries any Ubuntu/Debian image has (glibc, libstdc++, libgcc_s, zlib).
#
#   bench/gpu_deps.sh            # builds .gpu/ (about 45 MB), prints its size and the dependency check
#
# Layout of .gpu/ (travels as the run tool's carry [".gpu"]):
#   root/                  the unpacked packages (usr/bin, usr/include, usr/lib/x86_64-linux-gnu, etc/openmpi ...)
#   root/usr/share/datasets/fashion-mnist/*.gz
#   fallback/              generic system libraries (libudev, libmunge, liblzma): bench/gpu_env.sh uses each only
#                          when the image lacks that soname, so the image's own copies are never shadowed
#   MANIFEST               packages and versions
# The downloaded .deb files stay outside the repo (GPU_DEBS_CACHE, default /tmp/tempered-gpu-debs).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
GPU=$REPO/.gpu
ROOT=$GPU/root
CACHE=${GPU_DEBS_CACHE:-/tmp/tempered-gpu-debs}
ARCH_LIB=usr/lib/x86_64-linux-gnu

# Everything the CUDA build and the runs need that the image lacks. The Open MPI plugins that need UCX, libfabric,
# PSM, verbs or netlink are deleted below (one node, shared memory only), so those libraries are not carried.
PACKAGES=(
  # Open MPI 4.1 (mpirun/orterun, orted for singletons, libmpi, libmpi_cxx, headers, wrapper data) and its runtime
  openmpi-bin openmpi-common libopenmpi3 libopenmpi-dev
  libpmix2 libhwloc15 libevent-core-2.1-7 libevent-pthreads-2.1-7 libmunge2 libudev1
  # flags and logging (glog's CMake config needs the unwind headers and library)
  libgflags2.2 libgflags-dev libgoogle-glog0v6 libgoogle-glog-dev libunwind8 libunwind-dev liblzma5
  # protobuf 3.21: protoc, runtime, headers
  libprotobuf32 libprotobuf-dev libprotoc32 protobuf-compiler
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev libbenchmark1debian
  # header-only / headers
  nlohmann-json3-dev zlib1g-dev
)
# Generic libraries that an image usually has: kept apart and used only where the image lacks them.
FALLBACK_SONAMES=(libudev.so.1 libmunge.so.2 liblzma.so.5)
# What every image has (never carried).
BASE_SONAMES=(linux-vdso.so.1 ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1
              libutil.so.1 libresolv.so.2 libstdc++.so.6 libgcc_s.so.1 libz.so.1)

echo "== download (cache: $CACHE)"
mkdir -p "$CACHE"
chmod 755 "$CACHE" 2>/dev/null || true
need_update=0
for p in "${PACKAGES[@]}"; do apt-cache show "$p" >/dev/null 2>&1 || need_update=1; done
if [ "$need_update" = 1 ]; then apt-get update -q; fi
(cd "$CACHE" && apt-get download -q "${PACKAGES[@]}" 2>&1 | grep -v "unsandboxed as root" || true)
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  (cd "$CACHE" && apt-get download -q dataset-fashion-mnist 2>&1 | grep -v "unsandboxed as root" || true)
fi

echo "== unpack into $ROOT"
rm -rf "$GPU"
mkdir -p "$ROOT" "$GPU/fallback"
: >"$GPU/MANIFEST"
for p in "${PACKAGES[@]}"; do
  deb=$(ls -t "$CACHE"/"${p}"_*.deb 2>/dev/null | head -1)
  [ -n "$deb" ] || { echo "gpu_deps: no .deb for $p in $CACHE" >&2; exit 1; }
  dpkg -x "$deb" "$ROOT"
  echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)" >>"$GPU/MANIFEST"
done

echo "== prune"
cd "$ROOT"
rm -rf usr/share/doc usr/share/man usr/share/lintian usr/share/info usr/share/locale etc/libnl-3 usr/src
# Open MPI: no Fortran, Java, OpenSHMEM, or the network plugins (UCX, libfabric, PSM, verbs, usNIC, netlink).
rm -f usr/bin/*fort* usr/bin/mpif77* usr/bin/mpif90* usr/bin/mpijavac* usr/bin/osh* usr/bin/shmem* \
      usr/bin/oshmem_info usr/bin/aggregate_profile usr/bin/profile2mat
rm -rf usr/share/java usr/lib/x86_64-linux-gnu/openmpi/lib/*.jar usr/lib/x86_64-linux-gnu/openmpi/include/*.mod \
       usr/lib/x86_64-linux-gnu/openmpi/lib/mpi.jar usr/lib/x86_64-linux-gnu/openmpi/include/openmpi/ompi/mpi/fortran
for f in $ARCH_LIB/libmpi_mpifh* $ARCH_LIB/libmpi_usempi* $ARCH_LIB/libmpi_java* $ARCH_LIB/liboshmem* \
         $ARCH_LIB/libmca_common_ucx* $ARCH_LIB/libmca_common_ofi* $ARCH_LIB/libmca_common_verbs* \
         $ARCH_LIB/openmpi/lib/libmpi_mpifh* $ARCH_LIB/openmpi/lib/libmpi_usempi* $ARCH_LIB/openmpi/lib/libmpi_java* \
         $ARCH_LIB/openmpi/lib/liboshmem* $ARCH_LIB/openmpi/lib/libmca_common_ucx* \
         $ARCH_LIB/openmpi/lib/libmca_common_ofi* $ARCH_LIB/openmpi/lib/libmca_common_verbs*; do
  rm -f "$f"
done
PLUG=$ARCH_LIB/openmpi/lib/openmpi3
rm -f $PLUG/*ucx* $PLUG/*ofi* $PLUG/mca_mtl_psm* $PLUG/mca_btl_openib* $PLUG/mca_btl_usnic* $PLUG/mca_btl_uct* \
      $PLUG/mca_reachable_netlink* $PLUG/mca_atomic_* $PLUG/mca_memheap_* $PLUG/mca_scoll_* $PLUG/mca_spml_* \
      $PLUG/mca_sshmem_* $PLUG/mca_ess_tm* $PLUG/mca_plm_tm* $PLUG/mca_ras_tm*
# No MPI-IO (ROMIO/OMPIO) and no monitoring components either (1.3 MB).
rm -f $PLUG/mca_io_* $PLUG/mca_fcoll_* $PLUG/mca_fbtl_* $PLUG/mca_sharedfp_* $PLUG/*monitoring* \
      $PLUG/mca_topo_treematch* $ARCH_LIB/libmca_common_ompio* $ARCH_LIB/libmca_common_monitoring* \
      $ARCH_LIB/openmpi/lib/libmca_common_ompio* $ARCH_LIB/openmpi/lib/libmca_common_monitoring* \
      $ARCH_LIB/openmpi/lib/ompi_monitoring_prof.so
rm -f usr/share/openmpi/*fort* usr/share/openmpi/osh* usr/share/openmpi/shmem* usr/share/openmpi/mpijavac*
rm -rf $ARCH_LIB/fortran
# Open MPI headers: mpi.h and the C++ bindings it includes are all a user of MPI needs; the devel headers of
# the internals (opal, orte, oshmem, ...) go.
INC=$ARCH_LIB/openmpi/include
rm -rf $INC/mpp $INC/openshmem $INC/pshmem* $INC/shmem* $INC/mpif* $INC/openmpi/opal $INC/openmpi/orte \
       $INC/openmpi/oshmem $INC/openmpi/ompi/mpi/c $INC/openmpi/ompi/mpi/java $INC/openmpi/ompi/mpi/tool
find $INC/openmpi/ompi -mindepth 1 -maxdepth 1 ! -name mpi -exec rm -rf {} +
# protobuf-lite is not linked (and its package is not carried).
rm -f $ARCH_LIB/libprotobuf-lite.so
# Debian points the unversioned names at /etc/alternatives; give the relocated tree its own links.
for t in mpirun mpiexec mpicc mpicxx mpic++ mpiCC; do
  [ -e usr/bin/$t.openmpi ] && ln -sfn $t.openmpi usr/bin/$t
done
ln -sfn openmpi/lib/libmpi.so $ARCH_LIB/libmpi.so
ln -sfn openmpi/lib/libmpi_cxx.so $ARCH_LIB/libmpi_cxx.so
ln -sfn libmpi_cxx.so $ARCH_LIB/libmpi++.so
rm -f usr/include/x86_64-linux-gnu/mpi usr/include/mpi.h
# glog's CMake package adds its find modules (FindUnwind) by an absolute path: make it relative to the package.
sed -i 's|set (glog_MODULE_PATH "/usr/share/glog/cmake")|get_filename_component (glog_MODULE_PATH "${CMAKE_CURRENT_LIST_DIR}/../../../../share/glog/cmake" ABSOLUTE)|' \
  $ARCH_LIB/cmake/glog/glog-modules.cmake
grep -q CMAKE_CURRENT_LIST_DIR $ARCH_LIB/cmake/glog/glog-modules.cmake || { echo "gpu_deps: glog-modules.cmake not patched" >&2; exit 1; }
# Static archives: keep only those a CMake package config names (GTest, gmock, gflags, benchmark check their
# files exist); drop the rest (libprotobuf.a alone is 7 MB).
for a in $(find . -name '*.a'); do
  if ! grep -rqs -- "$(basename "$a")" usr/lib/x86_64-linux-gnu/cmake usr/share/cmake 2>/dev/null; then rm -f "$a"; fi
done
# The zlib dev link points at libz.so.1 of zlib1g, which the image has: bench/gpu_check.sh passes the image's
# libz.so.1 as ZLIB_LIBRARY, so only zlib.h/zconf.h are used from here.
rm -f $ARCH_LIB/libz.so
# Generic libraries -> fallback/ (bench/gpu_env.sh links each in only when the image lacks its soname).
for so in "${FALLBACK_SONAMES[@]}"; do
  for f in $(find . -name "$so*" \( -type f -o -type l \)); do mv "$f" "$GPU/fallback/"; done
done
# Empty directories left by the pruning.
find . -depth -type d -empty -delete

echo "== Fashion-MNIST"
DATA=$ROOT/usr/share/datasets/fashion-mnist
mkdir -p "$DATA"
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  cp /usr/share/datasets/fashion-mnist/*.gz "$DATA/"
else
  tmp=$(mktemp -d)
  dpkg -x "$(ls -t "$CACHE"/dataset-fashion-mnist_*.deb | head -1)" "$tmp"
  cp "$tmp"/usr/share/datasets/fashion-mnist/*.gz "$DATA/"
  rm -rf "$tmp"
fi
ls "$DATA"

echo "== dependency check (every NEEDED soname of every carried ELF file is carried or in the base set)"
cd "$GPU"
declare -A have=()
for so in "${BASE_SONAMES[@]}"; do have[$so]=base; done
while IFS= read -r f; do have[$(basename "$f")]=carried; done < <(find root fallback -name '*.so*' \( -type f -o -type l \))
missing=0
nelf=0
while IFS= read -r f; do
  [ "$(head -c4 "$f" | od -An -c | tr -d ' ')" = "177ELF" ] || continue
  nelf=$((nelf + 1))
  for so in $(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    if [ -z "${have[$so]:-}" ]; then echo "MISSING: $f needs $so"; missing=$((missing + 1)); fi
  done
done < <(find root fallback -type f \( -name '*.so*' -o -path '*/bin/*' \))
echo "checked $nelf ELF files: $missing missing sonames"

echo "== size"
du -sh "$GPU" "$ROOT/usr/share/datasets" "$ROOT/usr/include" "$ROOT/$ARCH_LIB" "$GPU/fallback"
echo "total bytes: $(du -sb "$GPU" | cut -f1) (the run tool carries at most 64 MiB including the working tree)"
[ "$missing" -eq 0 ] || { echo "gpu_deps: $missing unresolved sonames" >&2; exit 1; }
