// The backend for CUDA tensors: one NCCL communicator over all ranks, bootstrapped over MPI.
//
// Streams (the contract callers rely on, as in c10d):
//   - Every NCCL call runs on one communication stream (CommStream), in the order the host enqueues them, behind the
//     work the caller's *current* CUDA stream (c10::cuda::getCurrentCUDAStream) had enqueued before the call (an
//     event), and that stream waits for it in turn (another event): inputs produced earlier on the caller's stream
//     are ready, and results are ready for any later work there. No host synchronisation.
//   - Except the gradient reducer's bucket sums (NcclStartSum): the caller's stream goes on without them, so the rest
//     of the backward overlaps them, until NcclWaitForStarted.
//   - The host must synchronise (e.g. .cpu(), .item()) before it reads a result. comm.cc's own host-side steps
//     (row counts over MPI, unless the caller states them) read only host values.
//   - Output tensors are allocated on the caller's stream, which waits for the collective before any later use, so
//     the caching allocator needs no record_stream; the overlapped sums record theirs on the communication stream.

// The communicator is created by the first CUDA collective (every rank reaches it in the same order, as with any
// collective), on that tensor's device: one process drives one GPU, chosen by the caller from LocalRank().
// It is destroyed by comm::Finalize before MPI_Finalize (see DestroyNccl).
//
// The watch (comm.h, the collective watchdog): NCCL calls return at once, and a collective whose peer stalled blocks
// the host later, in whatever synchronises (.item(), a copy to the CPU), where no CollectiveWatch sees it. So each
// collective records an event on its stream behind it, with the time it was enqueued; the watchdog's thread polls
// the oldest events and the communicator's asynchronous error (ncclCommGetAsyncError). An operation not done within
// the collective timeout, or an asynchronous error, aborts the communicator (ncclCommAbort, which ends its kernels
// and unblocks the host) and ends the job with one sentence, as the MPI side does. Timed from the enqueue: a
// stream's backlog ahead of a collective is milliseconds, the timeout minutes.
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <mutex>

#include "comm/backend.h"
#include "comm/comm.h"

namespace tempered::comm::detail {
namespace {

[[noreturn]] void Fail(const char* library, const char* call, const char* file, int line, const std::string& error) {
  Abort(c10::str(file, ":", line, ": ", library, " error in `", call, "`: ", error));
}

ncclComm_t nccl_comm = nullptr;  // written under watch_mutex (the watchdog's thread reads it)
c10::DeviceIndex nccl_device = -1;

// The collectives enqueued and not yet seen done, oldest first, and events to reuse.
struct Enqueued {
  cudaEvent_t done;
  int64_t since_ns;
  const char* what;  // a string literal
};
std::mutex watch_mutex;
std::deque<Enqueued> enqueued;
std::vector<cudaEvent_t> spare_events;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

// ncclGetErrorString / ncclGetLastError are the reporter's own calls and are left bare.
#define NCCL_CHECK(cmd)                                                                              \
  do {                                                                                               \
    const ncclResult_t nccl_check_rc = (cmd);                                                        \
    if (nccl_check_rc != ncclSuccess) {                                                              \
      Fail("NCCL", #cmd, __FILE__, __LINE__,                                                         \
           c10::str(ncclGetErrorString(nccl_check_rc), " (", ncclGetLastError(nccl_comm), ")"));     \
    }                                                                                                \
  } while (0)

#define CUDA_CHECK(cmd)                                                                                 \
  do {                                                                                                  \
    const cudaError_t cuda_check_rc = (cmd);                                                            \
    if (cuda_check_rc != cudaSuccess) Fail("CUDA", #cmd, __FILE__, __LINE__, cudaGetErrorString(cuda_check_rc)); \
  } while (0)

ncclDataType_t NcclType(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat: return ncclFloat32;
    case torch::kDouble: return ncclFloat64;
    case torch::kHalf: return ncclFloat16;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0)
    case torch::kBFloat16: return ncclBfloat16;  // bf16 training's gathered embeddings and gradients
#endif
    case torch::kLong: return ncclInt64;
    case torch::kInt: return ncclInt32;
    case torch::kChar: return ncclInt8;
    case torch::kByte: return ncclUint8;
    default:
      Abort(c10::str("comm: the NCCL backend cannot move ", t.scalar_type(), " tensors (supported: float32, "
                     "float64, float16, bfloat16 from NCCL 2.10, int64, int32, int8, uint8)"));
  }
}

// Called after each collective is enqueued on `stream` (main thread, device guard set).
void Watch(const char* what, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(watch_mutex);
  cudaEvent_t done;
  if (spare_events.empty()) {
    CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  } else {
    done = spare_events.back();
    spare_events.pop_back();
  }
  CUDA_CHECK(cudaEventRecord(done, stream));
  enqueued.push_back({done, NowNs(), what});
}

// The watchdog's poll (SetAsyncPoll), on its thread: "" while all is well; else, with the communicator aborted, the
// sentence that ends the job.
std::string PollNccl(double timeout_seconds) {
  std::lock_guard<std::mutex> lock(watch_mutex);
  if (nccl_comm == nullptr) return "";
  cudaSetDevice(nccl_device);  // this thread's calls go to the communicator's device
  while (!enqueued.empty() && cudaEventQuery(enqueued.front().done) == cudaSuccess) {
    spare_events.push_back(enqueued.front().done);
    enqueued.pop_front();
  }
  ncclResult_t async = ncclSuccess;
  const ncclResult_t queried = ncclCommGetAsyncError(nccl_comm, &async);
  std::string sentence;
  if (queried != ncclSuccess || (async != ncclSuccess && async != ncclInProgress)) {
    sentence = c10::str("rank ", Rank(), "'s NCCL communicator failed: ",
                        ncclGetErrorString(queried != ncclSuccess ? queried : async), " (",
                        ncclGetLastError(nccl_comm), ")");
  } else if (!enqueued.empty() && timeout_seconds > 0 && (NowNs() - enqueued.front().since_ns) * 1e-9 > timeout_seconds) {
    sentence = c10::str("rank ", Rank(), " waited ", timeout_seconds, " s in NCCL ", enqueued.front().what,
                        " for the other ranks; a rank stalled or died");
  }
  if (!sentence.empty()) ncclCommAbort(nccl_comm);  // its kernels end, and so the host's wait for them
  return sentence;
}

// The communicator for t's device, made on first use: rank 0 draws the unique id, MPI carries it to every rank.
ncclComm_t CommFor(const torch::Tensor& t) {
  const c10::DeviceIndex device = t.device().index();
  if (nccl_comm != nullptr) {
    COMM_REQUIRE(device == nccl_device, "NCCL communicates tensors on cuda:", static_cast<int>(nccl_device),
                 " (one GPU per process), got one on cuda:", static_cast<int>(device));
    return nccl_comm;
  }
  ncclUniqueId id;
  if (Rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
  BroadcastBytes(&id, sizeof(id), 0);
  c10::cuda::CUDAGuard guard(device);
  ncclComm_t comm = nullptr;
  {
    // Blocks until every rank has joined: a rank that never arrives (a multi-node network NCCL cannot use, a rank
    // stuck elsewhere) is bounded by the collective timeout like any MPI collective, with the same sentence.
    const CollectiveWatch watch("NCCL communicator creation (ncclCommInitRank)");
    NCCL_CHECK(ncclCommInitRank(&comm, Size(), id, Rank()));
  }
  {
    std::lock_guard<std::mutex> lock(watch_mutex);
    nccl_comm = comm;
    nccl_device = device;
  }
  SetAsyncPoll(PollNccl);
  return nccl_comm;
}

// The communicator's stream. Every collective runs there, in the order the host enqueues them (the same on every
// rank: the collective contract), as c10d's ProcessGroupNCCL does: one communicator's operations spread over several
// streams could run in different orders on different ranks and deadlock. Created on first use, on nccl_device.
cudaStream_t CommStream() {
  static const c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool(/*isHighPriority=*/true, nccl_device);
  return stream.stream();
}

// `later` waits, on the device and not the host, for the work enqueued on `earlier` so far.
void StreamWaits(cudaStream_t later, cudaStream_t earlier) {
  cudaEvent_t event;
  CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventRecord(event, earlier));
  CUDA_CHECK(cudaStreamWaitEvent(later, event, 0));
  CUDA_CHECK(cudaEventDestroy(event));  // its resources are released once it has completed
}

cudaStream_t CallerStream(const torch::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

// Enqueues a collective on the communication stream behind the caller's stream's work so far (so its inputs are
// ready), watched. The caller's stream then waits for it (its result is ready for what follows there, as comm.h
// promises), unless `overlap`: the reducer's bucket sums, which the rest of the backward runs beside;
// NcclWaitForStarted makes the caller's stream wait for them later. An overlapped tensor is recorded on the
// communication stream, so that the caching allocator does not hand its memory out while NCCL still uses it.
template <typename Enqueue>
void OnCommStream(const torch::Tensor& t, const char* what, bool overlap, Enqueue enqueue) {
  ncclComm_t comm = CommFor(t);
  c10::cuda::CUDAGuard guard(t.device());
  const cudaStream_t caller = CallerStream(t), stream = CommStream();
  StreamWaits(stream, caller);
  enqueue(comm, stream);
  Watch(what, stream);
  if (overlap) {
    c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(),
                                                  c10::cuda::getStreamFromExternal(stream, t.device().index()));
  } else {
    StreamWaits(caller, stream);
  }
}

// Every rank's block is the same size: comm.cc pads uneven blocks (Backend.equal_blocks_only), since NCCL has no
// all-gather-v: one ncclAllGather at the largest block's size, where there were W ncclBroadcasts in a group.
void NcclAllGather(const torch::Tensor& in, torch::Tensor& out, const std::vector<int64_t>& elems) {
  OnCommStream(in, "all-gather", false, [&](ncclComm_t comm, cudaStream_t stream) {
    NCCL_CHECK(ncclAllGather(in.data_ptr(), out.data_ptr(), elems[0], NcclType(in), comm, stream));
  });
}

void NcclAllReduce(torch::Tensor& t, Reduction op) {
  OnCommStream(t, "all-reduce", false, [&](ncclComm_t comm, cudaStream_t stream) {
    NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(), NcclType(t),
                             op == Reduction::kSum ? ncclSum : ncclMax, comm, stream));
  });
}

// Equal blocks, as for NcclAllGather.
void NcclReduceScatter(const torch::Tensor& full, torch::Tensor& out, const std::vector<int64_t>& elems) {
  OnCommStream(full, "reduce-scatter", false, [&](ncclComm_t comm, cudaStream_t stream) {
    NCCL_CHECK(ncclReduceScatter(full.data_ptr(), out.data_ptr(), elems[0], NcclType(full), ncclSum, comm, stream));
  });
}

void NcclBroadcast(torch::Tensor& t, int root) {
  OnCommStream(t, "broadcast", false, [&](ncclComm_t comm, cudaStream_t stream) {
    NCCL_CHECK(ncclBroadcast(t.data_ptr(), t.data_ptr(), t.numel(), NcclType(t), root, comm, stream));
  });
}

void NcclStartSum(torch::Tensor& t) {
  OnCommStream(t, "gradient all-reduce", true, [&](ncclComm_t comm, cudaStream_t stream) {
    NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(), NcclType(t), ncclSum, comm, stream));
  });
}

void NcclWaitForStarted(const torch::Tensor& t) {
  c10::cuda::CUDAGuard guard(t.device());
  StreamWaits(CallerStream(t), CommStream());
}

}  // namespace

const Backend kNcclBackend = {"NCCL", /*equal_blocks_only=*/true, NcclAllGather, NcclAllReduce, NcclReduceScatter,
                               NcclBroadcast, NcclStartSum, NcclWaitForStarted};

// Called by comm::Finalize *before* MPI_Finalize: the communicator was bootstrapped over MPI and its teardown
// (ncclCommDestroy finalises it: flushes outstanding work, then frees) still talks to the other ranks.
// Pending work on the streams finishes first: destroying a communicator under a running kernel is undefined.
// The watchdog keeps watching the synchronisation (a peer may stall there too); it stops before the destroy.
void DestroyNccl() {
  if (nccl_comm == nullptr) return;
  {
    c10::cuda::CUDAGuard guard(nccl_device);
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  SetAsyncPoll(nullptr);
  std::lock_guard<std::mutex> lock(watch_mutex);
  for (const Enqueued& e : enqueued) spare_events.push_back(e.done);
  enqueued.clear();
  for (cudaEvent_t e : spare_events) cudaEventDestroy(e);
  spare_events.clear();
  NCCL_CHECK(ncclCommDestroy(nccl_comm));
  nccl_comm = nullptr;
  nccl_device = -1;
}

namespace {

// ncclGetVersion's code is major * 10000 + minor * 100 + patch since NCCL 2.9, major * 1000 + ... before.
std::string NcclVersionText() {
  int code = 0;
  NCCL_CHECK(ncclGetVersion(&code));
  const int major_unit = code >= 10000 ? 10000 : 1000;
  return c10::str(code / major_unit, ".", code % major_unit / 100, ".", code % 100);
}

}  // namespace

}  // namespace tempered::comm::detail

namespace tempered::comm {

std::string NcclVersion() { return detail::NcclVersionText(); }

}  // namespace tempered::comm

