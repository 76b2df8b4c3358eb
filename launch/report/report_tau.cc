// The report's "τ beyond a constant" section: a learnable, scheduled or adaptive tau (loss.tau_mode, a sweep axis)
// against the best constant tau of the same loss, on the same harness, data and seeds.
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "common/config.h"
#include "launch/report/report.h"

namespace tempered {
namespace {

constexpr char kModeField[] = "loss.tau_mode";

std::string F(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

// A cell's tau mode ("CONSTANT" where the sweep does not vary it) and the rest of its group.
std::string ModeOf(const Cell& c) {
  for (const auto& [field, value] : c.group) {
    if (field == kModeField) return value;
  }
  return "CONSTANT";
}
std::vector<std::pair<std::string, std::string>> RestOf(const Cell& c) {
  std::vector<std::pair<std::string, std::string>> rest;
  for (const auto& entry : c.group) {
    if (entry.first.rfind("loss.tau_", 0) != 0) rest.push_back(entry);  // the mode and its parameters
  }
  return rest;
}

// The accuracy both cells have: linear top-1 where both have it, kNN top-1 otherwise.
Measure AccuracyOf(const Cell& a, const Cell& b) {
  return a[Measure::kLinear].n > 0 && b[Measure::kLinear].n > 0 ? Measure::kLinear : Measure::kKnn;
}

// The best constant-tau cell of `variant`'s loss and other axis values, by linear top-1 (kNN without it).
const Cell* BestConstant(const std::vector<Cell>& cells, const Cell& variant) {
  const Cell* best = nullptr;
  for (const Cell& c : cells) {
    if (c.loss != variant.loss || ModeOf(c) != "CONSTANT" || RestOf(c) != RestOf(variant)) continue;
    const Measure m = AccuracyOf(c, c);
    if (best == nullptr || c.mean(m) > best->mean(m)) best = &c;
  }
  return best;
}

// "+1.20 ± 0.50: better" with the within-noise rule of the claims (kWithinNoiseErrors standard errors).
std::string Comparison(const Cell& variant, const Cell& constant, Measure m) {
  const double difference = variant.mean(m) - constant.mean(m);
  const double error = std::hypot(AccuracyError(variant, m), AccuracyError(constant, m));
  std::string verdict = difference > 0 ? "better" : "worse";
  if (error > 0 && std::fabs(difference) < kWithinNoiseErrors * error) verdict = "within noise";
  if (!(error > 0)) verdict += " (error unknown)";
  return F("%+.2f", difference) + (error > 0 ? " ± " + F("%.2f", error) : "") + ": " + verdict;
}

std::string StatCell(const Stat& s, const char* format) {
  if (s.n == 0 || std::isnan(s.mean)) return "—";
  return F(format, s.mean) + (s.n >= 2 ? " ± " + F(format, s.std) : "") + " (n=" + std::to_string(s.n) + ")";
}

}  // namespace

std::string TauBeyondConstant(const std::vector<Cell>& cells) {
  std::ostringstream s;
  for (const Cell& c : cells) {
    if (!LossUsesTau(c.loss) || ModeOf(c) == "CONSTANT") continue;
    const Cell* constant = BestConstant(cells, c);
    const Measure m = constant ? AccuracyOf(c, *constant) : AccuracyOf(c, c);
    s << "| " << CellLabel(c) << " | " << StatCell(c[m], "%.2f") << " | "
      << (constant ? CellLabel(*constant) + ": " + StatCell((*constant)[m], "%.2f") : "none in the sweep") << " | "
      << (constant ? Comparison(c, *constant, m) : "—") << " | " << StatCell(c[Measure::kUniformity], "%.3f")
      << " | " << StatCell(c[Measure::kTolerance], "%.3f") << " | " << StatCell(c.final_tau, "%.4f") << " |\n";
  }
  if (s.str().empty()) return "";
  return "## τ beyond a constant\n\nEach learnable, scheduled or adaptive τ (loss.tau_mode) against the best constant "
         "τ of the same loss and other axis values: accuracy (linear top-1, kNN where a run has no linear "
         "evaluation) as mean ± std over seeds, the difference ± its standard error (test set and seeds; *within "
         "noise* under " + F("%.0f", kWithinNoiseErrors) + " standard errors), the variant's uniformity and "
         "tolerance (on which side of the uniformity-tolerance dilemma it lands: compare with the constant τ "
         "rows of Table 1) and the τ it ended at. Plot: τ against epoch (plots/tau_vs_epoch.png).\n\n"
         "| variant | accuracy | best constant τ | difference | uniformity | tolerance | τ at the end |\n"
         "|---|---:|---|---|---:|---:|---:|\n" + s.str() + "\n";
}

}  // namespace tempered
