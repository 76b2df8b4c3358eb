// comm: the distributed layer of Tempered: a handful of free functions and one autograd gather.
//
// Contract (as in every collective library): every rank calls the same collectives in the same order with
// tensors of the same dtype. CPU tensors go through MPI; CUDA tensors through NCCL when it is compiled in
// (bootstrapped over MPI), on the current CUDA stream: the result is ready for later work on that stream, and the
// host must synchronise before reading it. With one rank every collective is a copy or a no-op, so the same code
// runs on one process and on many.
//
// Errors inside a collective are broken invariants or a dead peer: they print host, rank, file:line, the call
// and the library's error string, then take the whole job down (MPI_Abort), so no rank hangs.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace tempered::comm {

// Initialises MPI (thread level FUNNELED: MPI is called from the main thread only, but for the watchdog's final
// MPI_Abort) once per process; later calls are no-ops. Safe to call when not launched by mpirun (a world of 1).
// Every other function needs it first.
void Init(int* argc, char*** argv);
// Destroys the NCCL communicator (if any), then finalises MPI. Call after the last collective; later calls are
// no-ops.
void Finalize();
bool Initialized();

int Rank();
int Size();
// Rank among the processes on this node (for choosing a GPU and the thread count).
int LocalRank();
int LocalSize();

// out = concatenation along dim 0 of every rank's `in` (dims 1.. equal on every rank). Ranks may contribute
// different numbers of rows, including 0.
torch::Tensor AllGather(const torch::Tensor& in);
// AllGather where the caller states every rank's row count (`rows`, one per rank, the same list on every rank), as
// the trainer can from the shard sizes: no exchange of counts (a host round trip per call) before the data. Only
// this rank's count is checked; rows must agree in size and dtype on every rank (the collective contract).
torch::Tensor AllGather(const torch::Tensor& in, const std::vector<int64_t>& rows);
// Rows contributed by each rank to an AllGather of `rows` local rows (collective).
std::vector<int64_t> AllGatherCounts(int64_t rows);
// Uneven blocks through NCCL, which has no all-gather-v or reduce-scatter-v, are padded to the largest block and
// moved by one equal collective. This sends CPU tensors the same way, so that the tests cover that path on MPI.
void PadUnevenBlocksOnCpuForTesting(bool pad);

// The concatenation along dim 0 of every rank's CPU tensor `in`, on `root` only (every other rank gets an undefined
// tensor): for results one rank uses, such as evaluation's features, which an AllGather would copy onto every rank.
// Sent in rounds of at most `piece_bytes` per rank (default 1 GiB: MPI counts are int, and Open MPI's transports
// have mishandled single messages above 2 GiB), so an ImageNet-scale set (1.28M x 2048 floats = 10 GB) goes through.
// Ranks may contribute different numbers of rows, including 0. With one rank the result is `in` itself (contiguous),
// not a copy. `piece_bytes` is smaller in the tests.
constexpr int64_t kGatherPieceBytes = int64_t{1} << 30;
torch::Tensor GatherToRoot(const torch::Tensor& in, int root, int64_t piece_bytes = kGatherPieceBytes);

// Every rank's `mine`, in rank order, on every rank: for small host strings such as a rank's host and devices
// (lengths may differ, "" included). Over MPI. Collective.
std::vector<std::string> AllGatherStrings(const std::string& mine);

// In-place elementwise sum over ranks.
void AllReduceSum(torch::Tensor& t);
// In-place elementwise max over ranks.
void AllReduceMax(torch::Tensor& t);
// Sum over ranks of a full tensor (dim 0 = sum of `counts`), returning this rank's block of counts[rank()] rows.
torch::Tensor ReduceScatterSum(const torch::Tensor& full, const std::vector<int64_t>& counts);
// Overwrites t on every rank with root's t.
void Broadcast(torch::Tensor& t, int root);
// Scalar helpers for control decisions that every rank must agree on.
double AllReduceSum(double v);
double AllReduceMax(double v);
void Barrier();
// Failure agreement: every rank says whether it failed, and every rank gets the lowest rank that did, or -1 when
// none did. So an error on one rank (a file only that node cannot read) ends every rank together instead of leaving
// the others waiting in the next collective. Collective.
int FirstFailedRank(bool failed);

// CPU output buffers the row collectives (AllGather, GatherWithGrad and its backward) allocated on this process so
// far instead of reusing the last one (which happens only once nothing outside holds it): a diagnostic for the tests
// and benchmarks that check a training step leaves nothing holding the gathered rows.
int64_t RowBufferAllocations();

// The libraries comm runs on, for a run's record: MPI_Get_library_version's first line ("Open MPI v4.1.4, package:
// ..."); NCCL's version ("2.28.5"), "" in a build without NCCL. Callable before Init.
std::string MpiLibraryVersion();
std::string NcclVersion();

// Takes the whole job down: prints `message`, runs the failure hook and calls MPI_Abort. Never returns.
[[noreturn]] void Abort(const std::string& message, int code = 1);

// The collective watchdog (comm/watchdog.cc). Every blocking collective of the MPI backend is bounded: a rank that
// waits in one for longer than the timeout (for a peer that was stopped, deadlocked, or lost with a node whose TCP
// connection never closes) prints "<program>: error: rank R waited T s in <collective> for the other ranks; a rank
// stalled or died", runs the failure hook and takes the job down (MPI_Abort kills every rank). A timeout <= 0
// disables it. Collectives of CUDA tensors (NCCL, asynchronous on a stream) are watched by the NCCL backend with
// the same timeout: an operation not complete after it, or an asynchronous NCCL error, aborts the communicator
// (ncclCommAbort) and takes the job down with the same kind of sentence.
constexpr double kDefaultCollectiveTimeoutSeconds = 600;
void SetCollectiveTimeout(double seconds);
double CollectiveTimeout();

// Within its scope this rank's collectives wait up to `seconds` (<= 0: without bound) instead of the collective
// timeout, and a timeout's sentence says what was awaited: "... for <waiting_for>" (a string literal). For the one
// kind of wait the collective timeout does not fit: the other ranks waiting for work rank 0 does alone for as long
// as the data set demands (evaluation: minutes to hours). Scopes do not nest.
class LongWait {
 public:
  LongWait(double seconds, const char* waiting_for);
  ~LongWait();
  LongWait(const LongWait&) = delete;
  LongWait& operator=(const LongWait&) = delete;
};

// `hook(sentence)` runs on this rank when the job is about to be taken down from here (Abort, an MPI error, the
// watchdog), and within 50 ms of a stop request (NoteStopRequested): that is how mpirun ends the survivors of a
// rank that died or aborted (SIGTERM, then SIGKILL up to a second later), so the hook should record the failure at
// once; if the run goes on to stop gracefully after all (every rank was told to stop), the caller overwrites it.
// It may run on the watchdog's thread and must not call comm.
// Pass nullptr to remove it (before whatever it refers to is destroyed).
void SetFailureHook(std::function<void(const std::string& sentence)> hook);
// Async-signal-safe: call it from a SIGTERM / SIGINT handler.
void NoteStopRequested();

// Autograd all-gather: forward = AllGather of the local rows (B_local x d -> B_global x d); backward =
// ReduceScatterSum of the incoming gradient, so each rank receives the summed gradient of its own rows from every
// rank's loss. (A plain all_gather has no gradient: the MoCo trap.) The backward is a collective too: every rank
// must backpropagate through the result.
torch::Tensor GatherWithGrad(const torch::Tensor& local);
// GatherWithGrad with every rank's row count stated (AllGather(in, rows)): no exchange of counts.
torch::Tensor GatherWithGrad(const torch::Tensor& local, const std::vector<int64_t>& rows);

// When a GradientReducer all-reduces its buckets.
enum class ReduceTiming {
  // In Finalize, after backward: one blocking all-reduce per bucket, buckets in the parameters' order.
  kAfterBackward,
  // During backward, from autograd hooks: buckets in reverse parameter order (backward produces the last layers'
  // gradients first), each started (non-blocking) as soon as backward has accumulated all its gradients, so the
  // communication of the late layers overlaps the computation of the early ones; Finalize waits for them. CPU
  // parameters: MPI requests. CUDA parameters (one device): NCCL all-reduces on the communication stream, ordered
  // by events, the host never waiting; there a parameter that no rank gave a gradient gets zeros instead of none.
  // Exactly one backward per Finalize.
  kDuringBackward,
};
// Runs the kDuringBackward reducers built from now on with CPU parameters as they run with CUDA ones (blocking sums
// in place of the NCCL stream; no host read of which ranks had gradients), so that CPU tests cover that logic.
void RunReducerAsOnDeviceForTesting(bool on);

struct ReducerOptions {
  // A bucket is one flat buffer of about this many bytes: one all-reduce of a few MiB costs little more than one
  // of a few KiB. Overlap needs several buckets, so kDuringBackward wants it smaller than the model.
  int64_t bucket_bytes = 8 << 20;
  ReduceTiming timing = ReduceTiming::kAfterBackward;
};

// Averages parameter gradients across ranks. Gradients are packed into buckets of about bucket_bytes in a fixed
// order (the parameters' order, identical on every rank) and all-reduced bucket by bucket.
//
// Contract for kDuringBackward: every rank runs backward over the same graph, so autograd (one thread per device,
// deterministic order) fires the hooks in the same order everywhere; buckets are moreover started strictly in
// bucket order (a bucket complete early waits for the earlier ones), so every rank starts the same all-reduces in
// the same order, also interleaved with the collectives of a backward (GatherWithGrad, sync batch norm).
class GradientReducer {
 public:
  explicit GradientReducer(std::vector<torch::Tensor> parameters, int64_t bucket_bytes = 8 << 20);
  GradientReducer(std::vector<torch::Tensor> parameters, const ReducerOptions& options);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Call after backward, before the optimiser step: every parameter's grad becomes the mean over ranks.
  // Parameters without a gradient are treated as zero gradients; one without a gradient on any rank keeps none.
  void Finalize();

  // How many buckets the gradients are sent in (for the log).
  size_t bucket_count() const;

 private:
  struct Overlap;  // the kDuringBackward state and its autograd hooks (comm/reducer.cc)

  std::vector<torch::Tensor> parameters_;
  std::vector<std::vector<size_t>> buckets_;  // indices into parameters_ (kAfterBackward)
  std::unique_ptr<Overlap> overlap_;          // null unless kDuringBackward is in effect
};

}  // namespace tempered::comm
