// GradientReducer with ReduceTiming::kDuringBackward (buckets all-reduced from autograd hooks) against the
// synchronous reducer, run under mpirun with 1-4 ranks. Both reducers see the same backward on copies of the same
// parameters. Integer-valued gradients sum exactly in any order, so there the two must agree bit for bit at every
// world size; a real conv net's gradients are compared bit for bit at 1-2 ranks (a + b = b + a) and to 1e-6
// relative at 3-4 (MPI's summation order may depend on the message layout, which differs between the two).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "comm/comm.h"

namespace tempered::comm {
namespace {

const std::vector<int64_t> kBucketBytes = {1, 64, 4096, 8 << 20};

std::vector<torch::Tensor> Leaves(const std::vector<torch::Tensor>& like) {
  std::vector<torch::Tensor> out;
  for (const torch::Tensor& t : like) out.push_back(t.detach().clone().requires_grad_(t.requires_grad()));
  return out;
}

// Parameters: a (3x4), b (5, float64: a bucket of its own), c (2x2, unused: no gradient on any rank), d (7, used
// on rank 0 only), e (10x100), f (3, requires no gradient).
std::vector<torch::Tensor> SmallParameters() {
  return {torch::zeros({3, 4}, torch::requires_grad()),
          torch::zeros({5}, torch::dtype(torch::kDouble).requires_grad(true)),
          torch::zeros({2, 2}, torch::requires_grad()),
          torch::zeros({7}, torch::requires_grad()),
          torch::zeros({10, 100}, torch::requires_grad()),
          torch::zeros({3})};
}

// A loss whose gradients are integers that depend on the rank: a -> r + 1 (times a step count), b -> arange * r,
// d -> 1 on rank 0, e -> r + column.
void SmallBackward(const std::vector<torch::Tensor>& p, int step) {
  const double r = Rank();
  torch::Tensor loss = (p[0] * (r + 1 + step)).sum() + (p[1] * torch::arange(5, torch::kDouble) * r).sum().to(torch::kFloat) +
                       (p[4] * (torch::arange(100, torch::kFloat) + r)).sum() + (p[5] * 2).sum();
  if (Rank() == 0) loss = loss + p[3].sum();
  loss.backward();
}

void ExpectSameGradients(const std::vector<torch::Tensor>& expected, const std::vector<torch::Tensor>& actual,
                         bool exact, const std::string& what) {
  ASSERT_EQ(expected.size(), actual.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_EQ(expected[i].grad().defined(), actual[i].grad().defined()) << what << " parameter " << i;
    if (!expected[i].grad().defined()) continue;
    if (exact) {
      EXPECT_TRUE(torch::equal(expected[i].grad(), actual[i].grad())) << what << " parameter " << i;
    } else {
      EXPECT_TRUE(torch::allclose(expected[i].grad(), actual[i].grad(), 1e-6, 0)) << what << " parameter " << i;
    }
  }
}

// Several steps with the same reducers: the hooks stay in place, and zero_grad-style reuse of .grad works.
TEST(ReducerOverlap, IntegerGradientsEqualSynchronousExactly) {
  for (int64_t bucket_bytes : kBucketBytes) {
    std::vector<torch::Tensor> sync_params = SmallParameters(), overlap_params = Leaves(sync_params);
    GradientReducer sync(sync_params, ReducerOptions{bucket_bytes, ReduceTiming::kAfterBackward});
    GradientReducer overlap(overlap_params, ReducerOptions{bucket_bytes, ReduceTiming::kDuringBackward});
    for (int step = 0; step < 3; ++step) {
      for (auto* params : {&sync_params, &overlap_params}) {
        for (torch::Tensor& p : *params) {
          if (p.grad().defined()) p.mutable_grad().zero_();
        }
      }
      SmallBackward(sync_params, step);
      SmallBackward(overlap_params, step);
      sync.Finalize();
      overlap.Finalize();
      const std::string what = "bucket_bytes " + std::to_string(bucket_bytes) + " step " + std::to_string(step);
      ExpectSameGradients(sync_params, overlap_params, /*exact=*/true, what);
      // And the closed forms of mpi_comm_test's reducer test.
      const int n = Size();
      EXPECT_TRUE(torch::equal(overlap_params[0].grad(), torch::full({3, 4}, (n + 1) / 2.0 + step))) << what;
      EXPECT_FALSE(overlap_params[2].grad().defined()) << what;
      if (n > 1 || Rank() == 0) {
        ASSERT_TRUE(overlap_params[3].grad().defined()) << what;
        EXPECT_TRUE(torch::allclose(overlap_params[3].grad(), torch::full({7}, 1.0 / n))) << what;
      }
      EXPECT_FALSE(overlap_params[5].grad().defined()) << what;
    }
  }
}

// The CUDA path's logic (RunReducerAsOnDeviceForTesting): no host read of which ranks had a gradient, so the
// parameter no rank gave one (c) gets zeros instead of none (2 ranks or more); every other gradient is the
// synchronous reducer's.
// Then the trainer's case, a conv net, bit for bit at 1-2 ranks.
TEST(ReducerOverlap, DeviceLogicOnTheCpu) {
  RunReducerAsOnDeviceForTesting(true);
  for (int64_t bucket_bytes : kBucketBytes) {
    std::vector<torch::Tensor> sync_params = SmallParameters(), device_params = Leaves(sync_params);
    GradientReducer sync(sync_params, ReducerOptions{bucket_bytes, ReduceTiming::kAfterBackward});
    GradientReducer device(device_params, ReducerOptions{bucket_bytes, ReduceTiming::kDuringBackward});
    for (int step = 0; step < 2; ++step) {
      SmallBackward(sync_params, step);
      SmallBackward(device_params, step);
      sync.Finalize();
      device.Finalize();
      const std::string what = "bucket_bytes " + std::to_string(bucket_bytes) + " step " + std::to_string(step);
      if (Size() > 1) {  // one rank reduces nothing
        ASSERT_TRUE(device_params[2].grad().defined()) << what;
        EXPECT_TRUE(torch::equal(device_params[2].grad(), torch::zeros({2, 2}))) << what;
        device_params[2].mutable_grad() = torch::Tensor();  // as the synchronous reducer leaves it
      }
      ExpectSameGradients(sync_params, device_params, /*exact=*/true, what);
      for (auto* params : {&sync_params, &device_params}) {
        for (torch::Tensor& p : *params) {
          if (p.grad().defined()) p.mutable_grad().zero_();
        }
      }
    }
  }
  torch::manual_seed(7);
  torch::nn::Sequential net(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 8, 3).padding(1)), torch::nn::ReLU(),
                            torch::nn::AdaptiveAvgPool2d(1), torch::nn::Flatten(), torch::nn::Linear(8, 4));
  torch::nn::Sequential twin(std::dynamic_pointer_cast<torch::nn::SequentialImpl>(net->clone()));
  GradientReducer sync(net->parameters(), ReducerOptions{1024, ReduceTiming::kAfterBackward});
  GradientReducer device(twin->parameters(), ReducerOptions{1024, ReduceTiming::kDuringBackward});
  torch::manual_seed(100 + Rank());
  const torch::Tensor x = torch::randn({6, 1, 12, 12});
  for (torch::nn::Sequential* m : {&net, &twin}) (*m)->forward(x).pow(2).sum().backward();
  sync.Finalize();
  device.Finalize();
  ExpectSameGradients(net->parameters(), twin->parameters(), /*exact=*/Size() <= 2, "conv net");
  RunReducerAsOnDeviceForTesting(false);
}

// Gradients put in place by hand, no backward: every bucket starts in Finalize, with the same result.
TEST(ReducerOverlap, FinalizeWithoutBackward) {
  for (int64_t bucket_bytes : kBucketBytes) {
    std::vector<torch::Tensor> sync_params = SmallParameters(), overlap_params = Leaves(sync_params);
    for (auto* params : {&sync_params, &overlap_params}) {
      (*params)[0].mutable_grad() = torch::full({3, 4}, Rank() + 1.0);
      if (Rank() == 1) (*params)[3].mutable_grad() = torch::ones({7});
    }
    GradientReducer sync(sync_params, ReducerOptions{bucket_bytes, ReduceTiming::kAfterBackward});
    GradientReducer overlap(overlap_params, ReducerOptions{bucket_bytes, ReduceTiming::kDuringBackward});
    sync.Finalize();
    overlap.Finalize();
    ExpectSameGradients(sync_params, overlap_params, /*exact=*/true, "bucket_bytes " + std::to_string(bucket_bytes));
  }
}

// The trainer's case: a small conv net with batch norm, a rank-dependent batch, a linear head.
TEST(ReducerOverlap, ConvNetEqualsSynchronous) {
  for (int64_t bucket_bytes : kBucketBytes) {
    torch::manual_seed(7);
    torch::nn::Sequential net(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 8, 3).padding(1).bias(false)),
                              torch::nn::BatchNorm2d(8), torch::nn::ReLU(),
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 16, 3).stride(2).padding(1)),
                              torch::nn::ReLU(), torch::nn::AdaptiveAvgPool2d(1), torch::nn::Flatten(),
                              torch::nn::Linear(16, 4));
    auto copy = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(net->clone());
    torch::nn::Sequential twin(copy);
    GradientReducer sync(net->parameters(), ReducerOptions{bucket_bytes, ReduceTiming::kAfterBackward});
    GradientReducer overlap(twin->parameters(), ReducerOptions{bucket_bytes, ReduceTiming::kDuringBackward});
    torch::manual_seed(100 + Rank());
    for (int step = 0; step < 2; ++step) {
      const torch::Tensor x = torch::randn({6, 1, 12, 12});
      for (torch::nn::Sequential* m : {&net, &twin}) {
        for (torch::Tensor& p : (*m)->parameters()) {
          if (p.grad().defined()) p.mutable_grad().zero_();
        }
        (*m)->forward(x).pow(2).sum().backward();
      }
      sync.Finalize();
      overlap.Finalize();
      ExpectSameGradients(net->parameters(), twin->parameters(), /*exact=*/Size() <= 2,
                          "bucket_bytes " + std::to_string(bucket_bytes) + " step " + std::to_string(step));
    }
  }
}

}  // namespace
}  // namespace tempered::comm
