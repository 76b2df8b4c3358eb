// Private to comm/: the table of functions every backend fills (as in nccl-tests), and the helpers the backends
// share. comm.cc validates arguments, handles the one-rank case and picks the table by the tensor's device, so a
// backend sees only contiguous tensors of a supported dtype with consistent sizes, on a world of 2 or more ranks.
// No mpi.h or nccl.h here: each stays inside the one .cc that needs it.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tempered::comm::detail {

enum class Reduction { kSum, kMax };

struct Backend {
  const char* name;
  // The library has no all-gather-v / reduce-scatter-v (NCCL): comm.cc pads uneven blocks to the largest, so the
  // backend's all_gather and reduce_scatter see equal blocks only.
  bool equal_blocks_only;
  // out (sum(elems) elements) = concatenation of every rank's in (elems[rank] elements).
  void (*all_gather)(const torch::Tensor& in, torch::Tensor& out, const std::vector<int64_t>& elems);
  // In place over all of t.
  void (*all_reduce)(torch::Tensor& t, Reduction op);
  // out (elems[rank] elements) = this rank's block of the sum over ranks of full (sum(elems) elements).
  void (*reduce_scatter)(const torch::Tensor& full, torch::Tensor& out, const std::vector<int64_t>& elems);
  void (*broadcast)(torch::Tensor& t, int root);
  // The gradient reducer's overlapped sums of device tensors: start_sum enqueues an in-place sum over ranks that the
  // caller's stream does not wait for; wait_for_started makes the caller's stream (of t's device) wait for every sum
  // started so far. Null for the CPU, whose overlapped sums are AsyncSums (MPI requests).
  void (*start_sum)(torch::Tensor& t);
  void (*wait_for_started)(const torch::Tensor& t);
};

extern const Backend kMpiBackend;   // mpi_backend.cc: CPU tensors
extern const Backend kNcclBackend;  // nccl_backend.cc, or no_nccl.cc which refuses CUDA tensors

// AllGather that also returns the rows contributed by each rank (GatherWithGrad keeps them for its backward).
torch::Tensor AllGatherRows(const torch::Tensor& in, std::vector<int64_t>* rows);
// AllGather of rows whose count on every rank the caller states: no exchange of counts first.
torch::Tensor AllGatherStatedRows(const torch::Tensor& in, const std::vector<int64_t>& rows);

// Host rows to root (comm::GatherToRoot, MPI only): out (sum(rows) x row_elements, on root; undefined elsewhere)
// = every rank's in (rows[rank] x row_elements), in rounds of at most piece_rows rows per rank.
void GatherRowsToRoot(const torch::Tensor& in, torch::Tensor& out, const std::vector<int64_t>& rows,
                      int64_t row_elements, int64_t piece_rows, int root);

// Small host-side collectives over MPI, used by every backend.
// Concatenation over ranks of `mine` (the same length on every rank).
std::vector<int64_t> AllGatherInt64(const std::vector<int64_t>& mine);
// Raw bytes from root to everyone (the NCCL unique id).
void BroadcastBytes(void* data, int64_t bytes, int root);

// Non-blocking in-place sums over ranks of contiguous CPU tensors (MPI_Iallreduce), to overlap communication
// with computation. Every rank starts the same sums in the same order (the collective contract), and a started
// tensor must stay alive and untouched until WaitAll returns. Open MPI has no progress thread here: a started sum
// advances only inside MPI calls, so call Progress() between pieces of work. MPI is called from the thread that
// calls these (FUNNELED: the main thread).
class AsyncSums {
 public:
  AsyncSums();
  ~AsyncSums();
  void Start(torch::Tensor& t);
  void Progress();
  void WaitAll();
  bool Outstanding() const;

 private:
  struct Requests;  // the MPI_Requests, in mpi_backend.cc
  std::unique_ptr<Requests> requests_;
};

// Tears the NCCL communicator down, if one was made. Finalize calls it before MPI_Finalize.
void DestroyNccl();

// "host:rank" for error messages (rank -1 before Init).
std::string Where();

// Prints `line` to stderr as it is, runs the failure hook with `sentence`, and calls MPI_Abort (mpi_backend.cc).
// Callable from any thread: the watchdog calls it while the main thread is stuck inside MPI.
[[noreturn]] void AbortJob(const std::string& line, const std::string& sentence, int code);

// The watchdog (watchdog.cc). A CollectiveWatch around every blocking MPI call of a collective (main thread only)
// records what this rank waits in and since when; nested watches count as the outermost one.
class CollectiveWatch {
 public:
  explicit CollectiveWatch(const char* what);  // a string literal: "all-reduce", "barrier", ...
  ~CollectiveWatch();
  CollectiveWatch(const CollectiveWatch&) = delete;
  CollectiveWatch& operator=(const CollectiveWatch&) = delete;
};
void RunFailureHook(const std::string& sentence);
// A check of asynchronous work that no CollectiveWatch sees (the NCCL backend's collectives, enqueued on a stream),
// which the watchdog's thread runs at every poll with the collective timeout: returns "" while all is well, else the
// sentence of the failure, after which the watchdog takes the job down. nullptr removes it.
void SetAsyncPoll(std::function<std::string(double timeout_seconds)> poll);
// Init starts the watchdog's thread when the world has 2 or more ranks; Finalize stops it before MPI_Finalize.
void StartWatchdog(int rank);
void StopWatchdog();

}  // namespace tempered::comm::detail

// Argument checks of a collective. A throw on one rank would leave the others waiting inside the collective, so a
// failed check takes the whole job down with a sentence saying what was expected.
#define COMM_REQUIRE(cond, ...)                                                                          \
  do {                                                                                                   \
    if (!(cond)) ::tempered::comm::Abort(c10::str("comm: ", __VA_ARGS__, " [" #cond ", ", __FILE__, ":", \
                                                  __LINE__, "]"));                                       \
  } while (0)
