// The MPI side of comm: process setup (init, rank, size, local rank, teardown), the job-wide abort, the scalar
// helpers, and the backend for CPU tensors. The only file besides nccl_backend.cc that includes a library header.
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>

#include "comm/backend.h"
#include "comm/comm.h"

namespace tempered::comm {
namespace {

struct State {
  bool initialized = false;
  bool finalized = false;
  bool owns_mpi = false;  // false when someone else called MPI_Init first: they finalise it too
  int rank = -1;
  int size = 1;
  int local_rank = 0;
  int local_size = 1;
  MPI_Comm local = MPI_COMM_NULL;
};

State& GetState() {
  static State state;
  return state;
}

// The failure path of MPI_CHECK. MPI_Error_string and MPI_Abort are the two calls left bare: the reporter cannot
// check itself. MPI_COMM_WORLD has MPI_ERRORS_RETURN (set in Init), so errors reach here instead of MPI's own
// handler, which prints neither the call nor the line.
[[noreturn]] void MpiFail(const char* call, const char* file, int line, int code) {
  char text[MPI_MAX_ERROR_STRING] = "unknown MPI error";
  int length = 0;
  MPI_Error_string(code, text, &length);
  Abort(c10::str(file, ":", line, ": MPI error in `", call, "`: ", text));
}

#define MPI_CHECK(cmd)                                                           \
  do {                                                                           \
    const int mpi_check_rc = (cmd);                                              \
    if (mpi_check_rc != MPI_SUCCESS) MpiFail(#cmd, __FILE__, __LINE__, mpi_check_rc); \
  } while (0)

const State& Ready() {
  const State& s = GetState();
  COMM_REQUIRE(s.initialized, "comm::Init must be called before any other comm function");
  return s;
}

MPI_Datatype MpiType(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat: return MPI_FLOAT;
    case torch::kDouble: return MPI_DOUBLE;
    case torch::kLong: return MPI_INT64_T;
    case torch::kInt: return MPI_INT32_T;
    case torch::kShort: return MPI_INT16_T;
    case torch::kChar: return MPI_INT8_T;
    case torch::kByte: return MPI_UINT8_T;
    default:
      Abort(c10::str("comm: the MPI backend cannot move ", t.scalar_type(),
                     " tensors (supported: float32, float64, int64, int32, int16, int8, uint8)"));
  }
}

// MPI counts and displacements are int: one call moves at most 2^31-1 elements per rank and in total.
int MpiCount(int64_t n) {
  COMM_REQUIRE(n >= 0 && n <= INT_MAX, "one MPI collective can move at most ", INT_MAX, " elements, got ", n);
  return static_cast<int>(n);
}

// Counts and displacements (in elements) of an uneven collective.
void Layout(const std::vector<int64_t>& elems, std::vector<int>* counts, std::vector<int>* displs) {
  int64_t offset = 0;
  for (int64_t e : elems) {
    counts->push_back(MpiCount(e));
    displs->push_back(MpiCount(offset));
    offset += e;
  }
  MpiCount(offset);
}

void MpiAllGather(const torch::Tensor& in, torch::Tensor& out, const std::vector<int64_t>& elems) {
  std::vector<int> counts, displs;
  Layout(elems, &counts, &displs);
  const MPI_Datatype type = MpiType(in);
  const detail::CollectiveWatch watch("all-gather");
  MPI_CHECK(MPI_Allgatherv(in.data_ptr(), counts[Rank()], type, out.data_ptr(), counts.data(), displs.data(),
                           type, MPI_COMM_WORLD));
}

void MpiAllReduce(torch::Tensor& t, detail::Reduction op) {
  const detail::CollectiveWatch watch("all-reduce");
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), MpiCount(t.numel()), MpiType(t),
                          op == detail::Reduction::kSum ? MPI_SUM : MPI_MAX, MPI_COMM_WORLD));
}

// MPI_Reduce_scatter takes per-rank counts (MPI_Reduce_scatter_block only equal ones).
void MpiReduceScatter(const torch::Tensor& full, torch::Tensor& out, const std::vector<int64_t>& elems) {
  std::vector<int> counts, displs;
  Layout(elems, &counts, &displs);
  const detail::CollectiveWatch watch("reduce-scatter");
  MPI_CHECK(MPI_Reduce_scatter(full.data_ptr(), out.data_ptr(), counts.data(), MpiType(full), MPI_SUM,
                               MPI_COMM_WORLD));
}

void MpiBroadcast(torch::Tensor& t, int root) {
  const detail::CollectiveWatch watch("broadcast");
  MPI_CHECK(MPI_Bcast(t.data_ptr(), MpiCount(t.numel()), MpiType(t), root, MPI_COMM_WORLD));
}

}  // namespace

namespace detail {

const Backend kMpiBackend = {"MPI", /*equal_blocks_only=*/false, MpiAllGather, MpiAllReduce,
                              MpiReduceScatter, MpiBroadcast, /*start_sum=*/nullptr,
                              /*wait_for_started=*/nullptr};

// Rows rather than elements are the unit (a contiguous datatype of one row), so displacements stay within int for
// any set of fewer than 2^31 rows; each round moves at most piece_rows rows from each rank, straight into out.
void GatherRowsToRoot(const torch::Tensor& in, torch::Tensor& out, const std::vector<int64_t>& rows,
                      int64_t row_elements, int64_t piece_rows, int root) {
  const int64_t most = *std::max_element(rows.begin(), rows.end());
  if (most == 0 || row_elements == 0) return;
  MPI_Datatype row;
  MPI_CHECK(MPI_Type_contiguous(MpiCount(row_elements), MpiType(in), &row));
  MPI_CHECK(MPI_Type_commit(&row));
  const bool is_root = Rank() == root;
  const int64_t row_bytes = row_elements * static_cast<int64_t>(in.element_size());
  for (int64_t first = 0; first < most; first += piece_rows) {  // this round: rows [first, first + piece_rows)
    std::vector<int> counts, displs;
    int64_t offset = 0;
    for (int64_t r : rows) {
      counts.push_back(MpiCount(std::clamp<int64_t>(r - first, 0, piece_rows)));
      displs.push_back(MpiCount(offset + std::min(first, r)));
      offset += r;
    }
    const char* send = static_cast<const char*>(in.data_ptr()) + std::min(first, rows[Rank()]) * row_bytes;
    const CollectiveWatch watch("gather");
    MPI_CHECK(MPI_Gatherv(send, counts[Rank()], row, is_root ? out.data_ptr() : nullptr, counts.data(),
                          displs.data(), row, root, MPI_COMM_WORLD));
  }
  MPI_CHECK(MPI_Type_free(&row));
}

std::vector<int64_t> AllGatherInt64(const std::vector<int64_t>& mine) {
  const State& s = Ready();
  if (s.size == 1) return mine;
  std::vector<int64_t> all(mine.size() * s.size);
  const int k = MpiCount(static_cast<int64_t>(mine.size()));
  const CollectiveWatch watch("all-gather of sizes");
  MPI_CHECK(MPI_Allgather(mine.data(), k, MPI_INT64_T, all.data(), k, MPI_INT64_T, MPI_COMM_WORLD));
  return all;
}

void BroadcastBytes(void* data, int64_t bytes, int root) {
  if (Ready().size == 1) return;
  const CollectiveWatch watch("broadcast");
  MPI_CHECK(MPI_Bcast(data, MpiCount(bytes), MPI_BYTE, root, MPI_COMM_WORLD));
}

struct AsyncSums::Requests {
  std::vector<MPI_Request> pending;
};

AsyncSums::AsyncSums() : requests_(std::make_unique<Requests>()) {}
AsyncSums::~AsyncSums() = default;

void AsyncSums::Start(torch::Tensor& t) {
  COMM_REQUIRE(t.is_cpu() && t.is_contiguous(), "AsyncSums needs a contiguous CPU tensor");
  requests_->pending.emplace_back();
  MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, t.data_ptr(), MpiCount(t.numel()), MpiType(t), MPI_SUM, MPI_COMM_WORLD,
                           &requests_->pending.back()));
}

void AsyncSums::Progress() {
  std::vector<MPI_Request>& pending = requests_->pending;
  if (pending.empty()) return;
  int done = 0;  // completed requests become MPI_REQUEST_NULL; WaitAll clears them
  MPI_CHECK(MPI_Testall(static_cast<int>(pending.size()), pending.data(), &done, MPI_STATUSES_IGNORE));
}

void AsyncSums::WaitAll() {
  std::vector<MPI_Request>& pending = requests_->pending;
  const CollectiveWatch watch("gradient all-reduce");
  MPI_CHECK(MPI_Waitall(static_cast<int>(pending.size()), pending.data(), MPI_STATUSES_IGNORE));
  pending.clear();
}

bool AsyncSums::Outstanding() const { return !requests_->pending.empty(); }

std::string Where() {
  char host[256] = "unknown-host";
  gethostname(host, sizeof(host) - 1);
  return c10::str(host, ":", GetState().rank);
}

}  // namespace detail

void Init(int* argc, char*** argv) {
  State& s = GetState();
  if (s.initialized) return;
  int already = 0;
  MPI_CHECK(MPI_Initialized(&already));
  if (!already) {
    // FUNNELED: only the main thread calls MPI (LibTorch's worker threads never do). Without mpirun, Open MPI
    // starts a singleton world of one process.
    int provided = 0;
    MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    s.owns_mpi = true;
    COMM_REQUIRE(provided >= MPI_THREAD_FUNNELED, "MPI provides thread level ", provided, " < MPI_THREAD_FUNNELED");
  }
  s.initialized = true;
  // Errors come back as codes, so MPI_CHECK can name the call and line before taking the job down. Communicators
  // split from MPI_COMM_WORLD inherit the handler.
  MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &s.rank));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &s.size));
  // The processes that share memory are the processes of this node.
  MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, s.rank, MPI_INFO_NULL, &s.local));
  MPI_CHECK(MPI_Comm_rank(s.local, &s.local_rank));
  MPI_CHECK(MPI_Comm_size(s.local, &s.local_size));
  if (s.size > 1) detail::StartWatchdog(s.rank);
}

void Finalize() {
  State& s = GetState();
  if (!s.initialized || s.finalized) return;
  // Teardown order: the NCCL communicator first. It was bootstrapped over MPI and ncclCommDestroy may still
  // exchange messages with its peers; after MPI_Finalize the job's processes may already be gone.
  detail::DestroyNccl();
  detail::StopWatchdog();  // before MPI_Finalize: it must not call MPI_Abort after it
  MPI_CHECK(MPI_Comm_free(&s.local));
  if (s.owns_mpi) MPI_CHECK(MPI_Finalize());
  s.finalized = true;
}

bool Initialized() { return GetState().initialized && !GetState().finalized; }
int Rank() { return Ready().rank; }
int Size() { return Ready().size; }
int LocalRank() { return Ready().local_rank; }
int LocalSize() { return Ready().local_size; }

std::vector<std::string> AllGatherStrings(const std::string& mine) {
  const State& s = Ready();
  if (s.size == 1) return {mine};
  const std::vector<int64_t> lengths = detail::AllGatherInt64({static_cast<int64_t>(mine.size())});
  std::vector<int> counts, displs;
  Layout(lengths, &counts, &displs);
  std::string all(static_cast<size_t>(displs.back()) + counts.back(), '\0');
  const detail::CollectiveWatch watch("all-gather of strings");
  MPI_CHECK(MPI_Allgatherv(mine.data(), counts[s.rank], MPI_CHAR, all.data(), counts.data(), displs.data(),
                           MPI_CHAR, MPI_COMM_WORLD));
  std::vector<std::string> strings;
  for (int r = 0; r < s.size; ++r) strings.push_back(all.substr(displs[r], counts[r]));
  return strings;
}

std::string MpiLibraryVersion() {
  char version[MPI_MAX_LIBRARY_VERSION_STRING] = "";
  int length = 0;
  MPI_CHECK(MPI_Get_library_version(version, &length));
  const std::string text(version);  // NUL-terminated (`length` counts the NUL in Open MPI 4)
  return text.substr(0, text.find_first_of("\r\n"));  // Open MPI appends a newline, MPICH several lines
}

double AllReduceSum(double v) {
  const detail::CollectiveWatch watch("all-reduce");
  if (Ready().size > 1) MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
  return v;
}

double AllReduceMax(double v) {
  const detail::CollectiveWatch watch("all-reduce");
  if (Ready().size > 1) MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
  return v;
}

void Barrier() {
  const detail::CollectiveWatch watch("barrier");
  if (Ready().size > 1) MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
}

void Abort(const std::string& message, int code) {
  detail::AbortJob(c10::str("[tempered ", detail::Where(), "] ", message), message, code);
}

namespace detail {

void AbortJob(const std::string& line, const std::string& sentence, int code) {
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
  RunFailureHook(sentence);
  const State& s = GetState();
  if (s.initialized && !s.finalized) MPI_Abort(MPI_COMM_WORLD, code);  // kills every rank: nobody hangs
  std::exit(code);
}

}  // namespace detail

}  // namespace tempered::comm
