// Where a rank computes: its device, its thread count, and bf16 autocast on that device.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "proto/tempered.pb.h"

namespace tempered {

// The rank's device: CPU, or the GPU GpuForLocalRank gives it among those visible. Throws UserError when cuda is
// asked for and there is none, or fewer GPUs are visible than ranks run on this node.
// A rank's GPU is made its current CUDA device here, before any CUDA allocation.
torch::Device DeviceFor(const RunConfig& config);

// The visible GPU of the rank `local_rank` of the `local_ranks` on a node with `visible_count` visible GPUs: its own,
// index local_rank. UserError (one sentence) when fewer GPUs are visible than ranks run on the node: two ranks on
// one GPU would not fail but would share its memory and time, and run slower than one.
int GpuForLocalRank(int local_rank, int local_ranks, int visible_count);

// Intra-op threads of a rank: config.threads, or the cores of its CPU affinity mask (sched_getaffinity) shared
// among the ranks of its node whose masks overlap it. So `mpirun --bind-to core` gives each rank 1 thread,
// `--bind-to none` the node's cores divided by its ranks, `--bind-to socket` a socket's cores divided by the ranks
// on that socket, and a Slurm or taskset mask is respected. Collective (the ranks exchange their masks).
int ThreadsPerRank(const RunConfig& config);

// The CPUs this process may run on (sched_getaffinity; every online core when the mask cannot be read).
std::vector<int> AffinityCpus();
// "0,1,4": a CPU list as RunEnvironment.Rank.cpus records it.
std::string CpuList(const std::vector<int>& cpus);
// The thread count behind ThreadsPerRank: the size of `mine` divided by the number of masks in `node` (one per rank
// of the node, this rank's included) that share a CPU with it; at least 1.
int ThreadsForAffinity(const std::vector<int>& mine, const std::vector<std::vector<int>>& node);

// Whether this CPU does bf16 arithmetic natively (AVX512-BF16 or AMX): oneDNN's bf16 convs are then ~1.5-2x its
// fp32 ones; without, it converts in software and bf16 is slower than fp32.
bool CpuHasNativeBf16();

// bf16 autocast on `device` on or off (LibTorch 2.4 replaced the per-device switches with ones that take the
// device; this builds against both).
void SetAutocast(torch::Device device, bool enabled);

}  // namespace tempered
