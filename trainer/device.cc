#include "trainer/device.h"

#include <ATen/autocast_mode.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/version.h>

#include <glog/logging.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "comm/comm.h"
#include "common/errors.h"
#include "trainer/environment.h"

namespace tempered {

torch::Device DeviceFor(const RunConfig& config) {
  if (config.device() != "cuda") return torch::kCPU;
  if (!torch::cuda::is_available()) {
    throw UserError("device cuda was requested, but this LibTorch has no CUDA or no GPU is visible");
  }
  const int visible = static_cast<int>(torch::cuda::device_count());
  try {
    const int gpu = GpuForLocalRank(comm::LocalRank(), comm::LocalSize(), visible);
    const torch::Device device(torch::kCUDA, static_cast<c10::DeviceIndex>(gpu));
    // The rank's GPU made current before anything touches CUDA: otherwise every rank's first allocation, stream or
    // NCCL call would open a context on GPU 0. Through c10's device-guard registry, which CUDA LibTorch fills, so
    // that this compiles against a CPU LibTorch too (where no cuda device gets here).
    c10::impl::getDeviceGuardImpl(device.type())->setDevice(device);
    return device;
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

std::vector<int> AffinityCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (::sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
    }
  }
  if (cpus.empty()) {  // no mask to read: every online core
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    for (int cpu = 0; cpu < cores; ++cpu) cpus.push_back(cpu);
  }
  return cpus;
}

int ThreadsForAffinity(const std::vector<int>& mine, const std::vector<std::vector<int>>& node) {
  int sharers = 0;
  for (const std::vector<int>& other : node) {
    const bool overlaps = std::find_first_of(mine.begin(), mine.end(), other.begin(), other.end()) != mine.end();
    if (overlaps) ++sharers;
  }
  return std::max(1, static_cast<int>(mine.size()) / std::max(1, sharers));
}

std::string CpuList(const std::vector<int>& cpus) {
  std::string text;
  for (int cpu : cpus) text += (text.empty() ? "" : ",") + std::to_string(cpu);
  return text;
}

namespace {

std::vector<int> ParseCpuList(const std::string& text) {
  std::vector<int> cpus;
  std::istringstream in(text);
  for (std::string cpu; std::getline(in, cpu, ',');) cpus.push_back(std::stoi(cpu));
  return cpus;
}

}  // namespace

int ThreadsPerRank(const RunConfig& config) {
  if (config.threads() > 0) return config.threads();
  // Every rank's host and mask, so that each counts the ranks of its own node that may run on its cores.
  const std::vector<int> mine = AffinityCpus();
  const std::vector<std::string> all = comm::AllGatherStrings(ThisHost() + "\n" + CpuList(mine));
  std::vector<std::vector<int>> node;
  for (const std::string& entry : all) {
    const size_t newline = entry.find('\n');
    if (entry.substr(0, newline) == ThisHost()) node.push_back(ParseCpuList(entry.substr(newline + 1)));
  }
  return ThreadsForAffinity(mine, node);
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
