#include "trainer/environment.h"

#include <unistd.h>

#include <ATen/Parallel.h>
#include <torch/version.h>

#include <cstdlib>

#include "comm/comm.h"
#include "trainer/device.h"

namespace tempered {

std::string ThisHost() {
  char name[256] = {0};
  ::gethostname(name, sizeof(name) - 1);
  return name;
}

RunEnvironment GatherEnvironment(const c10::Device& device) {
  RunEnvironment::Rank mine;
  mine.set_rank(comm::Rank());
  mine.set_host(ThisHost());
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES")) mine.set_cuda_visible_devices(visible);
  mine.set_device(device.str());
  mine.set_threads(at::get_num_threads());
  mine.set_cpus(CpuList(AffinityCpus()));
  RunEnvironment environment;
  // Each rank's record travels as its serialised message: one gather of small strings, whatever fields it grows.
  for (const std::string& rank : comm::AllGatherStrings(mine.SerializeAsString())) {
    environment.add_ranks()->ParseFromString(rank);
  }
  environment.set_libtorch_version(TORCH_VERSION);
  environment.set_mpi_version(comm::MpiLibraryVersion());
  environment.set_nccl_version(comm::NcclVersion());
  environment.set_tempered_commit(TemperedCommit());
  return environment;
}

}  // namespace tempered
