// GatherWithGrad across ranks (mpirun with 1-4 ranks): the forward is the concatenation of every rank's rows, and
// the backward gives each rank the gradient of the *total* loss (the sum over ranks of each rank's loss) with
// respect to its own rows, checked against central finite differences of that total in float64.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <numeric>

#include "comm/comm.h"

namespace tempered::comm {
namespace {

constexpr int64_t kDim = 3;

// Uneven rows: 2, 0, 1, 2 for ranks 0..3 (rank 1 has none).
int64_t RowsOf(int r) { return (r + 2) % 3; }

// Rank r's input, known to every rank so the forward can be checked exactly.
torch::Tensor InputOf(int r) {
  torch::Tensor v = torch::arange(RowsOf(r) * kDim, torch::kDouble).view({RowsOf(r), kDim});
  return torch::sin(v * 0.7 + r * 1.3);
}

// Rank r's loss on the global rows Z (B_global, kDim): nonlinear, mixes rows (logsumexp over all of them) and
// weights them differently on every rank, so each local row's gradient has a term from every rank's loss.
torch::Tensor LossOf(int r, const torch::Tensor& z) {
  const int64_t rows = z.size(0);
  torch::Tensor q = torch::arange(kDim, torch::kDouble) * 0.5 - r * 0.3;  // (kDim)
  torch::Tensor w = torch::arange(rows * kDim, torch::kDouble).view({rows, kDim}) * 0.1 + (r + 1);
  torch::Tensor mixed = rows > 0 ? torch::logsumexp(z.matmul(q), 0) * (r + 1) : torch::zeros({}, torch::kDouble);
  return mixed + (torch::sin(z * (r + 1)) * w).sum() + 0.05 * (r + 1) * z.pow(2).sum().pow(2);
}

int64_t GlobalRows() {
  int64_t total = 0;
  for (int r = 0; r < Size(); ++r) total += RowsOf(r);
  return total;
}

TEST(GatherWithGrad, ForwardIsConcatenationOfRankInputs) {
  torch::Tensor x = InputOf(Rank()).requires_grad_();
  torch::Tensor z = GatherWithGrad(x);
  std::vector<torch::Tensor> parts;
  for (int r = 0; r < Size(); ++r) parts.push_back(InputOf(r));
  EXPECT_TRUE(torch::equal(z.detach(), torch::cat(parts)));
  EXPECT_TRUE(z.requires_grad());
}

// L_r = (r + 1) * sum(Z): the gradient of every local element is sum_r (r + 1) = n(n+1)/2.
TEST(GatherWithGrad, BackwardSumsEveryRanksGradient) {
  const int n = Size();
  torch::Tensor x = InputOf(Rank()).requires_grad_();
  (GatherWithGrad(x) * (Rank() + 1)).sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(torch::allclose(x.grad(), torch::full_like(x, n * (n + 1) / 2.0)));
}

// A rank whose loss ignores some gathered rows still joins the backward (their gradient is zero there).
TEST(GatherWithGrad, PartlyUsedOutput) {
  const int n = Size();
  torch::Tensor x = InputOf(Rank()).requires_grad_();
  torch::Tensor z = GatherWithGrad(x);
  // Rank r uses only the first min(r, B_global) rows, with weight 1: row g collects one per rank r > g.
  const int64_t used = std::min<int64_t>(Rank(), z.size(0));
  z.narrow(0, 0, used).sum().backward();
  const int64_t offset = [&] {
    int64_t o = 0;
    for (int r = 0; r < Rank(); ++r) o += RowsOf(r);
    return o;
  }();
  torch::Tensor expected = torch::empty_like(x);
  for (int64_t i = 0; i < x.size(0); ++i) expected[i].fill_(static_cast<double>(std::max<int64_t>(0, n - 1 - (offset + i))));
  EXPECT_TRUE(torch::allclose(x.grad(), expected));
}

// Passes its input through but gives it no gradient: an undefined gradient reaches the node before it.
struct DropGradient : public torch::autograd::Function<DropGradient> {
  static torch::Tensor forward(torch::autograd::AutogradContext*, const torch::Tensor& z) { return z.clone(); }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*,
                                                 torch::autograd::variable_list) {
    return {torch::Tensor()};
  }
};

// GatherWithGrad's backward still joins the reduce-scatter (with zeros) when its incoming gradient is undefined:
// the other ranks wait in it.
TEST(GatherWithGrad, UndefinedIncomingGradientGivesZeros) {
  torch::Tensor x = InputOf(Rank()).requires_grad_();
  DropGradient::apply(GatherWithGrad(x)).sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(torch::equal(x.grad(), torch::zeros_like(x)));
}

// Without grad mode (evaluation) or without an input that requires grad, the result is a plain gather.
TEST(GatherWithGrad, NoHistoryWithoutGrad) {
  torch::Tensor x = InputOf(Rank()).requires_grad_();
  {
    torch::NoGradGuard no_grad;
    EXPECT_FALSE(GatherWithGrad(x).requires_grad());
  }
  EXPECT_FALSE(GatherWithGrad(x.detach()).requires_grad());
  torch::Tensor z = GatherWithGrad(x);
  ASSERT_TRUE(z.grad_fn() != nullptr);
  EXPECT_EQ(z.grad_fn()->name(), "GatherWithGradBackward");
}

// Every call returns a new tensor: a later gather never overwrites a result the caller still holds.
TEST(GatherWithGrad, ResultsDoNotAlias) {
  torch::Tensor x = InputOf(Rank()).requires_grad_();
  torch::Tensor first = GatherWithGrad(x);
  const torch::Tensor before = first.detach().clone();
  torch::Tensor second = GatherWithGrad(x * 2);
  EXPECT_TRUE(torch::equal(first.detach(), before));
  if (first.numel() > 0) EXPECT_NE(first.data_ptr(), second.data_ptr());
  (first.sum() + second.sum()).backward();
  EXPECT_TRUE(torch::allclose(x.grad(), torch::full_like(x, 3.0 * Size())));
}

double TotalLoss(const torch::Tensor& x) { return AllReduceSum(LossOf(Rank(), AllGather(x)).item<double>()); }

TEST(GatherWithGrad, BackwardMatchesFiniteDifferences) {
  torch::Tensor x = InputOf(Rank()).requires_grad_();
  LossOf(Rank(), GatherWithGrad(x)).backward();
  ASSERT_TRUE(x.grad().defined());
  const torch::Tensor grad = x.grad();
  ASSERT_EQ(grad.sizes(), x.sizes());

  // Every rank walks the global elements in the same order (each step is a collective); the owner of the
  // element perturbs it and compares.
  const double h = 1e-5;
  torch::Tensor probe = x.detach().clone();
  int owner = 0;
  int64_t first_row = 0;  // of the owner
  for (int64_t g = 0; g < GlobalRows(); ++g) {
    while (g >= first_row + RowsOf(owner)) first_row += RowsOf(owner++);
    for (int64_t j = 0; j < kDim; ++j) {
      const bool mine = owner == Rank();
      const int64_t i = g - first_row;
      const double x0 = mine ? probe[i][j].item<double>() : 0.0;
      if (mine) probe[i][j] = x0 + h;
      const double plus = TotalLoss(probe);
      if (mine) probe[i][j] = x0 - h;
      const double minus = TotalLoss(probe);
      if (mine) {
        probe[i][j] = x0;
        const double fd = (plus - minus) / (2 * h);
        EXPECT_NEAR(grad[i][j].item<double>(), fd, 1e-6 * std::max(1.0, std::abs(fd)))
            << "global row " << g << " column " << j << " (rank " << owner << " row " << i << ")";
      }
    }
  }
}

std::vector<int64_t> EveryRanksRows() {
  std::vector<int64_t> rows;
  for (int r = 0; r < Size(); ++r) rows.push_back(RowsOf(r));
  return rows;
}

// The gather with every rank's row count stated (no exchange of counts), and the padded path NCCL takes for uneven
// blocks (one equal collective at the largest block, the padding cut out), here through MPI: the same rows forward
// and the same gradients backward as the exchanged, unpadded gather, whose gradients the test above checks.
TEST(GatherWithGrad, StatedCountsAndPaddedBlocksGiveTheSameRowsAndGradients) {
  torch::Tensor reference_x = InputOf(Rank()).requires_grad_();
  const torch::Tensor reference = GatherWithGrad(reference_x);
  LossOf(Rank(), reference).backward();
  for (const bool pad : {false, true}) {
    PadUnevenBlocksOnCpuForTesting(pad);
    for (const bool stated : {false, true}) {
      torch::Tensor x = InputOf(Rank()).requires_grad_();
      const torch::Tensor z = stated ? GatherWithGrad(x, EveryRanksRows()) : GatherWithGrad(x);
      EXPECT_TRUE(torch::equal(z.detach(), reference.detach())) << "pad " << pad << " stated " << stated;
      LossOf(Rank(), z).backward();
      EXPECT_TRUE(torch::allclose(x.grad(), reference_x.grad(), 1e-12, 1e-12)) << "pad " << pad << " stated " << stated;
      if (stated) {
        EXPECT_TRUE(torch::equal(AllGather(x.detach(), EveryRanksRows()), reference.detach()));
      }
    }
  }
  PadUnevenBlocksOnCpuForTesting(false);
}

}  // namespace
}  // namespace tempered::comm
