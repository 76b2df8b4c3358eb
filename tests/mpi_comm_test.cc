// Collectives of comm/ against closed-form expected values, run under mpirun with 1-4 ranks. Inputs are filled from
// the rank so every rank knows what every other rank sent: rank-filled tensors sum to n(n-1)/2, rank r contributes
// rows that encode (r, row, column), and row counts are uneven with 0 rows on some rank.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <numeric>

#include "comm/comm.h"

namespace tempered::comm {
namespace {

const std::vector<torch::ScalarType> kDtypes = {torch::kFloat, torch::kDouble, torch::kLong, torch::kInt,
                                                torch::kByte};

// Row i, column j of rank r's contribution: distinct across ranks and rows, small enough for uint8 (r, i < 4).
torch::Tensor RankRows(int r, int64_t rows, int64_t cols, torch::ScalarType dtype) {
  torch::Tensor i = torch::arange(rows, torch::kLong).unsqueeze(1);
  torch::Tensor j = torch::arange(cols, torch::kLong).unsqueeze(0);
  return (r * 50 + i * 10 + j).to(dtype);
}

TEST(Comm, RankSizeLocal) {
  EXPECT_TRUE(Initialized());
  EXPECT_GE(Size(), 1);
  EXPECT_GE(Rank(), 0);
  EXPECT_LT(Rank(), Size());
  // The tests run on one node: the node's ranks are the world's.
  EXPECT_EQ(LocalSize(), Size());
  EXPECT_EQ(LocalRank(), Rank());
}

TEST(Comm, AllReduceOfRankIsTriangleNumber) {
  const int n = Size();
  for (torch::ScalarType dtype : kDtypes) {
    torch::Tensor t = torch::full({5, 3}, Rank(), dtype);
    AllReduceSum(t);
    EXPECT_TRUE(torch::equal(t, torch::full({5, 3}, n * (n - 1) / 2, dtype))) << dtype;

    torch::Tensor m = torch::full({4}, Rank(), dtype);
    AllReduceMax(m);
    EXPECT_TRUE(torch::equal(m, torch::full({4}, n - 1, dtype))) << dtype;
  }
}

TEST(Comm, AllReduceNonContiguousAndEmpty) {
  const int n = Size();
  // A transposed view: the result must land in the caller's tensor, element by element.
  torch::Tensor base = (torch::arange(6, torch::kDouble).view({2, 3}) * (Rank() + 1));
  torch::Tensor view = base.t();
  ASSERT_FALSE(view.is_contiguous());
  AllReduceSum(view);
  EXPECT_TRUE(torch::allclose(base, torch::arange(6, torch::kDouble).view({2, 3}) * (n * (n + 1) / 2)));

  torch::Tensor empty = torch::empty({0, 7});
  AllReduceSum(empty);
  EXPECT_EQ(empty.numel(), 0);
}

TEST(Comm, ScalarHelpers) {
  const int n = Size();
  EXPECT_DOUBLE_EQ(AllReduceSum(static_cast<double>(Rank() + 1)), n * (n + 1) / 2.0);
  EXPECT_DOUBLE_EQ(AllReduceMax(-static_cast<double>(Rank())), 0.0);
  EXPECT_DOUBLE_EQ(AllReduceMax(static_cast<double>(Rank()) + 0.5), n - 0.5);
  Barrier();
}

TEST(Comm, AllGatherCountsAreEveryRanks) {
  std::vector<int64_t> expected(Size());
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(AllGatherCounts(Rank()), expected);
}

// Rank r contributes r rows (rank 0 none), so the world of n gathers n(n-1)/2 rows.
// Rank r sends r copies of a letter and its rank, so rank 1 sends "" and every length differs; bytes beyond
// ASCII and an embedded NUL travel as they are (a serialised message is what the trainer sends).
TEST(Comm, AllGatherStringsOfEveryLengthIncludingEmpty) {
  const auto string_of = [](int r) {
    return r == 1 ? std::string() : std::string(r, static_cast<char>('a' + r)) + '\0' + "\xff" + std::to_string(r);
  };
  const std::vector<std::string> all = AllGatherStrings(string_of(Rank()));
  ASSERT_EQ(static_cast<int>(all.size()), Size());
  for (int r = 0; r < Size(); ++r) EXPECT_EQ(all[r], string_of(r)) << "rank " << r;
}

TEST(Comm, LibraryVersionsAreOneLine) {
  const std::string mpi = MpiLibraryVersion();
  EXPECT_FALSE(mpi.empty());
  EXPECT_EQ(mpi.find_first_of(std::string("\r\n\0", 3)), std::string::npos) << mpi;
}

// Also padded to the largest block, as uneven blocks travel through NCCL (PadUnevenBlocksOnCpuForTesting).
TEST(Comm, AllGatherUnevenRowsIncludingZero) {
  for (torch::ScalarType dtype : kDtypes) {
    for (const bool pad : {false, true}) {
      PadUnevenBlocksOnCpuForTesting(pad);
      torch::Tensor out = AllGather(RankRows(Rank(), Rank(), 3, dtype));
      PadUnevenBlocksOnCpuForTesting(false);
      std::vector<torch::Tensor> parts;
      for (int r = 0; r < Size(); ++r) parts.push_back(RankRows(r, r, 3, dtype));
      torch::Tensor expected = torch::cat(parts);
      ASSERT_EQ(out.sizes(), expected.sizes()) << dtype;
      EXPECT_EQ(out.scalar_type(), dtype);
      EXPECT_TRUE(torch::equal(out, expected)) << dtype << (pad ? " padded" : "");
    }
  }
}

// GatherToRoot: the same rows as AllGather, on the root only, also when they travel in rounds of a few rows (the
// 1 GiB pieces of an ImageNet-scale bank, scaled down): rank r sends 3r + 1 rows of 3 elements, and pieces of 2 rows
// (24 bytes of float) make the largest rank's rows take 2r + 1 rounds while the others run out early.
TEST(Comm, GatherToRootInPiecesWithUnevenRows) {
  for (const int64_t piece_bytes : {int64_t{24}, int64_t{28}, kGatherPieceBytes}) {
    for (int root = 0; root < Size(); ++root) {
      const torch::Tensor in = RankRows(Rank(), 3 * Rank() + 1, 3, torch::kFloat);
      const torch::Tensor out = GatherToRoot(in, root, piece_bytes);
      if (Rank() != root) {
        EXPECT_FALSE(out.defined()) << "a rank other than the root holds nothing";
        continue;
      }
      std::vector<torch::Tensor> parts;
      for (int r = 0; r < Size(); ++r) parts.push_back(RankRows(r, 3 * r + 1, 3, torch::kFloat));
      EXPECT_TRUE(torch::equal(out, torch::cat(parts))) << "piece " << piece_bytes << " B, root " << root;
    }
  }
}

TEST(Comm, GatherToRootOfZeroRowsOnSomeRanks) {
  const torch::Tensor in = RankRows(Rank(), Rank() % 2 == 0 ? 0 : 2, 4, torch::kDouble);
  const torch::Tensor out = GatherToRoot(in, 0, 32);  // one row per round
  if (Rank() != 0) return;
  std::vector<torch::Tensor> parts;
  for (int r = 0; r < Size(); ++r) parts.push_back(RankRows(r, r % 2 == 0 ? 0 : 2, 4, torch::kDouble));
  EXPECT_TRUE(torch::equal(out, torch::cat(parts)));
  EXPECT_EQ(out.size(0), 2 * (Size() / 2));
}

TEST(Comm, AllGatherHigherRankAndNonContiguous) {
  // (rows, 2, 3) blocks, taken from a transposed (3, 2) layout so the input is not contiguous.
  auto block = [](int r) {
    return RankRows(r, 2 * (r + 1), 3, torch::kFloat).view({r + 1, 2, 3}).transpose(1, 2).contiguous().transpose(1, 2);
  };
  torch::Tensor in = block(Rank());
  ASSERT_FALSE(in.is_contiguous());
  std::vector<torch::Tensor> parts;
  for (int r = 0; r < Size(); ++r) parts.push_back(block(r));
  EXPECT_TRUE(torch::equal(AllGather(in), torch::cat(parts)));
}

TEST(Comm, AllGatherZeroRowsEverywhere) {
  torch::Tensor out = AllGather(torch::empty({0, 4}, torch::kDouble));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{0, 4}));
}

TEST(Comm, AllGatherHasNoGradient) {
  torch::Tensor x = torch::ones({2, 2}, torch::requires_grad());
  EXPECT_FALSE(AllGather(x).requires_grad());
}

// The CPU output buffer is reused only once the caller has dropped the last result and every view of it: a held
// result is never overwritten, and a reused buffer carries no autograd history of an earlier GatherWithGrad.
TEST(Comm, OutputBufferReusedOnlyWhenDropped) {
  const torch::Tensor x = torch::full({3, 4}, Rank() + 1.0);
  void* dropped = nullptr;
  {
    torch::Tensor first = GatherWithGrad(x.clone().requires_grad_());
    ASSERT_NE(first.grad_fn(), nullptr);
    dropped = first.data_ptr();
  }
  torch::Tensor second = AllGather(x);
  EXPECT_EQ(second.grad_fn(), nullptr);
  if (Size() > 1) EXPECT_EQ(second.data_ptr(), dropped);  // one rank: a plain copy, nothing to reuse
  const torch::Tensor view = second.narrow(0, 1, 2);
  const torch::Tensor before = view.clone();
  second = torch::Tensor();
  const torch::Tensor third = AllGather(x * 2);
  EXPECT_TRUE(torch::equal(view, before));
  EXPECT_TRUE(torch::equal(third, AllGather(x) * 2));
}

// Counts (r + 1) % 3: 1, 2, 0, 1 rows. Rank s sends (s + 1) * v where v numbers the elements, so the sum over ranks
// is n(n+1)/2 * v, and rank r receives its block of rows.
TEST(Comm, ReduceScatterUnevenCounts) {
  const int n = Size();
  const int64_t cols = 5;
  std::vector<int64_t> counts;
  for (int r = 0; r < n; ++r) counts.push_back((r + 1) % 3);
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  const int64_t offset = std::accumulate(counts.begin(), counts.begin() + Rank(), int64_t{0});
  for (torch::ScalarType dtype : {torch::kFloat, torch::kDouble, torch::kLong, torch::kInt}) {
    for (const bool pad : {false, true}) {  // padded: as uneven blocks travel through NCCL
      torch::Tensor v = torch::arange(total * cols, torch::kLong).view({total, cols});
      PadUnevenBlocksOnCpuForTesting(pad);
      torch::Tensor out = ReduceScatterSum((v * (Rank() + 1)).to(dtype), counts);
      PadUnevenBlocksOnCpuForTesting(false);
      torch::Tensor expected = (v.narrow(0, offset, counts[Rank()]) * (n * (n + 1) / 2)).to(dtype);
      ASSERT_EQ(out.sizes(), expected.sizes()) << dtype;
      EXPECT_TRUE(torch::equal(out, expected)) << dtype << (pad ? " padded" : "");
    }
  }
}

TEST(Comm, BroadcastFromLastRank) {
  const int root = Size() - 1;  // non-zero whenever there are two ranks or more
  for (torch::ScalarType dtype : kDtypes) {
    torch::Tensor t = RankRows(Rank(), 3, 4, dtype);
    Broadcast(t, root);
    EXPECT_TRUE(torch::equal(t, RankRows(root, 3, 4, dtype))) << dtype;
  }
}

// Gradients chosen so each mean has a closed form:
//   a: rank + 1                    -> (n + 1) / 2
//   b: arange(5) * rank (float64)  -> arange(5) * (n - 1) / 2      (its own dtype: a bucket of its own)
//   c: no gradient on any rank     -> stays undefined, as with one rank
//   d: 1 on rank 0 only            -> 1 / n on every rank (missing gradients count as zero)
//   e: rank-filled, 1000 elements  -> (n - 1) / 2                   (larger than the small buckets)
void CheckReducer(int64_t bucket_bytes) {
  const int n = Size();
  const double r = Rank();
  torch::Tensor a = torch::zeros({3, 4}, torch::requires_grad());
  torch::Tensor b = torch::zeros({5}, torch::dtype(torch::kDouble).requires_grad(true));
  torch::Tensor c = torch::zeros({2, 2}, torch::requires_grad());
  torch::Tensor d = torch::zeros({7}, torch::requires_grad());
  torch::Tensor e = torch::zeros({10, 100}, torch::requires_grad());
  a.mutable_grad() = torch::full({3, 4}, r + 1);
  b.mutable_grad() = torch::arange(5, torch::kDouble) * r;
  if (Rank() == 0) d.mutable_grad() = torch::ones({7});
  e.mutable_grad() = torch::full({10, 100}, r);

  GradientReducer reducer({a, b, c, d, e}, bucket_bytes);
  reducer.Finalize();

  EXPECT_TRUE(torch::allclose(a.grad(), torch::full({3, 4}, (n + 1) / 2.0))) << bucket_bytes;
  EXPECT_TRUE(torch::allclose(b.grad(), torch::arange(5, torch::kDouble) * ((n - 1) / 2.0))) << bucket_bytes;
  EXPECT_FALSE(c.grad().defined()) << bucket_bytes;
  if (n > 1 || Rank() == 0) {
    ASSERT_TRUE(d.grad().defined()) << bucket_bytes;
    EXPECT_TRUE(torch::allclose(d.grad(), torch::full({7}, 1.0 / n))) << bucket_bytes;
  }
  EXPECT_TRUE(torch::allclose(e.grad(), torch::full({10, 100}, (n - 1) / 2.0))) << bucket_bytes;
}

TEST(Comm, GradientReducerAveragesInBuckets) {
  CheckReducer(1);        // one parameter per bucket
  CheckReducer(64);       // a few small parameters share a bucket
  CheckReducer(8 << 20);  // the default: one bucket per dtype run
}

}  // namespace
}  // namespace tempered::comm
