// trainer/loss/streaming_loss.cc against the naive reference trainer/loss/loss.cc: every loss, tau in {0.01, 0.07, 0.2, 1},
// tiles that do not divide C, tile = 1 and tile >= C, the positive and the excluded candidate in different tiles,
// K >= the number of negatives, tied similarities (duplicated candidates), the SimCLR batch form (anchors are
// candidates too); losses and gradients with respect to anchors and candidates within 1e-5 relative (float64).
// Finite differences check the custom backward of every loss. Peak memory is measured by bench/loss_bench.cc.
#include "trainer/loss/streaming_loss.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/config.h"

namespace tempered {
namespace {

const std::vector<LossConfig::Name> kAllLosses = {LossConfig::INFONCE, LossConfig::SIMPLE, LossConfig::HARD,
                                                  LossConfig::HARD_SIMPLE, LossConfig::NEAREST};

// tile candidates per tile for n anchors.
LossOptions Options(LossConfig::Name name, double tau, int64_t hard_k, int64_t tile, int64_t n) {
  LossOptions options;
  options.name = name;
  options.tau = tau;
  options.hard_k = hard_k;
  options.tile_scores = tile * n;
  return options;
}

torch::Tensor RandomUnit(int64_t n, int64_t d, torch::Dtype dtype = torch::kDouble) {
  return torch::nn::functional::normalize(torch::randn({n, d}, dtype),
                                          torch::nn::functional::NormalizeFuncOptions().dim(1));
}

// 1e-5 relative per element, plus an absolute floor of atol_scale times the tensor's scale for entries that are
// sums of cancelling terms (as tests/loss_golden_test.cc).
void ExpectClose(const torch::Tensor& actual, const torch::Tensor& expected, const std::string& what,
                 double rtol = 1e-5, double atol_scale = 1e-8) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const torch::Tensor a = actual.to(torch::kDouble).cpu(), e = expected.to(torch::kDouble).cpu();
  const double scale = std::max(1.0, e.abs().max().item<double>());
  EXPECT_TRUE(torch::allclose(a, e, rtol, atol_scale * scale))
      << what << ": largest difference " << (a - e).abs().max().item<double>();
}

struct LossAndGrads {
  torch::Tensor loss, anchors_grad, candidates_grad;
};

using LossFn = torch::Tensor (*)(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                 const LossOptions&);

// Loss and the gradients of sum_i weights_i L_i (weights make every anchor's gradient distinct).
LossAndGrads LossWithGrads(LossFn loss_fn, const torch::Tensor& anchors, const torch::Tensor& candidates,
                           const torch::Tensor& positive, const torch::Tensor& exclude, const LossOptions& options,
                           const torch::Tensor& weights) {
  const torch::Tensor a = anchors.detach().clone().requires_grad_(true);
  const torch::Tensor c = candidates.detach().clone().requires_grad_(true);
  const torch::Tensor loss = loss_fn(a, c, positive, exclude, options);
  (loss * weights.to(loss.dtype())).sum().backward();
  return {loss.detach(), a.grad(), c.grad()};
}

// Rows of a candidate gradient summed over groups of identical candidates (group g of row k = groups[k]).
torch::Tensor SumOverGroups(const torch::Tensor& grad, const torch::Tensor& groups) {
  const int64_t count = groups.max().item<int64_t>() + 1;
  return torch::zeros({count, grad.size(1)}, grad.options()).index_add_(0, groups.to(grad.device()), grad);
}

struct Problem {
  torch::Tensor anchors, candidates, positive, exclude, weights;
  torch::Tensor groups;  // (C) duplicate group of each candidate
};

// n anchors, C candidates; with_exclusion: each anchor excludes a candidate about C / 2 away from its positive (so
// in another tile for most tile sizes), otherwise the memory-bank form (exclude -1). duplicates > 0 appends copies
// of the first `duplicates` candidates (tied similarities).
Problem RandomProblem(int64_t n, int64_t columns, int64_t d, bool with_exclusion, int64_t duplicates = 0) {
  Problem p;
  p.anchors = RandomUnit(n, d);
  const torch::Tensor distinct = RandomUnit(columns - duplicates, d);
  p.candidates = torch::cat({distinct, distinct.narrow(0, 0, duplicates)});
  p.groups = torch::cat({torch::arange(columns - duplicates), torch::arange(duplicates)});
  p.positive = torch::randint(columns, {n}, torch::kLong);
  p.exclude = with_exclusion ? (p.positive + columns / 2) % columns : torch::full({n}, -1, torch::kLong);
  p.weights = torch::rand({n}, torch::kDouble) + 0.5;
  return p;
}

void ExpectStreamingMatchesNaive(const Problem& p, const LossOptions& options, bool group_candidates = false) {
  const LossAndGrads naive =
      LossWithGrads(ContrastiveLoss, p.anchors, p.candidates, p.positive, p.exclude, options, p.weights);
  const LossAndGrads streaming =
      LossWithGrads(StreamingContrastiveLoss, p.anchors, p.candidates, p.positive, p.exclude, options, p.weights);
  ExpectClose(streaming.loss, naive.loss, "loss");
  ExpectClose(streaming.anchors_grad, naive.anchors_grad, "d/d anchors");
  if (group_candidates) {
    ExpectClose(SumOverGroups(streaming.candidates_grad, p.groups), SumOverGroups(naive.candidates_grad, p.groups),
                "d/d candidates (group sums)");
  } else {
    ExpectClose(streaming.candidates_grad, naive.candidates_grad, "d/d candidates");
  }
}

// The top-K losses widen the tile to 4K (trainer/loss/streaming_loss.cc), so for them K = 3 means tiles of 12.
TEST(StreamingLoss, MatchesNaiveForEveryLossTauTileAndK) {
  torch::manual_seed(3);
  constexpr int64_t kColumns = 37;
  const std::vector<int64_t> kTiles = {1, 5, 16, kColumns - 1, kColumns, 100};  // 5 and 16 do not divide C
  for (bool with_exclusion : {false, true}) {
    const Problem p = RandomProblem(7, kColumns, 5, with_exclusion);
    const int64_t negatives = kColumns - 1 - (with_exclusion ? 1 : 0);
    for (LossConfig::Name name : kAllLosses) {
      for (double tau : {0.01, 0.07, 0.2, 1.0}) {
        for (int64_t tile : kTiles) {
          for (int64_t k : {int64_t{3}, negatives, negatives + 10}) {
            SCOPED_TRACE(testing::Message() << LossConfig::Name_Name(name) << " tau=" << tau << " tile=" << tile
                                            << " K=" << k << " exclusion=" << with_exclusion);
            ExpectStreamingMatchesNaive(p, Options(name, tau, k, tile, p.anchors.size(0)));
          }
        }
      }
    }
  }
}

// Duplicated candidates tie their similarities: the top-K (and the max) may pick either copy, which moves gradient
// between the copies but keeps the losses, the anchors' gradients and the per-group sums.
TEST(StreamingLoss, TiedSimilarities) {
  torch::manual_seed(4);
  const Problem p = RandomProblem(6, 30, 4, /*with_exclusion=*/true, /*duplicates=*/12);
  for (LossConfig::Name name : kAllLosses) {
    for (int64_t tile : {1, 7, 30}) {
      for (int64_t k : {1, 5, 28}) {
        SCOPED_TRACE(testing::Message() << LossConfig::Name_Name(name) << " tile=" << tile << " K=" << k);
        ExpectStreamingMatchesNaive(p, Options(name, 0.07, k, tile, p.anchors.size(0)), /*group_candidates=*/true);
      }
    }
  }
}

// SimCLR's batch form, as BatchNegativesLoss builds it: the anchors are the candidates z (2b, d) themselves, each
// anchor excludes itself and its positive is the other view; gradients from both roles add up in z.
TEST(StreamingLoss, BatchFormGradientThroughBothRoles) {
  torch::manual_seed(5);
  const int64_t b = 6;
  const torch::Tensor self = torch::arange(2 * b, torch::kLong);
  const torch::Tensor positive = (self + b).remainder(2 * b);
  const torch::Tensor z = RandomUnit(2 * b, 8);
  const torch::Tensor weights = torch::rand({2 * b}, torch::kDouble);
  for (LossConfig::Name name : kAllLosses) {
    for (int64_t tile : {1, 5, 64}) {
      SCOPED_TRACE(testing::Message() << LossConfig::Name_Name(name) << " tile=" << tile);
      const LossOptions options = Options(name, 0.1, 4, tile, 2 * b);
      auto grad_of = [&](LossFn loss_fn) {
        const torch::Tensor leaf = z.clone().requires_grad_(true);
        (loss_fn(leaf, leaf, positive, self, options) * weights).sum().backward();
        return leaf.grad();
      };
      ExpectClose(grad_of(StreamingContrastiveLoss), grad_of(ContrastiveLoss), "d/d z");
    }
  }
}

// The memory-bank form: the bank does not require grad, so the backward skips its (C, d) gradient (as large as the
// bank) and the anchors' gradient is still the naive loss's, over several tiles and one.
TEST(StreamingLoss, CandidatesWithoutGradGetNoGradientAndTheSameAnchorGradient) {
  torch::manual_seed(8);
  const Problem p = RandomProblem(7, 37, 5, /*with_exclusion=*/false);
  for (LossConfig::Name name : kAllLosses) {
    for (int64_t tile : {5, 64}) {
      SCOPED_TRACE(testing::Message() << LossConfig::Name_Name(name) << " tile=" << tile);
      const LossOptions options = Options(name, 0.07, 3, tile, 7);
      const torch::Tensor bank = p.candidates.detach().clone();
      const torch::Tensor anchors = p.anchors.detach().clone().requires_grad_(true);
      (StreamingContrastiveLoss(anchors, bank, p.positive, p.exclude, options) * p.weights).sum().backward();
      EXPECT_FALSE(bank.grad().defined());
      const LossAndGrads naive =
          LossWithGrads(ContrastiveLoss, p.anchors, p.candidates, p.positive, p.exclude, options, p.weights);
      ExpectClose(anchors.grad(), naive.anchors_grad, "d/d anchors");
    }
  }
}

// The trainer's dtype: fp32 streaming against fp32 naive, same tolerance; a larger problem with several tiles.
TEST(StreamingLoss, Float32MatchesNaive) {
  torch::manual_seed(7);
  Problem p = RandomProblem(32, 1000, 16, /*with_exclusion=*/true);
  p.anchors = p.anchors.to(torch::kFloat);
  p.candidates = p.candidates.to(torch::kFloat);
  for (LossConfig::Name name : kAllLosses) {
    for (double tau : {0.01, 0.1}) {
      SCOPED_TRACE(testing::Message() << LossConfig::Name_Name(name) << " tau=" << tau);
      const LossOptions options = Options(name, tau, 80, 96, p.anchors.size(0));
      const LossAndGrads naive =
          LossWithGrads(ContrastiveLoss, p.anchors, p.candidates, p.positive, p.exclude, options, p.weights);
      const LossAndGrads streaming =
          LossWithGrads(StreamingContrastiveLoss, p.anchors, p.candidates, p.positive, p.exclude, options, p.weights);
      EXPECT_EQ(streaming.loss.scalar_type(), torch::kFloat);
      EXPECT_EQ(streaming.candidates_grad.scalar_type(), torch::kFloat);
      // Two fp32 computations in different orders: ~1e-7 relative per similarity, times 1/tau in the logits.
      ExpectClose(streaming.loss, naive.loss, "loss", 1e-5, 1e-5);
      ExpectClose(streaming.anchors_grad, naive.anchors_grad, "d/d anchors", 1e-5, 1e-5);
      ExpectClose(streaming.candidates_grad, naive.candidates_grad, "d/d candidates", 1e-5, 1e-5);
    }
  }
}

// bf16 inputs: bf16 has 8 mantissa bits, which 1/tau = 100 would amplify in the logits, so the loss is computed in
// fp32 from the bf16 values and only the result (and the gradients) are rounded back to bf16.
TEST(StreamingLoss, Bfloat16InputsComputeInFloat32) {
  torch::manual_seed(8);
  const Problem p = RandomProblem(8, 50, 8, /*with_exclusion=*/false);
  const torch::Tensor anchors = p.anchors.to(torch::kBFloat16), candidates = p.candidates.to(torch::kBFloat16);
  const LossOptions options = Options(LossConfig::INFONCE, 0.01, 0, 16, p.anchors.size(0));
  const LossAndGrads streaming =
      LossWithGrads(StreamingContrastiveLoss, anchors, candidates, p.positive, p.exclude, options, p.weights);
  EXPECT_EQ(streaming.loss.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(streaming.anchors_grad.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(streaming.candidates_grad.scalar_type(), torch::kBFloat16);
  const torch::Tensor expected =
      ContrastiveLoss(anchors.to(torch::kFloat), candidates.to(torch::kFloat), p.positive, p.exclude, options);
  ExpectClose(streaming.loss, expected, "loss", 1e-2, 1e-2);  // only the final rounding to bf16
}

// Central differences in float64 of sum_i w_i L_i against the custom backward, for every entry of both inputs.
TEST(StreamingLoss, FiniteDifferences) {
  torch::manual_seed(9);
  const Problem p = RandomProblem(4, 11, 3, /*with_exclusion=*/true);
  for (LossConfig::Name name : kAllLosses) {
    for (double tau : {0.07, 1.0}) {
      SCOPED_TRACE(testing::Message() << LossConfig::Name_Name(name) << " tau=" << tau);
      const LossOptions options = Options(name, tau, 3, 4, p.anchors.size(0));
      const LossAndGrads analytic =
          LossWithGrads(StreamingContrastiveLoss, p.anchors, p.candidates, p.positive, p.exclude, options, p.weights);
      auto objective = [&](const torch::Tensor& a, const torch::Tensor& c) {
        return (StreamingContrastiveLoss(a, c, p.positive, p.exclude, options) * p.weights).sum().item<double>();
      };
      constexpr double h = 1e-6;
      for (int role = 0; role < 2; ++role) {
        const torch::Tensor x = (role == 0 ? p.anchors : p.candidates).clone();
        const torch::Tensor flat = x.view({-1});
        torch::Tensor numeric = torch::zeros_like(x);
        for (int64_t j = 0; j < flat.numel(); ++j) {
          const double saved = flat[j].item<double>();
          flat[j] = saved + h;
          const double up = role == 0 ? objective(x, p.candidates) : objective(p.anchors, x);
          flat[j] = saved - h;
          const double down = role == 0 ? objective(x, p.candidates) : objective(p.anchors, x);
          flat[j] = saved;
          numeric.view({-1})[j] = (up - down) / (2 * h);
        }
        ExpectClose(role == 0 ? analytic.anchors_grad : analytic.candidates_grad, numeric,
                    role == 0 ? "d/d anchors" : "d/d candidates", 1e-5, 1e-7);
      }
    }
  }
}

// A learnable tau (loss.tau_mode LEARNABLE): the loss at inverse_tau = exp(l) is the loss at tau = exp(-l) (for the
// losses that use tau; the others ignore it), and its gradient with respect to l matches finite differences, through
// the streaming and the naive loss alike.
TEST(StreamingLoss, LearnableTauValueAndFiniteDifferenceGradient) {
  torch::manual_seed(11);
  const Problem p = RandomProblem(5, 13, 3, /*with_exclusion=*/true);
  for (LossConfig::Name name : kAllLosses) {
    for (int64_t tile : {4, 0}) {
      SCOPED_TRACE(testing::Message() << LossConfig::Name_Name(name) << " tile=" << tile);
      const double l0 = std::log(1 / 0.2);
      LossOptions options = Options(name, 0.5, 3, tile, p.anchors.size(0));  // tau 0.5 must be ignored
      const auto objective = [&](double l) {
        LossOptions at = options;
        at.inverse_tau = torch::full({}, std::exp(l), torch::kDouble);
        return (StreamingOrNaiveLoss(p.anchors, p.candidates, p.positive, p.exclude, at) * p.weights).sum();
      };
      LossOptions constant = options;
      constant.tau = LossUsesTau(name) ? 0.2 : 0.5;
      const double expected =
          (StreamingOrNaiveLoss(p.anchors, p.candidates, p.positive, p.exclude, constant) * p.weights).sum()
              .item<double>();
      EXPECT_NEAR(objective(l0).item<double>(), expected, 1e-10);
      const torch::Tensor l = torch::full({}, l0, torch::kDouble).set_requires_grad(true);
      options.inverse_tau = l.exp();
      const torch::Tensor loss =
          (StreamingOrNaiveLoss(p.anchors, p.candidates, p.positive, p.exclude, options) * p.weights).sum();
      if (!LossUsesTau(name)) {
        EXPECT_FALSE(loss.requires_grad()) << "a loss without tau does not depend on the scale";
        continue;
      }
      loss.backward();
      constexpr double h = 1e-6;
      const double numeric = (objective(l0 + h).item<double>() - objective(l0 - h).item<double>()) / (2 * h);
      EXPECT_NEAR(l.grad().item<double>(), numeric, 1e-6 * std::max(1.0, std::abs(numeric)));
    }
  }
}

// A rank without anchors still backpropagates into the candidates (zeros), as every rank must through the gather.
TEST(StreamingLoss, EmptyBatchGivesEmptyLoss) {
  for (LossConfig::Name name : kAllLosses) {
    const torch::Tensor candidates = torch::randn({5, 3}).requires_grad_(true);
    const torch::Tensor loss =
        StreamingContrastiveLoss(torch::zeros({0, 3}), candidates, torch::zeros({0}, torch::kLong),
                                 torch::zeros({0}, torch::kLong), Options(name, 0.1, 2, 4, 1));
    EXPECT_EQ(loss.sizes(), torch::IntArrayRef({0})) << LossConfig::Name_Name(name);
    loss.sum().backward();
    EXPECT_TRUE(torch::equal(candidates.grad(), torch::zeros({5, 3}))) << LossConfig::Name_Name(name);
  }
}

TEST(StreamingLoss, TileZeroIsTheNaiveLoss) {
  torch::manual_seed(10);
  const Problem p = RandomProblem(5, 20, 4, /*with_exclusion=*/true);
  const LossOptions options = Options(LossConfig::INFONCE, 0.1, 0, 0, p.anchors.size(0));
  EXPECT_TRUE(torch::equal(StreamingOrNaiveLoss(p.anchors, p.candidates, p.positive, p.exclude, options),
                           ContrastiveLoss(p.anchors, p.candidates, p.positive, p.exclude, options)));
}

// The trainer states the number of negatives (LossOptions.min_negatives), so the indices are asserted on their
// device instead of read on the host: the same losses, and a bad index still stops the computation.
TEST(StreamingLoss, StatedNegativesGiveTheSameLossAndStillCheckTheIndices) {
  torch::manual_seed(12);
  for (const bool with_exclusion : {false, true}) {
    const Problem p = RandomProblem(6, 21, 4, with_exclusion);
    LossOptions options = Options(LossConfig::HARD, 0.1, 5, 4, p.anchors.size(0));
    const torch::Tensor read = StreamingContrastiveLoss(p.anchors, p.candidates, p.positive, p.exclude, options);
    options.min_negatives = 21 - 1 - (with_exclusion ? 1 : 0);
    EXPECT_TRUE(torch::equal(StreamingContrastiveLoss(p.anchors, p.candidates, p.positive, p.exclude, options), read));
    const torch::Tensor out_of_range = p.positive.clone().fill_(21);
    EXPECT_ANY_THROW(StreamingContrastiveLoss(p.anchors, p.candidates, out_of_range, p.exclude, options));
  }
}

// The same comparison with CUDA tensors (the GPU check runs the unit tests with a GPU visible).
TEST(StreamingLoss, CudaMatchesNaive) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(11);
  const Problem p = RandomProblem(64, 3000, 32, /*with_exclusion=*/true);
  const torch::Device cuda(torch::kCUDA);
  for (LossConfig::Name name : kAllLosses) {
    SCOPED_TRACE(LossConfig::Name_Name(name));
    const LossOptions options = Options(name, 0.07, 50, 256, p.anchors.size(0));
    const LossAndGrads naive =
        LossWithGrads(ContrastiveLoss, p.anchors, p.candidates, p.positive, p.exclude, options, p.weights);
    const LossAndGrads streaming = LossWithGrads(StreamingContrastiveLoss, p.anchors.to(cuda), p.candidates.to(cuda),
                                                 p.positive.to(cuda), p.exclude.to(cuda), options, p.weights.to(cuda));
    EXPECT_TRUE(streaming.loss.is_cuda());
    ExpectClose(streaming.loss, naive.loss, "loss");
    ExpectClose(streaming.anchors_grad, naive.anchors_grad, "d/d anchors");
    ExpectClose(streaming.candidates_grad, naive.candidates_grad, "d/d candidates");
  }
}

}  // namespace
}  // namespace tempered
