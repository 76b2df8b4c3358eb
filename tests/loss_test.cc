// The losses of docs/paper.md §2 against closed forms computed by hand, the gradient identities and limits of §3
// (claims 1 and 2 of §7), and finite-difference gradient checks of every loss. The golden comparison against the
// independent PyTorch reference is loss_golden_test.cc (driven by loss_reference_test.py).
#include "trainer/loss/loss.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

namespace tempered {
namespace {

constexpr double kPi = 3.14159265358979323846;
const std::vector<LossConfig::Name> kAllLosses = {LossConfig::INFONCE, LossConfig::SIMPLE, LossConfig::HARD,
                                                  LossConfig::HARD_SIMPLE, LossConfig::NEAREST};

torch::Tensor Index(std::vector<int64_t> values) { return torch::tensor(values, torch::kLong); }

LossOptions Options(LossConfig::Name name, double tau, int64_t hard_k = 0) {
  LossOptions options;
  options.name = name;
  options.tau = tau;
  options.hard_k = hard_k;
  return options;
}

// Unit vectors in the plane at the given angles (degrees): (n, 2) float64.
torch::Tensor Circle(std::vector<double> degrees) {
  std::vector<double> xy;
  for (double deg : degrees) {
    xy.push_back(std::cos(deg * kPi / 180));
    xy.push_back(std::sin(deg * kPi / 180));
  }
  return torch::tensor(xy, torch::kDouble).view({-1, 2});
}

torch::Tensor RandomUnit(int64_t n, int64_t d) {
  return torch::nn::functional::normalize(torch::randn({n, d}, torch::kDouble),
                                          torch::nn::functional::NormalizeFuncOptions().dim(1));
}

// A row of similarities as a (1, C) float64 leaf.
torch::Tensor Row(std::vector<double> values) { return torch::tensor(values, torch::kDouble).view({1, -1}); }

// Candidates at 0, 60, 90 and 180 degrees, so an anchor at 0 degrees sees s = (1, 0.5, 0, -1).
class UnitCircle : public testing::Test {
 protected:
  torch::Tensor anchors = Circle({0, 0});
  torch::Tensor candidates = Circle({0, 60, 90, 180});
  // Anchor 0: positive s = 1, negatives (0.5, 0, -1). Anchor 1: positive s = 0 (c2), c3 excluded, negatives (1, 0.5).
  torch::Tensor positive = Index({0, 2});
  torch::Tensor exclude = Index({-1, 3});
  double tau = 0.5;

  std::vector<double> Loss(LossConfig::Name name, int64_t hard_k = 0) {
    torch::Tensor loss = ContrastiveLoss(anchors, candidates, positive, exclude, Options(name, tau, hard_k));
    EXPECT_EQ(loss.sizes(), torch::IntArrayRef({2}));
    return {loss[0].item<double>(), loss[1].item<double>()};
  }
};

TEST_F(UnitCircle, InfoNce) {
  // -log(e^{s_ii/tau} / sum over the positive and the negatives of e^{s/tau}), s / tau = 2 * s.
  std::vector<double> loss = Loss(LossConfig::INFONCE);
  EXPECT_NEAR(loss[0], std::log(std::exp(2) + std::exp(1) + std::exp(0) + std::exp(-2)) - 2, 1e-12);
  EXPECT_NEAR(loss[1], std::log(std::exp(0) + std::exp(2) + std::exp(1)) - 0, 1e-12);
}

TEST_F(UnitCircle, Simple) {
  // -s_ii + (1/C) sum_neg s_ik; C counts the positive and the negatives, not the excluded candidate.
  std::vector<double> loss = Loss(LossConfig::SIMPLE);
  EXPECT_NEAR(loss[0], -1 + (0.5 + 0 - 1) / 4, 1e-12);
  EXPECT_NEAR(loss[1], -0 + (1 + 0.5) / 3, 1e-12);
}

TEST_F(UnitCircle, Hard) {
  std::vector<double> k1 = Loss(LossConfig::HARD, 1);  // only the nearest negative: 0.5 and 1
  EXPECT_NEAR(k1[0], std::log(std::exp(2) + std::exp(1)) - 2, 1e-12);
  EXPECT_NEAR(k1[1], std::log(std::exp(0) + std::exp(2)) - 0, 1e-12);
  std::vector<double> k2 = Loss(LossConfig::HARD, 2);  // anchor 1 has only two negatives: all of them
  EXPECT_NEAR(k2[0], std::log(std::exp(2) + std::exp(1) + std::exp(0)) - 2, 1e-12);
  EXPECT_NEAR(k2[1], std::log(std::exp(0) + std::exp(2) + std::exp(1)) - 0, 1e-12);
}

TEST_F(UnitCircle, HardSimple) {
  std::vector<double> k1 = Loss(LossConfig::HARD_SIMPLE, 1);
  EXPECT_NEAR(k1[0], -1 + 0.5, 1e-12);
  EXPECT_NEAR(k1[1], -0 + 1, 1e-12);
  std::vector<double> k2 = Loss(LossConfig::HARD_SIMPLE, 2);
  EXPECT_NEAR(k2[0], -1 + (0.5 + 0) / 2, 1e-12);
  EXPECT_NEAR(k2[1], -0 + (1 + 0.5) / 2, 1e-12);
}

TEST_F(UnitCircle, Nearest) {
  std::vector<double> loss = Loss(LossConfig::NEAREST);
  EXPECT_NEAR(loss[0], 0, 1e-12);      // max(0.5 - 1, 0)
  EXPECT_NEAR(loss[1], 1 - 0, 1e-12);  // max(1 - 0, 0)
}

TEST_F(UnitCircle, RelativePenaltyAndEntropy) {
  torch::Tensor sims = anchors.matmul(candidates.t());
  torch::Tensor r = RelativePenalty(sims, positive, exclude, tau);
  const double z0 = std::exp(1) + std::exp(0) + std::exp(-2);
  const std::vector<double> row0 = {0, std::exp(1) / z0, std::exp(0) / z0, std::exp(-2) / z0};
  const double z1 = std::exp(2) + std::exp(1);
  const std::vector<double> row1 = {std::exp(2) / z1, std::exp(1) / z1, 0, 0};
  for (int j = 0; j < 4; ++j) {
    EXPECT_NEAR(r[0][j].item<double>(), row0[j], 1e-12) << "j=" << j;
    EXPECT_NEAR(r[1][j].item<double>(), row1[j], 1e-12) << "j=" << j;
  }
  torch::Tensor h = PenaltyEntropy(sims, positive, exclude, tau);
  double h0 = 0;
  for (double p : row0) h0 -= p > 0 ? p * std::log(p) : 0;
  EXPECT_NEAR(h[0].item<double>(), h0, 1e-12);
  // Equal negatives: the uniform distribution, entropy log(number of negatives); the positive does not count.
  torch::Tensor flat = Row({0.9, 0.3, 0.3, 0.3, 0.3});
  EXPECT_NEAR(PenaltyEntropy(flat, Index({0}), Index({-1}), 0.01).item<double>(), std::log(4), 1e-12);
}

TEST(Loss, EmptyBatchGivesEmptyLoss) {
  for (LossConfig::Name name : kAllLosses) {
    torch::Tensor loss = ContrastiveLoss(torch::zeros({0, 3}), torch::randn({5, 3}), Index({}), Index({}),
                                         Options(name, 0.1, 2));
    EXPECT_EQ(loss.sizes(), torch::IntArrayRef({0})) << LossConfig::Name_Name(name);
  }
}

// Random similarities of unit vectors in the memory-bank form (exclude -1) and with exclusions.
struct Similarities {
  torch::Tensor sims, positive, exclude;
};
Similarities RandomSimilarities(int64_t n, int64_t columns, bool with_exclusion) {
  torch::Tensor sims = RandomUnit(n, 16).matmul(RandomUnit(columns, 16).t());
  torch::Tensor positive = torch::randint(columns, {n}, torch::kLong);
  torch::Tensor exclude = with_exclusion ? (positive + 1) % columns : torch::full({n}, -1, torch::kLong);
  return {sims, positive, exclude};
}

// §3: dL/ds_ij = P_ij / tau for a negative j, dL/ds_ii = -(1/tau) sum_neg P_ik, so sum_neg |dL/ds_ij| = |dL/ds_ii|
// and the relative penalty is |dL/ds_ij| / |dL/ds_ii|. Excluded candidates get no gradient.
TEST(Loss, GradientIdentities) {
  torch::manual_seed(1);
  for (bool with_exclusion : {false, true}) {
    for (double tau : {0.05, 0.2, 1.0}) {
      SCOPED_TRACE(testing::Message() << "tau=" << tau << " exclusion=" << with_exclusion);
      auto [sims, positive, exclude] = RandomSimilarities(6, 20, with_exclusion);
      sims.requires_grad_(true);
      LossFromSimilarities(sims, positive, exclude, Options(LossConfig::INFONCE, tau)).sum().backward();
      torch::Tensor grad = sims.grad();  // (n, C)

      torch::Tensor columns = torch::arange(20, torch::kLong).unsqueeze(0);
      torch::Tensor is_pos = columns == positive.unsqueeze(1), is_excl = columns == exclude.unsqueeze(1);
      torch::Tensor is_neg = is_pos.logical_or(is_excl).logical_not();
      // P over all candidates but the excluded ones, the positive included.
      torch::Tensor p = sims.detach().div(tau).masked_fill(is_excl, -INFINITY).softmax(1);
      torch::Tensor grad_pos = grad.masked_select(is_pos);                                    // (n)
      torch::Tensor neg_p_sum = p.masked_fill(is_neg.logical_not(), 0).sum(1);                // (n)
      EXPECT_TRUE(torch::allclose(grad.masked_select(is_neg), p.masked_select(is_neg) / tau, 1e-10, 1e-12));
      EXPECT_TRUE(torch::allclose(grad_pos, -neg_p_sum / tau, 1e-10, 1e-12));
      EXPECT_TRUE(torch::allclose(grad.abs().masked_fill(is_neg.logical_not(), 0).sum(1), grad_pos.abs(), 1e-10));
      EXPECT_EQ(grad.masked_select(is_excl).abs().sum().item<double>(), 0.0);
      torch::Tensor r = RelativePenalty(sims.detach(), positive, exclude, tau);
      EXPECT_TRUE(torch::allclose(r, grad.abs().masked_fill(is_neg.logical_not(), 0) / grad_pos.abs().unsqueeze(1),
                                  1e-10, 1e-12));
      EXPECT_TRUE(torch::allclose(r.sum(1), torch::ones({6}, torch::kDouble)));
    }
  }
}

// §3: dH/dtau = Var_r(s) / tau^3 > 0 whenever an anchor's negatives are not all equal; 0 <= H <= log(negatives).
TEST(Loss, PenaltyEntropyStrictlyIncreasesWithTau) {
  torch::manual_seed(2);
  auto [sims, positive, exclude] = RandomSimilarities(8, 64, /*with_exclusion=*/true);
  torch::Tensor previous = torch::full({8}, -1.0, torch::kDouble);
  for (double tau : {0.01, 0.02, 0.05, 0.07, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 2.0, 10.0}) {
    torch::Tensor h = PenaltyEntropy(sims, positive, exclude, tau);
    EXPECT_TRUE(h.gt(previous).all().item<bool>()) << "tau=" << tau << " H=" << h << " before " << previous;
    EXPECT_TRUE(h.ge(0).all().item<bool>() && h.le(std::log(62.0) + 1e-12).all().item<bool>()) << h;
    previous = h;
  }
}

// tau -> 0+: log-sum-exp lies between the max and the max + log N, so
// max(s_max - s_ii, 0) <= tau * L <= max(s_max - s_ii, 0) + tau * log N exactly, and tau * L converges to `nearest`.
TEST(Loss, LowTemperatureLimitIsNearest) {
  torch::manual_seed(3);
  for (bool with_exclusion : {false, true}) {
    auto [sims, positive, exclude] = RandomSimilarities(8, 32, with_exclusion);
    const double n_candidates = with_exclusion ? 31 : 32;
    // Half the anchors get a positive more similar than any negative, so both branches of the max are tested.
    for (int64_t i = 0; i < 8; i += 2) sims[i][positive[i].item<int64_t>()] = 0.99;
    torch::Tensor nearest = LossFromSimilarities(sims, positive, exclude, Options(LossConfig::NEAREST, 1));
    EXPECT_TRUE(nearest.gt(0).any().item<bool>() && nearest.eq(0).any().item<bool>()) << "both branches of the max";
    for (double tau : {1e-2, 1e-3, 1e-4}) {
      torch::Tensor scaled = tau * LossFromSimilarities(sims, positive, exclude, Options(LossConfig::INFONCE, tau));
      torch::Tensor gap = scaled - nearest;
      EXPECT_TRUE(gap.ge(-1e-12).all().item<bool>()) << gap;
      EXPECT_TRUE(gap.le(tau * std::log(n_candidates) + 1e-12).all().item<bool>()) << "tau=" << tau << gap;
    }
  }
}

// tau -> inf: tau * (L - log N) = -s_ii + tau * log(mean_k e^{s_ik/tau}) = -((N-1)/N) s_ii + (1/N) sum_neg s_ik
// + Var(s)/(2 tau) + O(1/tau^2), with N candidates (positive and negatives). |s| <= 1, so the error is below 1/tau.
TEST(Loss, HighTemperatureLimitIsLinear) {
  torch::manual_seed(4);
  for (bool with_exclusion : {false, true}) {
    auto [sims, positive, exclude] = RandomSimilarities(8, 32, with_exclusion);
    const double n = with_exclusion ? 31 : 32;
    torch::Tensor pos = sims.gather(1, positive.unsqueeze(1)).squeeze(1);
    torch::Tensor columns = torch::arange(32, torch::kLong).unsqueeze(0);
    torch::Tensor is_neg = (columns == positive.unsqueeze(1)).logical_or(columns == exclude.unsqueeze(1)).logical_not();
    torch::Tensor limit = -((n - 1) / n) * pos + sims.masked_fill(is_neg.logical_not(), 0).sum(1) / n;
    double previous_error = INFINITY;
    for (double tau : {1e2, 1e3, 1e4}) {
      torch::Tensor loss = LossFromSimilarities(sims, positive, exclude, Options(LossConfig::INFONCE, tau));
      const double error = (tau * (loss - std::log(n)) - limit).abs().max().item<double>();
      EXPECT_LT(error, 1 / tau) << "tau=" << tau;
      EXPECT_LT(error, previous_error) << "tau=" << tau;
      previous_error = error;
    }
  }
}

// Central differences of f (a scalar) with respect to every entry of x, in float64.
torch::Tensor NumericGradient(const std::function<torch::Tensor(const torch::Tensor&)>& f, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  const double eps = 1e-6;
  torch::Tensor grad = torch::zeros_like(x);
  for (int64_t i = 0; i < x.numel(); ++i) {
    torch::Tensor plus = x.clone(), minus = x.clone();
    plus.view(-1)[i] += eps;
    minus.view(-1)[i] -= eps;
    grad.view(-1)[i] = (f(plus) - f(minus)).item<double>() / (2 * eps);
  }
  return grad;
}

void ExpectGradientsClose(const torch::Tensor& analytic, const torch::Tensor& numeric, const std::string& what) {
  const double scale = std::max(1.0, numeric.abs().max().item<double>());
  const double error = (analytic - numeric).abs().max().item<double>();
  EXPECT_LT(error, 1e-6 * scale) << what << "\nanalytic\n" << analytic << "\nnumeric\n" << numeric;
}

// The smallest gap between consecutive negative similarities of any anchor (sims (n, C), float64): the hard and
// nearest losses choose negatives by rank, so a test is CPU-independent only when no two negatives of an anchor
// are closer than the rounding error of the precision under test (a tie broken by rounding picks another
// negative, and so another subgradient, on another CPU or BLAS kernel).
double MinNegativeGap(const torch::Tensor& sims, const torch::Tensor& positive, const torch::Tensor& exclude) {
  const int64_t n = sims.size(0);
  torch::Tensor is_negative = torch::ones_like(sims, torch::kBool);
  is_negative.scatter_(1, positive.view({-1, 1}), false);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t e = exclude[i].item<int64_t>();
    if (e >= 0) is_negative[i][e] = false;
  }
  double gap = INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    const torch::Tensor sorted = std::get<0>(sims[i].masked_select(is_negative[i]).sort());
    if (sorted.numel() > 1) gap = std::min(gap, sorted.diff().min().item<double>());
  }
  return gap;
}

// Every loss, both forms: separate anchors and candidates (some anchors with an exclusion, some without) and the
// SimCLR batch form where the anchors are the candidates (2B, d) and each excludes itself. A random weight per
// anchor makes every per-anchor loss count. Random Gaussian inputs have no ties, so topk and max are
// differentiable at the test point and a 1e-6 step does not change the chosen set.
TEST(Loss, FiniteDifferenceGradients) {
  torch::manual_seed(5);
  const int64_t n = 4, columns = 7, d = 3, batch = 4;
  torch::Tensor anchors = torch::randn({n, d}, torch::kDouble), candidates = torch::randn({columns, d}, torch::kDouble);
  torch::Tensor positive = Index({0, 3, 6, 2}), exclude = Index({-1, 4, 5, -1});
  torch::Tensor weights = torch::rand({n}, torch::kDouble);
  torch::Tensor views = torch::randn({2 * batch, d}, torch::kDouble);
  torch::Tensor batch_positive = (torch::arange(2 * batch, torch::kLong) + batch) % (2 * batch);
  torch::Tensor batch_exclude = torch::arange(2 * batch, torch::kLong);
  torch::Tensor batch_weights = torch::rand({2 * batch}, torch::kDouble);
  // The chosen negatives must not change within a step of 1e-6 (nor with float64 rounding on another CPU).
  ASSERT_GT(MinNegativeGap(anchors.matmul(candidates.t()), positive, exclude), 1e-4);
  ASSERT_GT(MinNegativeGap(views.matmul(views.t()), batch_positive, batch_exclude), 1e-4);

  for (LossConfig::Name name : kAllLosses) {
    for (double tau : {0.1, 0.5}) {
      for (int64_t hard_k : {1, 3}) {
        const std::string what = LossConfig::Name_Name(name) + " tau=" + std::to_string(tau) +
                                 " K=" + std::to_string(hard_k);
        const LossOptions options = Options(name, tau, hard_k);
        auto of_anchors = [&](const torch::Tensor& a) {
          return (ContrastiveLoss(a, candidates, positive, exclude, options) * weights).sum();
        };
        auto of_candidates = [&](const torch::Tensor& c) {
          return (ContrastiveLoss(anchors, c, positive, exclude, options) * weights).sum();
        };
        auto of_views = [&](const torch::Tensor& z) {
          return (ContrastiveLoss(z, z, batch_positive, batch_exclude, options) * batch_weights).sum();
        };
        torch::Tensor a = anchors.clone().requires_grad_(true), c = candidates.clone().requires_grad_(true);
        torch::Tensor z = views.clone().requires_grad_(true);
        (ContrastiveLoss(a, c, positive, exclude, options) * weights).sum().backward();
        of_views(z).backward();
        ExpectGradientsClose(a.grad(), NumericGradient(of_anchors, anchors), what + " anchors");
        ExpectGradientsClose(c.grad(), NumericGradient(of_candidates, candidates), what + " candidates");
        ExpectGradientsClose(z.grad(), NumericGradient(of_views, views), what + " batch form");
      }
    }
  }
}

// tau = 0.01 in fp32 with every similarity near 1: s / tau ~ 100 would overflow a raw exp (e^100 > 3.4e38).
// The fp32 losses and gradients are finite and agree with the same computation in float64.
// The input is built so that fp32 and float64 choose the same hardest negatives on any CPU: z_i = R (e_0 +
// sqrt(d_i) e_{i+1}) / |.| with distinct d_i and a random rotation R, so s_ij = 1 / sqrt((1 + d_i)(1 + d_j)) exactly
// and an anchor's negatives are ordered by d_j, >= 1.9e-4 apart, while fp32 similarities of unit 32-d vectors carry
// < 1e-6 of rounding error whatever the summation order. (Random points around one direction, the earlier input,
// had negatives 1e-7 apart: `nearest` failed on an AMD EPYC where the matmul rounded them the other way.)
TEST(Loss, SmallTauIsFiniteInFp32) {
  torch::manual_seed(6);
  const int64_t n = 16, d = 32;
  const torch::Tensor spread = (torch::randperm(n, torch::kLong).to(torch::kDouble) + 1) * 4e-4;  // d_i
  torch::Tensor basis = torch::zeros({n, d}, torch::kDouble);
  basis.select(1, 0).fill_(1.0);
  basis.slice(1, 1, n + 1).diagonal().copy_(spread.sqrt());
  const torch::Tensor rotation = std::get<0>(torch::linalg_qr(torch::randn({d, d}, torch::kDouble)));
  torch::Tensor z = torch::nn::functional::normalize(basis, torch::nn::functional::NormalizeFuncOptions().dim(1))
                        .matmul(rotation).to(torch::kFloat);
  torch::Tensor positive = (torch::arange(n, torch::kLong) + n / 2) % n, exclude = torch::arange(n, torch::kLong);
  const torch::Tensor sims64 = z.to(torch::kDouble).matmul(z.to(torch::kDouble).t());
  ASSERT_GT(sims64.min().item<double>(), 0.99);
  ASSERT_GT(MinNegativeGap(sims64, positive, exclude), 1e-4);
  ASSERT_LT((z.matmul(z.t()).to(torch::kDouble) - sims64).abs().max().item<double>(), 1e-6);
  for (LossConfig::Name name : kAllLosses) {
    SCOPED_TRACE(LossConfig::Name_Name(name));
    const LossOptions options = Options(name, 0.01, 3);
    torch::Tensor z32 = z.clone().requires_grad_(true), z64 = z.to(torch::kDouble).requires_grad_(true);
    torch::Tensor loss32 = ContrastiveLoss(z32, z32, positive, exclude, options);
    torch::Tensor loss64 = ContrastiveLoss(z64, z64, positive, exclude, options);
    EXPECT_EQ(loss32.scalar_type(), torch::kFloat);
    loss32.sum().backward();
    loss64.sum().backward();
    EXPECT_TRUE(torch::isfinite(loss32).all().item<bool>()) << loss32;
    EXPECT_TRUE(torch::isfinite(z32.grad()).all().item<bool>());
    // fp32 similarities carry ~1e-7 absolute error, amplified by 1/tau = 100 in the logits.
    EXPECT_TRUE(torch::allclose(loss32.to(torch::kDouble), loss64, 1e-3, 1e-4)) << loss32 << loss64;
    EXPECT_TRUE(torch::allclose(z32.grad().to(torch::kDouble), z64.grad(), 1e-3,
                                1e-2 * z64.grad().abs().max().item<double>()));
  }
}

TEST(Loss, HardWithAllNegativesIsInfoNce) {
  torch::manual_seed(7);
  auto [sims, positive, exclude] = RandomSimilarities(5, 12, /*with_exclusion=*/true);  // 10 negatives each
  for (double tau : {0.01, 0.1, 1.0}) {
    torch::Tensor info_nce = LossFromSimilarities(sims, positive, exclude, Options(LossConfig::INFONCE, tau));
    for (int64_t hard_k : {10, 11, 1000}) {
      torch::Tensor hard = LossFromSimilarities(sims, positive, exclude, Options(LossConfig::HARD, tau, hard_k));
      EXPECT_TRUE(torch::allclose(hard, info_nce, 1e-12, 1e-12)) << "tau=" << tau << " K=" << hard_k;
    }
    // Fewer negatives give a smaller denominator: hard <= infonce.
    torch::Tensor hard = LossFromSimilarities(sims, positive, exclude, Options(LossConfig::HARD, tau, 3));
    EXPECT_TRUE(hard.le(info_nce).all().item<bool>());
  }
  // hard_simple over every negative is the mean negative similarity minus the positive one.
  torch::Tensor pos = sims.gather(1, positive.unsqueeze(1)).squeeze(1);
  torch::Tensor all_neg_sum = sims.sum(1) - pos - sims.gather(1, exclude.unsqueeze(1)).squeeze(1);
  torch::Tensor hard_simple = LossFromSimilarities(sims, positive, exclude, Options(LossConfig::HARD_SIMPLE, 1, 50));
  EXPECT_TRUE(torch::allclose(hard_simple, -pos + all_neg_sum / 10, 1e-12, 1e-12));
}

TEST(Loss, HardK) {
  LossConfig config;
  config.set_hard_k(4095);
  EXPECT_EQ(HardK(config, 49999), 4095);
  EXPECT_EQ(HardK(config, 100), 100);  // clamped to the negatives
  config.set_hard_k(0);
  config.set_hard_fraction(0.08);
  EXPECT_EQ(HardK(config, 254), 20);  // round(20.32)
  EXPECT_EQ(HardK(config, 6), 1);     // round(0.48) = 0, at least 1
  config.set_hard_fraction(2.0);
  EXPECT_EQ(HardK(config, 6), 6);
}

}  // namespace
}  // namespace tempered
