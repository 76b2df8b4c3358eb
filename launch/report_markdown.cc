// DIR/report.md: what was run, the sweep's Table 1, the best tau per loss, the claims checklist and the plots.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "launch/report.h"
#include "launch/sweep_spec.h"
#include "launch/sweep_state.h"
#include "trainer/config.h"

namespace tempered {

namespace {

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), ::tolower);
  return s;
}

std::string Cellf(double v, const char* format) {
  if (std::isnan(v)) return "—";
  char buf[32];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

std::string ColumnLabel(const Cell& c) {
  if (!LossUsesTau(c.loss)) return LossName(c.loss);
  return (c.loss == LossConfig::INFONCE ? "" : LossName(c.loss) + " ") + "τ=" + FormatFloat(c.tau);
}

std::string Setup(const std::vector<RunRecord>& records, const SweepSpec& spec) {
  int finished = 0, failed = 0;
  const RunRecord* example = nullptr;
  for (const RunRecord& r : records) {
    finished += r.has_result;
    failed += r.state == "failed";
    if (r.has_result && example == nullptr) example = &r;
  }
  std::ostringstream s;
  s << records.size() << " runs: " << finished << " finished, " << failed << " failed, "
    << records.size() - finished - failed << " not finished.\n\n";
  if (example == nullptr) return s.str();
  const RunConfig& c = example->config;
  s << "Each run: " << c.data().dataset() << " (train_subset " << c.data().train_subset() << ", test_subset "
    << c.data().test_subset() << "), " << Lower(ModelConfig::Arch_Name(c.model().arch())) << ", "
    << Lower(LossConfig::Negatives_Name(c.loss().negatives())) << " negatives, " << c.epochs() << " epochs"
    << (c.max_steps() > 0 ? " (at most " + std::to_string(c.max_steps()) + " steps)" : "") << ", global batch "
    << c.batch_size() << ", lr " << FormatFloat(c.optim().lr()) << "; " << spec.ranks_per_run() << " rank(s) x "
    << spec.threads_per_rank() << " thread(s). Uniformity, alignment and tolerance on "
    << example->result.final().metric_samples() << " " << example->result.final().metric_split()
    << " samples; accuracies in %.\n\n"
    << "These are short CPU runs: compare the *directions* with the paper (PAPER.md §6-7), not its numbers.\n\n";
  return s.str();
}

std::string Table1(const std::vector<Cell>& cells) {
  std::ostringstream s;
  s << "## Table 1 (this sweep; means over each column's runs)\n\n| metric |";
  for (const Cell& c : cells) s << " " << ColumnLabel(c) << " |";
  s << "\n|---|";
  for (size_t i = 0; i < cells.size(); ++i) s << "---:|";
  s << "\n";
  bool any_linear = false, pooled = false;
  for (const Cell& c : cells) {
    any_linear = any_linear || !std::isnan(c.linear);
    pooled = pooled || c.runs > 1;
  }
  auto row = [&](const char* name, double Cell::*field, const char* format) {
    s << "| " << name << " |";
    for (const Cell& c : cells) s << " " << Cellf(c.*field, format) << " |";
    s << "\n";
  };
  row("kNN top-1", &Cell::knn, "%.2f");
  if (any_linear) row("linear top-1", &Cell::linear, "%.2f");
  row("uniformity", &Cell::uniformity, "%.3f");
  row("alignment", &Cell::alignment, "%.3f");
  row("tolerance", &Cell::tolerance, "%.3f");
  if (pooled) {
    s << "| runs |";
    for (const Cell& c : cells) s << " " << c.runs << " |";
    s << "\n";
  }
  return s.str() + "\n";
}

std::string BestTau(const std::vector<Cell>& cells) {
  std::ostringstream s;
  s << "## Best τ per loss\n\n| loss | best τ (linear) | linear top-1 | best τ (kNN) | kNN top-1 | uniformity at "
       "best | tolerance at best |\n|---|---:|---:|---:|---:|---:|---:|\n";
  for (LossConfig::Name loss : {LossConfig::INFONCE, LossConfig::HARD}) {
    const Cell *by_linear = nullptr, *by_knn = nullptr;
    for (const Cell& c : cells) {
      if (c.loss != loss) continue;
      if (!std::isnan(c.linear) && (by_linear == nullptr || c.linear > by_linear->linear)) by_linear = &c;
      if (by_knn == nullptr || c.knn > by_knn->knn) by_knn = &c;
    }
    if (by_knn == nullptr) continue;
    const Cell& best = by_linear ? *by_linear : *by_knn;
    s << "| " << LossName(loss) << " | " << (by_linear ? FormatFloat(by_linear->tau) : "—") << " | "
      << (by_linear ? Cellf(by_linear->linear, "%.2f") : "—") << " | " << FormatFloat(by_knn->tau) << " | "
      << Cellf(by_knn->knn, "%.2f") << " | " << Cellf(best.uniformity, "%.3f") << " | "
      << Cellf(best.tolerance, "%.3f") << " |\n";
  }
  return s.str() + "\n";
}

std::string Claims(const std::vector<Cell>& cells) {
  std::ostringstream s;
  s << "## The paper's claims (PAPER.md §7, items 3-7)\n\n";
  for (const ClaimCheck& c : CheckClaims(cells)) {
    s << "- **" << c.verdict << "** — " << c.claim << ". " << c.evidence << ".\n";
  }
  return s.str() + "\n";
}

std::string Plots(const std::vector<std::string>& plots) {
  if (plots.empty()) return "";
  static const std::vector<std::pair<std::string, std::string>> kCaptions = {
      {"accuracy_vs_tau", "Accuracy against τ, one line per loss; losses without τ as dashed levels."},
      {"knn_vs_tau", "kNN accuracy against τ."},
      {"uniformity_vs_tau", "Uniformity (−L_uniformity, larger = more uniform) against τ."},
      {"tolerance_vs_tau", "Tolerance (mean similarity of same-class pairs) against τ."},
      {"uniformity_vs_tolerance", "The uniformity-tolerance trade-off, each point labelled with its τ."},
      {"relative_penalty", "Relative penalty density p(s) of negatives spread uniformly on s ∈ [−1, 1] "
                           "(closed form): small τ puts the whole penalty on the hardest negatives."}};
  std::ostringstream s;
  s << "## Plots\n\n";
  for (const auto& path : plots) {
    for (const auto& [name, caption] : kCaptions) {
      if (path.find("/" + name + ".png") != std::string::npos) s << "![" << name << "](" << path << ")\n\n" << caption << "\n\n";
    }
  }
  return s.str();
}

std::string Unfinished(const std::vector<RunRecord>& records) {
  std::ostringstream s;
  for (const RunRecord& r : records) {
    if (!r.has_result) s << "| " << r.name << " | " << r.state << " | " << r.attempts << " | " << r.last_error << " |\n";
  }
  if (s.str().empty()) return "";
  return "## Runs without a result\n\n| run | state | attempts | last error |\n|---|---|---:|---|\n" + s.str() + "\n";
}

}  // namespace

std::string ReportMarkdown(const std::vector<RunRecord>& records, const SweepSpec& spec,
                           const std::vector<std::string>& plots) {
  const std::vector<Cell> cells = MeanByLossAndTau(records);
  std::string md = "# Tempered sweep report\n\n" + Setup(records, spec);
  if (!cells.empty()) md += Table1(cells) + BestTau(cells) + Claims(cells) + Plots(plots);
  md += Unfinished(records);
  md += "Per-run numbers: results.csv, results.json; run directories under runs/.\n";
  return md;
}

std::string WriteSweepReport(const std::string& sweep_dir, const SweepSpec& spec,
                             const std::vector<SweepState::Run>& runs) {
  const std::vector<RunRecord> records = CollectRecords(sweep_dir, runs);
  WriteFileAtomically(sweep_dir + "/results.csv", ResultsCsv(records, spec));
  WriteFileAtomically(sweep_dir + "/results.json", ResultsJson(records));
  const std::vector<std::string> plots = WritePlots(sweep_dir, MeanByLossAndTau(records));
  const std::string path = sweep_dir + "/report.md";
  WriteFileAtomically(path, ReportMarkdown(records, spec, plots));
  return path;
}

}  // namespace tempered
