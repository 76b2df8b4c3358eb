// gather: comm::GatherWithGrad forward + backward against the raw MPI calls that move the same bytes, side by side
// in one run. The raw side is the baseline, not project code, so it calls MPI directly:
//   MPI_Allgather of the (rows, dim) float block, then MPI_Reduce_scatter (equal counts) of the (size x rows, dim)
// gradient, into buffers allocated once; and the same with MPI_Allgatherv. The faster of the two is the baseline. The GatherWithGrad side runs what the trainer runs: a leaf (rows, dim), the gathered
// (size x rows, dim) tensor, backward of a fixed gradient through it (autograd, allocation and the row-count
// exchange included). Two parts of the difference are also timed alone: the row-count exchange
// (comm::AllGatherCounts, a 3-int64 all-gather that lets uneven shards and mismatched shapes be caught) and
// LibTorch's autograd (GatherWithGrad's node and allocations without the communication: mostly the engine's fixed
// cost per backward() call, which a training step pays once for its whole graph).
//
//   mpirun -np N gather_bench [--rows 128,1024,8192] [--dim 128] [--repetitions 21] [--iterations 10]
//
// Launch with docs/cpu.md's reduce-scatter tuning (--mca coll_tuned_use_dynamic_rules 1
// --mca coll_tuned_reduce_scatter_block_algorithm 2 --mca coll_tuned_reduce_scatter_algorithm 2): the MCA settings
// are per process, so both sides get them. One repetition times --iterations calls of each side (in an order that
// alternates between repetitions) after a barrier, on the slowest rank; the median over repetitions is reported.
// The machine is shared and busy-polling ranks lose their core for milliseconds at a time, so a repetition is one
// call by default and the median keeps only the undisturbed ones.
// Prints a table and ends with: TARGET gather <worst ratio over the sizes> <=1.2 PASS|FAIL.
#include <gflags/gflags.h>
#include <mpi.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "trainer/train.h"

DEFINE_string(rows, "128,1024,8192", "rows per rank (comma-separated); a SimCLR step of batch B gathers 2B/N");
DEFINE_int32(dim, 128, "row width (floats)");
DEFINE_int32(repetitions, 101, "timed repetitions per side and size (the median is reported)");
DEFINE_int32(iterations, 1, "calls per repetition");
DEFINE_double(target, 1.2, "the target: GatherWithGrad time / raw MPI time <= target");

namespace tempered {
namespace {

#define BENCH_MPI(cmd)                                                                                        \
  do {                                                                                                        \
    if ((cmd) != MPI_SUCCESS) comm::Abort(std::string("gather_bench: ") + #cmd + " failed at line " +        \
                                          std::to_string(__LINE__));                                          \
  } while (0)

std::vector<int64_t> ParseList(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoll(item));
  return out;
}

// Seconds per call of fn on the slowest rank.
template <typename Fn>
double TimePerCall(Fn fn) {
  comm::Barrier();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < FLAGS_iterations; ++i) fn();
  const double local = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return comm::AllReduceMax(local) / FLAGS_iterations;
}

// GatherWithGrad with the communication taken out: the same autograd node structure (comm/gather.cc), the same
// allocations ((size x rows, dim) forward output, a fresh (rows, dim) gradient that the leaf takes over), no MPI.
// What it costs is LibTorch's share of GatherWithGrad: the engine's fixed cost per backward() call, the node, the
// allocator.
struct NoCommBackward : public torch::autograd::Node {
  int64_t rows = 0;
  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    return {torch::empty({rows, grads[0].size(1)}, grads[0].options())};
  }
};

torch::Tensor NoCommGather(const torch::Tensor& local, int ranks) {
  torch::Tensor global = torch::empty({ranks * local.size(0), local.size(1)}, local.options());
  std::shared_ptr<NoCommBackward> node(new NoCommBackward(), torch::autograd::deleteNode);
  node->rows = local.size(0);
  node->set_next_edges(torch::autograd::collect_next_edges(local));
  torch::autograd::set_history(global, node);
  return global;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Returns GatherWithGrad time / raw time for `rows` rows per rank.
double CompareAt(int64_t rows) {
  const int n = comm::Size();
  const int64_t d = FLAGS_dim;
  const int count = static_cast<int>(rows * d);
  torch::Tensor local = torch::full({rows, d}, static_cast<float>(comm::Rank()));
  torch::Tensor gathered = torch::empty({n * rows, d});
  torch::Tensor grad = torch::ones({n * rows, d});
  torch::Tensor grad_local = torch::empty({rows, d});
  const std::vector<int> counts(n, count);
  std::vector<int> displs(n);
  for (int r = 0; r < n; ++r) displs[r] = r * count;
  auto raw = [&] {
    BENCH_MPI(MPI_Allgather(local.data_ptr<float>(), count, MPI_FLOAT, gathered.data_ptr<float>(), count, MPI_FLOAT,
                            MPI_COMM_WORLD));
    BENCH_MPI(MPI_Reduce_scatter(grad.data_ptr<float>(), grad_local.data_ptr<float>(), counts.data(), MPI_FLOAT,
                                 MPI_SUM, MPI_COMM_WORLD));
  };
  // The same bytes through MPI_Allgatherv (GatherWithGrad's call, which takes uneven shards): with equal blocks Open
  // MPI picks different algorithms for the two, and either may be the faster one, so the baseline is the faster.
  auto raw_v = [&] {
    BENCH_MPI(MPI_Allgatherv(local.data_ptr<float>(), count, MPI_FLOAT, gathered.data_ptr<float>(), counts.data(),
                             displs.data(), MPI_FLOAT, MPI_COMM_WORLD));
    BENCH_MPI(MPI_Reduce_scatter(grad.data_ptr<float>(), grad_local.data_ptr<float>(), counts.data(), MPI_FLOAT,
                                 MPI_SUM, MPI_COMM_WORLD));
  };
  torch::Tensor leaf = local.clone().requires_grad_(true);
  auto with_grad = [&] {
    comm::GatherWithGrad(leaf).backward(grad);
    leaf.mutable_grad().reset();
  };
  // Correctness in the same run: the gathered rows and the summed gradient have closed forms.
  torch::Tensor check = comm::GatherWithGrad(leaf);
  check.backward(grad);
  for (int r = 0; r < n; ++r) {
    if (!check.narrow(0, r * rows, rows).eq(r).all().item<bool>() || !leaf.grad().eq(n).all().item<bool>()) {
      comm::Abort("gather_bench: GatherWithGrad returned wrong values");
    }
  }
  leaf.mutable_grad().reset();
  raw();
  raw_v();
  with_grad();  // warm-up: heap growth, MPI connections
  auto autograd_only = [&] {
    NoCommGather(leaf, n).backward(grad);
    leaf.mutable_grad().reset();
  };
  // The comm layer without autograd: the same two collectives through comm.h (checks, count exchange, buffers).
  const std::vector<int64_t> row_counts(n, rows);
  auto comm_only = [&] {
    torch::Tensor g = comm::AllGather(local);
    torch::Tensor r = comm::ReduceScatterSum(grad, row_counts);
  };
  std::vector<double> raw_s, raw_v_s, grad_s, counts_s, autograd_s, comm_s;
  for (int rep = 0; rep < FLAGS_repetitions; ++rep) {
    counts_s.push_back(TimePerCall([&] { comm::AllGatherCounts(rows); }));
    autograd_s.push_back(TimePerCall(autograd_only));
    comm_s.push_back(TimePerCall(comm_only));
    for (int side = 0; side < 3; ++side) {  // the three sides in an order that rotates between repetitions
      switch ((rep + side) % 3) {
        case 0: raw_s.push_back(TimePerCall(raw)); break;
        case 1: raw_v_s.push_back(TimePerCall(raw_v)); break;
        default: grad_s.push_back(TimePerCall(with_grad));
      }
    }
  }
  const double raw_median = std::min(Median(raw_s), Median(raw_v_s)), grad_median = Median(grad_s);
  if (comm::Rank() == 0) {
    const double mib = static_cast<double>(rows * d * 4) / (1 << 20);
    std::printf("%d ranks  %6lld rows x %d (%6.3f MiB/rank)  raw MPI %8.3f ms  GatherWithGrad %8.3f ms  "
                "ratio %.3f  (raw with Allgather %.3f, Allgatherv %.3f ms; alone: row-count exchange %.3f ms, "
                "autograd %.3f ms, comm layer without autograd %.3f ms)\n",
                n, static_cast<long long>(rows), FLAGS_dim, mib, raw_median * 1e3, grad_median * 1e3,
                grad_median / raw_median, Median(raw_s) * 1e3, Median(raw_v_s) * 1e3, Median(counts_s) * 1e3,
                Median(autograd_s) * 1e3, Median(comm_s) * 1e3);
    std::fflush(stdout);
  }
  return grad_median / raw_median;
}

int Main() {
  at::set_num_threads(1);  // the copies are memory-bound; ranks share the cores
  double worst = 0;
  for (int64_t rows : ParseList(FLAGS_rows)) worst = std::max(worst, CompareAt(rows));
  if (comm::Rank() == 0) {
    std::printf("TARGET gather %.2f <=%g %s\n", worst, FLAGS_target, worst <= FLAGS_target ? "PASS" : "FAIL");
  }
  return 0;
}

}  // namespace
}  // namespace tempered

int main(int argc, char** argv) {
  tempered::TuneAllocator();  // as tempered-train
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  tempered::comm::Init(&argc, &argv);
  const int status = tempered::Main();
  tempered::comm::Finalize();
  return status;
}
