#include "launch/analyze/analyze.h"

#include <glog/logging.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "common/errors.h"
#include "launch/sweep/sweep_spec.h"
#include "trainer/eval/metrics.h"
#include "trainer/loss/streaming_loss.h"

namespace tempered {
namespace {

torch::Tensor Normalize(const torch::Tensor& x) {  // (n, d) rows onto the unit sphere
  return torch::nn::functional::normalize(x, torch::nn::functional::NormalizeFuncOptions().dim(1));
}

// Mean H(r_i) over the anchors z (n, d) against the candidates (C, d), a chunk of anchors at a time so that about
// tile_scores similarities exist at once, as in the streaming loss (all n x C at once when tile_scores = 0).
double MeanPenaltyEntropy(const torch::Tensor& z, const torch::Tensor& candidates, const torch::Tensor& positive,
                          const torch::Tensor& exclude, const LossOptions& options) {
  torch::NoGradGuard no_grad;
  const int64_t n = z.size(0), columns = candidates.size(0);
  const int64_t rows = options.tile_scores > 0 ? std::clamp<int64_t>(options.tile_scores / columns, 1, n) : n;
  double sum = 0;
  for (int64_t first = 0; first < n; first += rows) {
    const int64_t last = std::min(n, first + rows);
    const torch::Tensor sims = z.slice(0, first, last).matmul(candidates.t());  // (rows, C)
    sum += PenaltyEntropy(sims, positive.slice(0, first, last), exclude.slice(0, first, last), options.tau)
               .sum()
               .item<double>();
  }
  return sum / static_cast<double>(n);
}

// The mean loss of the anchors z = Normalize(x) (n, d) against the candidates (C, d), each anchor with `negatives`
// negatives, and its gradient with respect to the raw rows x (which must require grad).
LossAnalysis AnalyzeLoss(const torch::Tensor& x, const torch::Tensor& z, const torch::Tensor& candidates,
                         const torch::Tensor& positive, const torch::Tensor& exclude, int64_t negatives,
                         const LossOptions& options) {
  LossOptions resolved = options;
  if (LossUsesHardK(options.name)) {
    LossConfig config;
    config.set_hard_k(static_cast<int32_t>(options.hard_k));
    config.set_hard_fraction(0.08f);  // docs/paper.md §2: 4095 of 50,000 negatives
    resolved.hard_k = HardK(config, negatives);
  }
  const torch::Tensor loss = StreamingOrNaiveLoss(z, candidates, positive, exclude, resolved).mean();
  loss.backward();

  LossAnalysis result;
  result.loss = loss.item<double>();
  result.hard_k = LossUsesHardK(options.name) ? resolved.hard_k : 0;
  result.penalty_entropy = MeanPenaltyEntropy(z.detach(), candidates.detach(), positive, exclude, options);
  result.grad = x.grad();
  return result;
}

}  // namespace

LossConfig::Name ParseLossName(const std::string& name) {
  std::string upper;
  for (char c : name) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  LossConfig::Name value = LossConfig::NAME_UNSPECIFIED;
  if (!LossConfig::Name_Parse(upper, &value) || value == LossConfig::NAME_UNSPECIFIED) {
    throw UserError("--loss: unknown loss '" + name + "'; expected infonce, simple, hard, hard_simple or nearest.");
  }
  return value;
}

LossAnalysis SymmetricViewsLoss(const torch::Tensor& a, const torch::Tensor& b, const LossOptions& options) {
  CHECK(a.dim() == 2 && a.sizes() == b.sizes() && a.size(0) >= 2) << "views must be two (N >= 2, d) matrices";
  const int64_t n = a.size(0), views = 2 * n;
  const torch::Tensor x = torch::cat({a, b}).to(torch::kDouble).requires_grad_(true);  // (2N, d) raw
  const torch::Tensor z = Normalize(x);
  const torch::Tensor view = torch::arange(views, torch::kLong);
  const torch::Tensor positive = (view + n) % views;  // the other view of the same sample
  const torch::Tensor exclude = view;                 // an anchor is not its own negative
  return AnalyzeLoss(x, z, z, positive, exclude, views - 2, options);
}

LossAnalysis AnchorsVsBankLoss(const torch::Tensor& anchors, const torch::Tensor& bank, const torch::Tensor& positives,
                               const LossOptions& options) {
  CHECK(anchors.dim() == 2 && bank.dim() == 2 && anchors.size(1) == bank.size(1) && bank.size(0) >= 2)
      << "anchors (n, d) and bank (N >= 2, d) must share d";
  CHECK(positives.scalar_type() == torch::kLong && positives.dim() == 1 && positives.size(0) == anchors.size(0))
      << "positives must be (n) int64";
  const torch::Tensor x = anchors.to(torch::kDouble).requires_grad_(true);  // (n, d) raw
  const torch::Tensor bank_rows = Normalize(bank.to(torch::kDouble));       // (N, d), no gradient
  const torch::Tensor exclude = torch::full({anchors.size(0)}, -1, torch::kLong);  // every other row is a negative
  return AnalyzeLoss(x, Normalize(x), bank_rows, positives, exclude, bank.size(0) - 1, options);
}

PenaltyCurves UniformPenaltyCurves(const std::vector<double>& taus, int64_t points) {
  CHECK_GE(points, 2);
  PenaltyCurves curves;
  curves.taus = taus;
  curves.s = torch::linspace(-1, 1, points, torch::kDouble);
  // One anchor: column 0 is its positive (its value does not enter r), columns 1.. the negatives.
  const torch::Tensor sims = torch::cat({torch::ones({1}, torch::kDouble), curves.s}).unsqueeze(0);  // (1, 1 + points)
  const torch::Tensor positive = torch::zeros({1}, torch::kLong), exclude = torch::full({1}, -1, torch::kLong);
  std::vector<torch::Tensor> r, entropy;
  for (double tau : taus) {
    r.push_back(RelativePenalty(sims, positive, exclude, tau).slice(1, 1));  // (1, points)
    entropy.push_back(PenaltyEntropy(sims, positive, exclude, tau));         // (1)
  }
  curves.r = torch::cat(r);
  curves.entropy = torch::cat(entropy);
  return curves;
}

std::string PenaltyTable(const PenaltyCurves& curves) {
  const int64_t points = curves.s.size(0);
  std::string table;
  char line[256];
  std::snprintf(line, sizeof line,
                "# relative penalty r(s) = exp(s/tau) / sum_k exp(s_k/tau) over %lld negatives, s evenly spaced on "
                "[-1, 1] (docs/paper.md §3, Fig 3); H in nats, at most log(%lld) = %.4f\n",
                static_cast<long long>(points), static_cast<long long>(points), std::log(static_cast<double>(points)));
  table += line;
  std::snprintf(line, sizeof line, "%-8s %10s %10s %12s %12s %12s %12s\n", "tau", "H(r)", "exp(H)", "r(s=1)",
                "r(s=0.5)", "r(s=0)", "r(s=-1)");
  table += line;
  for (size_t t = 0; t < curves.taus.size(); ++t) {
    // r at a similarity: the nearest grid point.
    auto r_at = [&](double s) {
      const int64_t j = std::llround((s + 1) / 2 * static_cast<double>(points - 1));
      return curves.r[t][j].item<double>();
    };
    const double h = curves.entropy[t].item<double>();
    std::snprintf(line, sizeof line, "%-8g %10.4f %10.2f %12.4e %12.4e %12.4e %12.4e\n", curves.taus[t], h,
                  std::exp(h), r_at(1), r_at(0.5), r_at(0), r_at(-1));
    table += line;
  }
  return table;
}

void WritePenaltyPlot(const PenaltyCurves& curves, const std::string& out_dir) {
  const std::string tsv = out_dir + "/penalty.tsv", script = out_dir + "/penalty.gp", png = out_dir + "/penalty.png";
  {
    std::ofstream out(tsv);
    out << std::setprecision(12) << "# s";
    for (double tau : curves.taus) out << "\ttau=" << tau;
    out << "\n";
    for (int64_t j = 0; j < curves.s.size(0); ++j) {
      out << curves.s[j].item<double>();
      for (size_t t = 0; t < curves.taus.size(); ++t) out << "\t" << curves.r[t][j].item<double>();
      out << "\n";
    }
    if (!out) throw UserError("Cannot write " + tsv + "; does --out_dir exist and is it writable?");
  }
  {
    std::ofstream out(script);
    out << "set terminal pngcairo size 800,500\n"
        << "set output '" << png << "'\n"
        << "set title 'Relative penalty over " << curves.s.size(0)
        << " negatives with s uniform on [-1, 1] (Fig 3)'\n"
        << "set xlabel 'similarity s_{ij}'\nset ylabel 'r_i(s_{ij})'\nset key top left\nset grid\n"
        << "plot ";
    for (size_t t = 0; t < curves.taus.size(); ++t) {
      out << (t ? ", " : "") << "'" << tsv << "' using 1:" << t + 2 << " with lines lw 2 title 'tau = "
          << curves.taus[t] << "'";
    }
    out << "\n";
    if (!out) throw UserError("Cannot write " + script + ".");
  }
  // gnuplot's own messages (font warnings, errors) are captured and shown only when it fails.
  const std::string command = "gnuplot '" + script + "' 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  char buffer[512];
  while (pipe != nullptr && std::fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
  const int status = pipe == nullptr ? -1 : pclose(pipe);
  if (status != 0) {
    std::replace(output.begin(), output.end(), '\n', ' ');
    throw UserError("gnuplot failed on " + script + " (" + (output.empty() ? "no output" : output) +
                    "); install gnuplot-nox (docker/install-deps.sh). The table is in " + tsv + ".");
  }
}

nlohmann::json EmbeddingMetrics(const torch::Tensor& embeddings, const torch::Tensor& labels,
                                const torch::Tensor& a, const torch::Tensor& b) {
  CHECK(embeddings.dim() == 2 && embeddings.size(0) >= 2 && labels.dim() == 1 &&
        labels.size(0) == embeddings.size(0));
  const torch::Tensor e = Normalize(embeddings.to(torch::kDouble));
  nlohmann::json metrics;
  metrics["metric_samples"] = embeddings.size(0);
  metrics["uniformity"] = Uniformity(e);
  // Tolerance is a mean over distinct same-label pairs: undefined (null) when every label is unique.
  const bool has_pairs = std::get<0>(torch::_unique(labels)).size(0) < labels.size(0);
  metrics["tolerance"] = has_pairs ? nlohmann::json(Tolerance(e, labels)) : nlohmann::json();
  if (a.defined() && b.defined()) {
    CHECK(a.dim() == 2 && a.sizes() == b.sizes());
    const torch::Tensor na = Normalize(a.to(torch::kDouble)), nb = Normalize(b.to(torch::kDouble));
    metrics["view_pairs"] = a.size(0);
    metrics["alignment"] = Alignment(na, nb);
    const LocalSeparationStats separation = LocalSeparation(na, nb, 10);
    metrics["positive_similarity"] = separation.positive_similarity;
    metrics["top_negative_similarity"] = separation.top_negative_similarity;
  }
  return metrics;
}

}  // namespace tempered
