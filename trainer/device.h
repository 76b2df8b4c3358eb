// Where a rank computes: its device, its thread count, and bf16 autocast on that device.
#pragma once

#include <torch/torch.h>

#include "proto/tempered.pb.h"

namespace tempered {

// The rank's device: CPU, or the GPU GpuForLocalRank gives it among those visible. Throws UserError when cuda is
// asked for and there is none, or fewer GPUs are visible than ranks run on this node.
torch::Device DeviceFor(const RunConfig& config);

// The visible GPU of the rank `local_rank` of the `local_ranks` on a node with `visible_count` visible GPUs: its own,
// index local_rank. UserError (one sentence) when fewer GPUs are visible than ranks run on the node: two ranks on
// one GPU would not fail but would share its memory and time, and run slower than one.
int GpuForLocalRank(int local_rank, int local_ranks, int visible_count);

// Intra-op threads of a rank: config.threads, or the node's cores shared among its ranks.
int ThreadsPerRank(const RunConfig& config);

// Whether this CPU does bf16 arithmetic natively (AVX512-BF16 or AMX): oneDNN's bf16 convs are then ~1.5-2x its
// fp32 ones; without, it converts in software and bf16 is slower than fp32.
bool CpuHasNativeBf16();

// bf16 autocast on `device` on or off (LibTorch 2.4 replaced the per-device switches with ones that take the
// device; this builds against both).
void SetAutocast(torch::Device device, bool enabled);

}  // namespace tempered
