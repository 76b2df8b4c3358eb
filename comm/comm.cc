// The tensor collectives of comm.h: validate the arguments, take the one-rank shortcut (a copy or nothing, no
// library call), make the tensors contiguous, and hand them to the backend of their device (CPU -> MPI,
// CUDA -> NCCL).
#include "comm/comm.h"

#include <algorithm>
#include <atomic>
#include <numeric>

#include "comm/backend.h"

namespace tempered::comm {
namespace {

std::atomic<bool> pad_uneven_on_cpu{false};  // PadUnevenBlocksOnCpuForTesting

const detail::Backend& BackendFor(const torch::Tensor& t) {
  if (t.is_cuda()) return detail::kNcclBackend;
  COMM_REQUIRE(t.is_cpu(), "tensors on ", t.device(), " cannot be communicated (CPU uses MPI, CUDA uses NCCL)");
  return detail::kMpiBackend;
}

bool PadsUnevenBlocks(const detail::Backend& backend) { return backend.equal_blocks_only || pad_uneven_on_cpu; }

// Elements in one row (dims 1..); well defined when there are 0 rows.
int64_t RowElements(const torch::Tensor& t) {
  int64_t n = 1;
  for (int64_t d = 1; d < t.dim(); ++d) n *= t.size(d);
  return n;
}

// The shape of `t` with dim 0 replaced by `rows`.
std::vector<int64_t> WithRows(const torch::Tensor& t, int64_t rows) {
  std::vector<int64_t> shape = t.sizes().vec();
  shape[0] = rows;
  return shape;
}

std::vector<int64_t> Times(const std::vector<int64_t>& rows, int64_t row_elements) {
  std::vector<int64_t> elems;
  for (int64_t r : rows) elems.push_back(r * row_elements);
  return elems;
}

// The output buffer of one kind of row collective on the CPU, reused from call to call once nothing outside holds
// it: the last result and every view of it dropped (its storage referenced only here), so a result the caller still
// holds is never overwritten. Why: at 1 MiB per rank the same MPI calls into a fresh heap buffer each time were
// 1.1-1.35x slower than into the same one (bench/README.md, "## gather"). CUDA tensors come from LibTorch's
// caching allocator instead. One per thread: autograd may run a CPU backward on another thread than the forward's.
class ReusedBuffer {
 public:
  static inline std::atomic<int64_t> allocations{0};  // by every thread's buffers (RowBufferAllocations)

  torch::Tensor Get(const std::vector<int64_t>& shape, const torch::TensorOptions& options) {
    if (!options.device().is_cpu()) return torch::empty(shape, options);
    if (!kept_.defined() || kept_.storage().use_count() != 1 || kept_.sizes() != shape ||
        kept_.dtype() != options.dtype()) {
      kept_ = torch::empty(shape, options);
      ++allocations;
    }
    return kept_.detach();  // a new tensor on the same storage: what the caller attaches (history) stays its own
  }

 private:
  torch::Tensor kept_;
};

thread_local ReusedBuffer gathered_rows, reduced_rows;

// In-place collectives work on a contiguous buffer and copy back only when t was not contiguous.
template <typename Op>
void InPlace(torch::Tensor& t, Op op) {
  torch::NoGradGuard no_grad;
  if (t.is_contiguous()) return op(t);
  torch::Tensor buffer = t.contiguous();
  op(buffer);
  t.copy_(buffer);
}

void AllReduce(torch::Tensor& t, detail::Reduction op) {
  if (Size() == 1 || t.numel() == 0) return;  // every rank holds the same shape, so all skip together
  const detail::Backend& backend = BackendFor(t);
  InPlace(t, [&](torch::Tensor& buffer) { backend.all_reduce(buffer, op); });
}

// Every rank's row count, from one small host-side exchange that also checks that the rows agree in size and dtype
// (which would otherwise corrupt memory silently). NCCL needs the sizes on the host too, so this costs CUDA tensors
// nothing extra.
std::vector<int64_t> RowsOfEveryRank(const torch::Tensor& local, const char* collective) {
  const int64_t row_elements = RowElements(local);
  const auto dtype = static_cast<int64_t>(local.scalar_type());
  const std::vector<int64_t> all = detail::AllGatherInt64({local.size(0), row_elements, dtype});
  std::vector<int64_t> rows;
  for (int r = 0; r < Size(); ++r) {
    COMM_REQUIRE(all[3 * r + 1] == row_elements && all[3 * r + 2] == dtype, collective, ": rank ", r,
                 " sends rows of ", all[3 * r + 1], " elements of dtype ",
                 static_cast<torch::ScalarType>(all[3 * r + 2]), ", rank ", Rank(), " rows of ", row_elements,
                 " elements of dtype ", local.scalar_type());
    rows.push_back(all[3 * r]);
  }
  return rows;
}

bool AllEqual(const std::vector<int64_t>& v) {
  return std::all_of(v.begin(), v.end(), [&](int64_t x) { return x == v.front(); });
}

// out = every rank's rows, by a backend that takes equal blocks only: each rank sends its rows padded to the
// largest count, one equal all-gather fills (W x largest) rows, and the padding is cut out on the device (W row
// copies, no host synchronisation). Instead of W broadcasts, one collective at the size of the largest block.
void PaddedAllGather(const detail::Backend& backend, const torch::Tensor& local, torch::Tensor& out,
                     const std::vector<int64_t>& rows) {
  const int64_t largest = *std::max_element(rows.begin(), rows.end());
  torch::Tensor send = torch::zeros(WithRows(local, largest), local.options());
  send.narrow(0, 0, local.size(0)).copy_(local);
  torch::Tensor padded = torch::empty(WithRows(local, largest * Size()), local.options());
  backend.all_gather(send, padded, std::vector<int64_t>(Size(), largest * RowElements(local)));
  int64_t offset = 0;
  for (int r = 0; r < Size(); ++r) {
    out.narrow(0, offset, rows[r]).copy_(padded.narrow(0, r * largest, rows[r]));
    offset += rows[r];
  }
}

// This rank's block of the sum over ranks of `full`, by a backend that takes equal blocks only: the blocks are
// spread into (W x largest) zero-padded rows, reduce-scattered equally, and this rank's first counts[rank] rows kept.
void PaddedReduceScatter(const detail::Backend& backend, const torch::Tensor& full, torch::Tensor& out,
                         const std::vector<int64_t>& counts) {
  const int64_t largest = *std::max_element(counts.begin(), counts.end());
  torch::Tensor padded = torch::zeros(WithRows(full, largest * Size()), full.options());
  int64_t offset = 0;
  for (int r = 0; r < Size(); ++r) {
    padded.narrow(0, r * largest, counts[r]).copy_(full.narrow(0, offset, counts[r]));
    offset += counts[r];
  }
  torch::Tensor mine = torch::empty(WithRows(full, largest), full.options());
  backend.reduce_scatter(padded, mine, std::vector<int64_t>(Size(), largest * RowElements(full)));
  out.copy_(mine.narrow(0, 0, counts[Rank()]));
}

void GatherRowsInto(const torch::Tensor& local, torch::Tensor& out, const std::vector<int64_t>& rows) {
  const detail::Backend& backend = BackendFor(local);
  if (PadsUnevenBlocks(backend) && !AllEqual(rows)) return PaddedAllGather(backend, local, out, rows);
  backend.all_gather(local, out, Times(rows, RowElements(local)));
}

}  // namespace

namespace detail {

torch::Tensor AllGatherRows(const torch::Tensor& in, std::vector<int64_t>* rows) {
  COMM_REQUIRE(in.dim() >= 1, "AllGather needs a tensor with a row dimension, got a 0-dim tensor");
  torch::Tensor local = in.detach().contiguous();  // a plain gather has no gradient (see GatherWithGrad)
  if (Size() == 1) {
    *rows = {in.size(0)};
    return local.clone();
  }
  *rows = RowsOfEveryRank(local, "AllGather");
  const int64_t total = std::accumulate(rows->begin(), rows->end(), int64_t{0});
  torch::Tensor out = gathered_rows.Get(WithRows(local, total), local.options());
  GatherRowsInto(local, out, *rows);
  return out;
}

torch::Tensor AllGatherStatedRows(const torch::Tensor& in, const std::vector<int64_t>& rows) {
  COMM_REQUIRE(in.dim() >= 1, "AllGather needs a tensor with a row dimension, got a 0-dim tensor");
  COMM_REQUIRE(static_cast<int>(rows.size()) == Size(), "AllGather needs one row count per rank (", Size(),
               "), got ", rows.size());
  COMM_REQUIRE(in.size(0) == rows[Rank()], "AllGather: rank ", Rank(), " was stated to send ", rows[Rank()],
               " rows but sends ", in.size(0));
  torch::Tensor local = in.detach().contiguous();
  if (Size() == 1) return local.clone();
  const int64_t total = std::accumulate(rows.begin(), rows.end(), int64_t{0});
  torch::Tensor out = gathered_rows.Get(WithRows(local, total), local.options());
  GatherRowsInto(local, out, rows);
  return out;
}

}  // namespace detail

void PadUnevenBlocksOnCpuForTesting(bool pad) { pad_uneven_on_cpu = pad; }

std::vector<int64_t> AllGatherCounts(int64_t rows) { return detail::AllGatherInt64({rows}); }

torch::Tensor AllGather(const torch::Tensor& in) {
  std::vector<int64_t> rows;
  return detail::AllGatherRows(in, &rows);
}

torch::Tensor AllGather(const torch::Tensor& in, const std::vector<int64_t>& rows) {
  return detail::AllGatherStatedRows(in, rows);
}

void AllReduceSum(torch::Tensor& t) { AllReduce(t, detail::Reduction::kSum); }
void AllReduceMax(torch::Tensor& t) { AllReduce(t, detail::Reduction::kMax); }

torch::Tensor ReduceScatterSum(const torch::Tensor& full, const std::vector<int64_t>& counts) {
  COMM_REQUIRE(full.dim() >= 1, "ReduceScatterSum needs a tensor with a row dimension, got a 0-dim tensor");
  COMM_REQUIRE(static_cast<int>(counts.size()) == Size(), "ReduceScatterSum needs one count per rank (", Size(),
               "), got ", counts.size());
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  COMM_REQUIRE(total == full.size(0), "ReduceScatterSum: the counts add up to ", total, " rows but the tensor has ",
               full.size(0));
  for (int64_t c : counts) COMM_REQUIRE(c >= 0, "ReduceScatterSum: negative count ", c);
  torch::Tensor in = full.detach().contiguous();
  if (Size() == 1) return in.clone();
  torch::Tensor out = reduced_rows.Get(WithRows(in, counts[Rank()]), in.options());
  const detail::Backend& backend = BackendFor(in);
  if (PadsUnevenBlocks(backend) && !AllEqual(counts)) {
    PaddedReduceScatter(backend, in, out, counts);
  } else {
    backend.reduce_scatter(in, out, Times(counts, RowElements(in)));
  }
  return out;
}

int FirstFailedRank(bool failed) {
  // The maximum over ranks of -rank (failed) or -Size() (did not) is minus the lowest rank that failed.
  const double lowest = -AllReduceMax(failed ? -static_cast<double>(Rank()) : -static_cast<double>(Size()));
  return lowest < Size() ? static_cast<int>(lowest) : -1;
}

int64_t RowBufferAllocations() { return ReusedBuffer::allocations.load(); }

torch::Tensor GatherToRoot(const torch::Tensor& in, int root, int64_t piece_bytes) {
  COMM_REQUIRE(in.dim() >= 1, "GatherToRoot needs a tensor with a row dimension, got a 0-dim tensor");
  COMM_REQUIRE(in.is_cpu(), "GatherToRoot moves host tensors (evaluation's features), got one on ", in.device());
  COMM_REQUIRE(root >= 0 && root < Size(), "GatherToRoot: root ", root, " is not a rank of a world of ", Size());
  torch::Tensor local = in.detach().contiguous();
  if (Size() == 1) return local;  // no copy: the caller's (large) set is the result
  const std::vector<int64_t> rows = RowsOfEveryRank(local, "GatherToRoot");
  const int64_t row_bytes = RowElements(local) * static_cast<int64_t>(local.element_size());
  const int64_t piece_rows = row_bytes == 0 ? 1 : piece_bytes / row_bytes;
  COMM_REQUIRE(piece_rows >= 1, "GatherToRoot: one row of ", row_bytes, " bytes is larger than a piece (",
               piece_bytes, " bytes)");
  torch::Tensor out;
  if (Rank() == root) {
    out = torch::empty(WithRows(local, std::accumulate(rows.begin(), rows.end(), int64_t{0})), local.options());
  }
  detail::GatherRowsToRoot(local, out, rows, RowElements(local), piece_rows, root);
  return out;
}

void Broadcast(torch::Tensor& t, int root) {
  COMM_REQUIRE(root >= 0 && root < Size(), "Broadcast: root ", root, " is not a rank of a world of ", Size());
  if (Size() == 1 || t.numel() == 0) return;
  const detail::Backend& backend = BackendFor(t);
  InPlace(t, [&](torch::Tensor& buffer) { backend.broadcast(buffer, root); });
}

}  // namespace tempered::comm
