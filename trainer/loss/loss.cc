// The losses of docs/paper.md §2 in their naive form: the whole (n, C) similarity matrix at once. This is the reference
// that a streaming (tiled) version must match, so it favours plain LibTorch ops with autograd over speed.
#include "trainer/loss/loss.h"

#include <glog/logging.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace tempered {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// (n, C) bool: true at column index[i] of row i; index -1 matches no column.
torch::Tensor ColumnMask(const torch::Tensor& index, int64_t columns) {
  return torch::arange(columns, index.options()).unsqueeze(0) == index.unsqueeze(1);
}

// (n, C) bool: true where candidate j is a negative of anchor i (neither its positive nor excluded).
torch::Tensor NegativeMask(const torch::Tensor& positive, const torch::Tensor& exclude, int64_t columns) {
  return ColumnMask(positive, columns).logical_or(ColumnMask(exclude, columns)).logical_not();
}

void CheckIndices(const torch::Tensor& sims, const torch::Tensor& positive, const torch::Tensor& exclude) {
  CHECK_EQ(sims.dim(), 2) << "similarities must be (anchors, candidates)";
  const int64_t n = sims.size(0), columns = sims.size(1);
  CHECK(positive.scalar_type() == torch::kLong && exclude.scalar_type() == torch::kLong)
      << "positive and exclude must be int64";
  CHECK(positive.dim() == 1 && positive.size(0) == n) << "positive must be (" << n << ")";
  CHECK(exclude.dim() == 1 && exclude.size(0) == n) << "exclude must be (" << n << ")";
  if (n == 0) return;
  CHECK(positive.min().item<int64_t>() >= 0 && positive.max().item<int64_t>() < columns)
      << "positive index out of range [0, " << columns << ")";
  CHECK(exclude.min().item<int64_t>() >= -1 && exclude.max().item<int64_t>() < columns)
      << "exclude index out of range [-1, " << columns << ")";
  CHECK(!exclude.eq(positive).any().item<bool>()) << "an anchor excludes its own positive";
}

}  // namespace

torch::Tensor LossFromSimilarities(const torch::Tensor& sims, const torch::Tensor& positive,
                                   const torch::Tensor& exclude, const LossOptions& options) {
  CheckIndices(sims, positive, exclude);
  CHECK_GT(options.tau, 0.0) << "tau must be positive";
  const torch::Tensor is_negative = NegativeMask(positive, exclude, sims.size(1));  // (n, C)
  const torch::Tensor negative_count = is_negative.sum(1);                            // (n)
  const int64_t min_negatives = sims.size(0) == 0 ? 0 : negative_count.min().item<int64_t>();
  CHECK(sims.size(0) == 0 || min_negatives >= 1) << "every anchor needs at least one negative";

  const double tau = options.tau;
  const torch::Tensor pos = sims.gather(1, positive.unsqueeze(1)).squeeze(1);  // (n) s_ii
  // Non-negatives set to -inf: they drop out of logsumexp, max and topk, and receive zero gradient.
  const torch::Tensor neg = sims.masked_fill(is_negative.logical_not(), kNegInf);  // (n, C)
  // Eq 1 over the negatives given, divided through by e^{s_ii/tau}: log(1 + sum_k e^{(s_ik - s_ii)/tau}) as a
  // logsumexp (running max, safe at tau = 0.01). Shifting by s_ii first keeps fp32 precise when the loss is small.
  auto info_nce = [&](const torch::Tensor& negatives) {  // negatives (n, m), -inf where absent
    const torch::Tensor logits = (negatives - pos.unsqueeze(1)) / tau;                // (n, m)
    return torch::cat({torch::zeros_like(pos).unsqueeze(1), logits}, 1).logsumexp(1);  // (n)
  };
  auto hardest = [&]() {  // (n, K) the K largest negative similarities of each anchor
    CHECK_GT(options.hard_k, 0) << "HARD and HARD_SIMPLE need hard_k > 0 (see HardK)";
    return std::get<0>(neg.topk(std::min(options.hard_k, min_negatives), 1));
  };

  switch (options.name) {
    case LossConfig::INFONCE:
      return info_nce(neg);
    case LossConfig::SIMPLE:
      // lambda = 1 / C with C = the positive plus the negatives (excluded candidates do not count).
      return -pos + sims.masked_fill(is_negative.logical_not(), 0).sum(1) / (negative_count + 1).to(sims.dtype());
    case LossConfig::HARD:
      return info_nce(hardest());
    case LossConfig::HARD_SIMPLE:
      return -pos + hardest().mean(1);
    case LossConfig::NEAREST:
      return torch::relu(std::get<0>(neg.max(1)) - pos);
    default:
      LOG(FATAL) << "unknown loss " << LossConfig::Name_Name(options.name);
  }
  return {};
}

torch::Tensor ContrastiveLoss(const torch::Tensor& anchors, const torch::Tensor& candidates,
                              const torch::Tensor& positive, const torch::Tensor& exclude,
                              const LossOptions& options) {
  CHECK(anchors.dim() == 2 && candidates.dim() == 2 && anchors.size(1) == candidates.size(1))
      << "anchors (n, d) and candidates (C, d) must share d";
  return LossFromSimilarities(anchors.matmul(candidates.t()), positive, exclude, options);  // s: (n, C)
}

int64_t HardK(const LossConfig& config, int64_t negatives) {
  const int64_t k = config.hard_k() > 0 ? config.hard_k()
                                        : std::llround(static_cast<double>(config.hard_fraction()) * negatives);
  return std::min(std::max<int64_t>(k, 1), negatives);
}

torch::Tensor RelativePenalty(const torch::Tensor& sims, const torch::Tensor& positive, const torch::Tensor& exclude,
                              double tau) {
  CheckIndices(sims, positive, exclude);
  CHECK_GT(tau, 0.0) << "tau must be positive";
  // A softmax over the negatives only: exp(-inf) = 0 at the positive and the excluded entries.
  const torch::Tensor is_negative = NegativeMask(positive, exclude, sims.size(1));
  return sims.div(tau).masked_fill(is_negative.logical_not(), kNegInf).softmax(1);  // (n, C)
}

torch::Tensor PenaltyEntropy(const torch::Tensor& sims, const torch::Tensor& positive, const torch::Tensor& exclude,
                             double tau) {
  const torch::Tensor r = RelativePenalty(sims, positive, exclude, tau);
  return -torch::xlogy(r, r).sum(1);  // xlogy(0, 0) = 0: 0 log 0 = 0 (nats)
}

}  // namespace tempered
