#include "trainer/device.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "comm/comm.h"
#include "trainer/errors.h"

namespace tempered {

torch::Device DeviceFor(const RunConfig& config) {
  if (config.device() != "cuda") return torch::kCPU;
  if (!torch::cuda::is_available()) {
    throw UserError("device cuda was requested, but this LibTorch has no CUDA or no GPU is visible");
  }
  return {torch::kCUDA, static_cast<c10::DeviceIndex>(comm::LocalRank() % torch::cuda::device_count())};
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
