// GPU check of the NCCL backend on a one-GPU machine (run.sh builds and runs it against a CUDA LibTorch 2.x).
// NCCL refuses two ranks on one GPU, so this drives the backend table directly in a world of one, with the MPI
// side replaced by the stubs below: it proves nccl_backend.cc builds against LibTorch 2.x and NCCL, creates its
// communicator, maps dtypes (bf16 included), and runs every collective behind and ahead of the current stream
// (default and a pool stream), the reducer's overlapped sums too.
// Multi-rank behaviour is covered on CPU by tests/mpi_*_test.cc.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdio>
#include <cstdlib>

#include "comm/backend.h"
#include "comm/comm.h"

namespace tempered::comm {
int Rank() { return 0; }
int Size() { return 1; }
void Abort(const std::string& message, int code) {
  std::fprintf(stderr, "ABORT: %s\n", message.c_str());
  std::exit(code);
}
namespace detail {
std::vector<int64_t> AllGatherInt64(const std::vector<int64_t>& mine) { return mine; }
void BroadcastBytes(void*, int64_t, int) {}
std::string Where() { return "gpu-check:0"; }
// CPU tensors never reach it here.
const Backend kMpiBackend = {"none", false, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
}  // namespace detail
}  // namespace tempered::comm

namespace {

int failures = 0;

void Expect(bool ok, const char* what, torch::ScalarType dtype) {
  std::printf("%s %-28s %s\n", ok ? "ok  " : "FAIL", what, c10::toString(dtype));
  if (!ok) ++failures;
}

void CheckAll(torch::ScalarType dtype) {
  using tempered::comm::detail::kNcclBackend;
  using tempered::comm::detail::Reduction;
  const auto cuda = torch::TensorOptions().device(torch::kCUDA, 0).dtype(dtype);
  torch::Tensor x = torch::arange(12, cuda).view({3, 4});

  torch::Tensor sum = x.clone();
  kNcclBackend.all_reduce(sum, Reduction::kSum);
  Expect(torch::equal(sum.cpu(), x.cpu()), "all_reduce sum (world of 1)", dtype);
  torch::Tensor max = x.clone();
  kNcclBackend.all_reduce(max, Reduction::kMax);
  Expect(torch::equal(max.cpu(), x.cpu()), "all_reduce max", dtype);

  torch::Tensor gathered = torch::empty({3, 4}, cuda);
  kNcclBackend.all_gather(x, gathered, {12});
  Expect(torch::equal(gathered.cpu(), x.cpu()), "all_gather", dtype);

  torch::Tensor scattered = torch::empty({3, 4}, cuda);
  kNcclBackend.reduce_scatter(x, scattered, {12});
  Expect(torch::equal(scattered.cpu(), x.cpu()), "reduce_scatter", dtype);

  torch::Tensor b = x.clone();
  kNcclBackend.broadcast(b, 0);
  Expect(torch::equal(b.cpu(), x.cpu()), "broadcast", dtype);

  // The reducer's overlapped sum: the caller's stream goes on, then waits for it (events, no host wait).
  torch::Tensor overlapped = x.clone();
  kNcclBackend.start_sum(overlapped);
  kNcclBackend.wait_for_started(overlapped);
  Expect(torch::equal((overlapped * 1).cpu(), x.cpu()), "start_sum + wait_for_started", dtype);
}

}  // namespace

int main() {
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16, torch::kLong, torch::kInt,
                     torch::kByte}) {
    CheckAll(dtype);
  }
  {
    // On a side stream: the collectives must follow the current stream, and so must the work around them.
    c10::cuda::CUDAStreamGuard guard(c10::cuda::getStreamFromPool(false, 0));
    CheckAll(torch::kFloat);
  }
  // The one-rank shortcuts of comm.cc with CUDA tensors (no NCCL call) and the autograd gather.
  torch::Tensor local = torch::randn({5, 3}, torch::TensorOptions().device(torch::kCUDA).requires_grad(true));
  torch::Tensor global = tempered::comm::GatherWithGrad(local);
  (global * 2).sum().backward();
  Expect(torch::allclose(local.grad().cpu(), torch::full({5, 3}, 2.0)), "GatherWithGrad on CUDA", torch::kFloat);
  tempered::comm::detail::DestroyNccl();
  std::printf("%s\n", failures == 0 ? "ALL OK" : "FAILURES");
  return failures == 0 ? 0 : 1;
}
