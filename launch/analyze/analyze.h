// The analyses behind tempered-analyze (docs/paper.md §2-§4) on embeddings a user hands in: the loss and its gradient
// on pairs of views or on anchors against a memory bank, the relative-penalty curves of Fig 3, and the
// representation metrics. Inputs are checked here (UserError with one sentence); the numbers come from
// trainer/loss/loss.h, trainer/loss/streaming_loss.h and trainer/eval/metrics.h, the same code the trainer runs.
#pragma once

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "trainer/loss/loss.h"

namespace tempered {

// Loss names as the sweep and the flags spell them: infonce, simple, hard, hard_simple, nearest.
LossConfig::Name ParseLossName(const std::string& name);

// The result of the `loss` analysis, both forms.
struct LossAnalysis {
  double loss = 0;             // mean over the anchors
  int64_t hard_k = 0;          // K used (HARD and HARD_SIMPLE), 0 otherwise
  double penalty_entropy = 0;  // mean H(r_i) at this tau, nats
  torch::Tensor grad;          // (anchors, d) d loss / d anchors, with respect to the raw (unnormalised) rows
};
// Both forms compute the loss as the trainer does, StreamingOrNaiveLoss (trainer/loss/streaming_loss.h): streamed over
// tiles of options.tile_scores similarities, or the naive (n, C) matrix when tile_scores = 0. Rows are
// L2-normalised here and the gradient flows through the normalisation, so it is the gradient with respect to what
// the user handed in. options.hard_k = 0 takes the paper's fraction (HardK, 8% of the negatives).

// SimCLR's symmetric form: rows i of a and b (N, d) are the two views of sample i, stacked as z = [a; b]; every
// view is an anchor whose positive is its other view and whose negatives are the other 2N - 2 views. grad (2N, d).
LossAnalysis SymmetricViewsLoss(const torch::Tensor& a, const torch::Tensor& b, const LossOptions& options);

// The memory-bank form (the paper's setting, docs/paper.md §5): anchors (n, d) against every row of bank (N, d), the
// positive of anchor i being bank row positives[i] (int64, in [0, N)) and the other N - 1 rows its negatives. The
// bank is a constant, as in the trainer: grad (n, d) is with respect to the anchors only.
LossAnalysis AnchorsVsBankLoss(const torch::Tensor& anchors, const torch::Tensor& bank, const torch::Tensor& positives,
                               const LossOptions& options);

// Fig 3: one anchor whose negatives have similarities evenly spaced on [-1, 1] (`points` of them).
struct PenaltyCurves {
  std::vector<double> taus;
  torch::Tensor s;        // (points) float64
  torch::Tensor r;        // (taus, points) relative penalty r(s) at each tau; each row sums to 1
  torch::Tensor entropy;  // (taus) H(r) in nats; at most log(points)
};
PenaltyCurves UniformPenaltyCurves(const std::vector<double>& taus, int64_t points);
// The table printed by `tempered-analyze penalty`: one row per tau.
std::string PenaltyTable(const PenaltyCurves& curves);
// Writes out_dir/penalty.tsv (s, then r at each tau), out_dir/penalty.gp and out_dir/penalty.png (gnuplot,
// pngcairo). UserError when gnuplot is missing or fails.
void WritePenaltyPlot(const PenaltyCurves& curves, const std::string& out_dir);

// Uniformity and tolerance of `embeddings` (n, d) with `labels` (n); with views (a, b non-empty, rows i positive
// pairs) also alignment and local separation. Every input is L2-normalised first. The JSON names follow the
// Metrics message of proto/tempered.proto.
nlohmann::json EmbeddingMetrics(const torch::Tensor& embeddings, const torch::Tensor& labels,
                                 const torch::Tensor& a = {}, const torch::Tensor& b = {});

}  // namespace tempered
