// Built without NCCL (TEMPERED_NCCL=OFF): CUDA tensors cannot be communicated across ranks. With one rank every
// collective is a no-op or a copy and never reaches here, so single-GPU runs still work.
#include "comm/backend.h"
#include "comm/comm.h"

namespace tempered::comm::detail {
namespace {

[[noreturn]] void Refuse() {
  Abort("comm: a CUDA tensor reached a collective, but this build has no NCCL backend. Rebuild with "
        "-DTEMPERED_CUDA=ON -DTEMPERED_NCCL=ON, or move the tensor to the CPU.");
}

void AllGather(const torch::Tensor&, torch::Tensor&, const std::vector<int64_t>&) { Refuse(); }
void AllReduce(torch::Tensor&, Reduction) { Refuse(); }
void ReduceScatter(const torch::Tensor&, torch::Tensor&, const std::vector<int64_t>&) { Refuse(); }
void Broadcast(torch::Tensor&, int) { Refuse(); }
void StartSum(torch::Tensor&) { Refuse(); }
void WaitForStarted(const torch::Tensor&) { Refuse(); }

}  // namespace

const Backend kNcclBackend = {"none", /*equal_blocks_only=*/true, AllGather, AllReduce, ReduceScatter, Broadcast,
                               StartSum, WaitForStarted};

void DestroyNccl() {}

}  // namespace tempered::comm::detail

namespace tempered::comm {

std::string NcclVersion() { return ""; }

}  // namespace tempered::comm
