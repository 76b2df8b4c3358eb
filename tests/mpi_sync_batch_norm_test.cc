// SyncBatchNorm2d under mpirun (1-4 ranks, uneven shards incl. an empty one) against BatchNorm2d on the whole
// global batch in one process: same output rows, same input gradients, same summed parameter gradients, same
// running statistics. Its backward (a reduce-scatter of the gathered statistics' gradients) is also checked by finite
// differences.
#include <gtest/gtest.h>

#include "comm/comm.h"
#include "trainer/model/sync_batch_norm.h"

namespace tempered {
namespace {

constexpr int64_t kChannels = 3;

// Rows of the global batch owned by `rank`: rank r holds r + 1 rows except rank 2, which holds none.
int64_t RowsOf(int rank) { return rank == 2 ? 0 : rank + 1; }
int64_t OffsetOf(int rank) {
  int64_t offset = 0;
  for (int r = 0; r < rank; ++r) offset += RowsOf(r);
  return offset;
}

torch::Tensor GlobalBatch() {
  torch::manual_seed(11);
  int64_t rows = OffsetOf(comm::Size());
  // A large mean against the spread: the case that breaks a one-pass variance in fp32.
  return torch::randn({rows, kChannels, 4, 5}, torch::kFloat64) * 0.5 + 3.0;
}

// A loss with different weights per element, so that gradients are not symmetric.
torch::Tensor WeightsLike(const torch::Tensor& x) {
  torch::manual_seed(12);
  return torch::randn_like(x);
}

TEST(SyncBatchNorm, MatchesBatchNormOnTheGlobalBatch) {
  const int rank = comm::Rank();
  const torch::Tensor global = GlobalBatch();
  const torch::Tensor weights = WeightsLike(global);

  torch::nn::BatchNorm2d reference(kChannels);
  reference->to(torch::kFloat64);
  torch::Tensor x_ref = global.clone().requires_grad_(true);
  const torch::Tensor y_ref = reference(x_ref);  // one training-mode forward: running stats move once
  (y_ref * weights).sum().backward();

  SyncBatchNorm2d sync(kChannels);
  sync->to(torch::kFloat64);
  const int64_t begin = OffsetOf(rank), rows = RowsOf(rank);
  torch::Tensor x = global.slice(0, begin, begin + rows).clone().requires_grad_(true);
  const torch::Tensor y = sync(x);
  (y * weights.slice(0, begin, begin + rows)).sum().backward();

  EXPECT_TRUE(torch::allclose(y, y_ref.slice(0, begin, begin + rows), 1e-9, 1e-9));
  EXPECT_TRUE(torch::allclose(x.grad(), x_ref.grad().slice(0, begin, begin + rows), 1e-9, 1e-9));
  torch::Tensor weight_grad = sync->weight.grad().clone(), bias_grad = sync->bias.grad().clone();
  comm::AllReduceSum(weight_grad);
  comm::AllReduceSum(bias_grad);
  EXPECT_TRUE(torch::allclose(weight_grad, reference->weight.grad(), 1e-9, 1e-9));
  EXPECT_TRUE(torch::allclose(bias_grad, reference->bias.grad(), 1e-9, 1e-9));
  EXPECT_TRUE(torch::allclose(sync->running_mean, reference->running_mean, 1e-9, 1e-9));
  EXPECT_TRUE(torch::allclose(sync->running_var, reference->running_var, 1e-9, 1e-9));
}

// bf16 activations (autocast) are normalised in fp32 and handed back in bf16: exactly the fp32 layer on the same
// values, rounded once (the loss weights are bf16 values, so both backward passes see the same gradient).
TEST(SyncBatchNorm, Bf16IsTheFloatLayerRoundedOnce) {
  const int rank = comm::Rank();
  const int64_t begin = OffsetOf(rank), rows = RowsOf(rank);
  const torch::Tensor x16 = GlobalBatch().slice(0, begin, begin + rows).to(torch::kBFloat16);
  const torch::Tensor w =
      WeightsLike(GlobalBatch()).slice(0, begin, begin + rows).to(torch::kBFloat16).to(torch::kFloat);
  SyncBatchNorm2d sync16(kChannels), sync32(kChannels);
  torch::Tensor a = x16.clone().requires_grad_(true), b = x16.to(torch::kFloat).requires_grad_(true);
  const torch::Tensor y16 = sync16(a), y32 = sync32(b);
  (y16.to(torch::kFloat) * w).sum().backward();
  (y32 * w).sum().backward();
  EXPECT_EQ(y16.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(y16, y32.to(torch::kBFloat16)));
  EXPECT_EQ(a.grad().scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(a.grad(), b.grad().to(torch::kBFloat16)));
  EXPECT_TRUE(torch::equal(sync16->weight.grad(), sync32->weight.grad()));
  EXPECT_TRUE(torch::equal(sync16->running_var, sync32->running_var));
}

// Total loss = sum over ranks; d(total)/dx on each rank by central differences, one element at a time (every rank
// perturbs in lock step so that the collectives line up).
TEST(SyncBatchNorm, BackwardMatchesFiniteDifferences) {
  const int rank = comm::Rank();
  const torch::Tensor global = GlobalBatch();
  const torch::Tensor weights = WeightsLike(global);
  const int64_t begin = OffsetOf(rank), rows = RowsOf(rank);
  const torch::Tensor w = weights.slice(0, begin, begin + rows);
  SyncBatchNorm2d sync(kChannels);
  sync->to(torch::kFloat64);

  const auto total_loss = [&](const torch::Tensor& x) {
    torch::NoGradGuard no_grad;
    return comm::AllReduceSum((sync(x) * w).sum().item<double>());
  };
  torch::Tensor x = global.slice(0, begin, begin + rows).clone().requires_grad_(true);
  (sync(x) * w).sum().backward();
  const torch::Tensor analytic = x.grad().clone();

  const int64_t max_elements = OffsetOf(comm::Size()) * kChannels * 20;
  for (int64_t i = 0; i < std::min<int64_t>(max_elements, 40); ++i) {
    // Each round, one rank (round robin among those with rows) perturbs one of its elements.
    const int owner = static_cast<int>(i % comm::Size());
    const bool mine = owner == rank && rows > 0;
    const int64_t index = rows > 0 ? (i * 7) % x.numel() : 0;
    const double h = 1e-6;
    torch::Tensor plus = x.detach().clone(), minus = x.detach().clone();
    if (mine) {
      plus.view(-1)[index] += h;
      minus.view(-1)[index] -= h;
    }
    const double numeric = (total_loss(plus) - total_loss(minus)) / (2 * h);
    if (mine) EXPECT_NEAR(numeric, analytic.view(-1)[index].item<double>(), 1e-6) << "element " << index;
  }
}

}  // namespace
}  // namespace tempered
