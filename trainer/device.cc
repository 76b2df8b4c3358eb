#include "trainer/device.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <glog/logging.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "comm/comm.h"
#include "trainer/environment.h"
#include "trainer/errors.h"

namespace tempered {

torch::Device DeviceFor(const RunConfig& config) {
  if (config.device() != "cuda") return torch::kCPU;
  if (!torch::cuda::is_available()) {
    throw UserError("device cuda was requested, but this LibTorch has no CUDA or no GPU is visible");
  }
  const int visible = static_cast<int>(torch::cuda::device_count());
  try {
    return {torch::kCUDA, static_cast<c10::DeviceIndex>(GpuForLocalRank(comm::LocalRank(), comm::LocalSize(), visible))};
  } catch (const UserError& e) {
    const char* env = std::getenv("CUDA_VISIBLE_DEVICES");
    throw UserError(std::string(e.what()) + " (host " + ThisHost() + ", CUDA_VISIBLE_DEVICES " +
                    (env ? std::string("=") + env : std::string("unset")) + ")");
  }
}

int GpuForLocalRank(int local_rank, int local_ranks, int visible_count) {
  CHECK(local_rank >= 0 && local_rank < local_ranks) << "local rank " << local_rank << " of " << local_ranks;
  if (visible_count < local_ranks) {
    const std::string ranks = std::to_string(local_ranks) + (local_ranks == 1 ? " rank runs" : " ranks run");
    if (visible_count == 0) {
      throw UserError("device cuda needs a GPU per rank, but " + ranks + " on this node and no GPU is visible: "
                      "make GPUs visible, or use device cpu");
    }
    throw UserError("device cuda needs a GPU per rank, but " + ranks + " on this node and " +
                    std::to_string(visible_count) + (visible_count == 1 ? " GPU is" : " GPUs are") +
                    " visible: run at most " + std::to_string(visible_count) + (visible_count == 1 ? " rank" : " ranks") +
                    " per node, or make more GPUs visible");
  }
  return local_rank;
}

int ThreadsPerRank(const RunConfig& config) {
  if (config.threads() > 0) return config.threads();
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / comm::LocalSize());
}

bool CpuHasNativeBf16() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream flags(line);
    for (std::string flag; flags >> flag;) {
      if (flag == "avx512_bf16" || flag == "amx_bf16") return true;
    }
    return false;
  }
  return false;
}

void SetAutocast(torch::Device device, bool enabled) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_dtype(device.type(), at::kBFloat16);
  at::autocast::set_autocast_enabled(device.type(), enabled);
#else
  if (device.is_cuda()) {
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(enabled);
  } else {
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(enabled);
  }
#endif
}

}  // namespace tempered
