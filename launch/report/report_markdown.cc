// DIR/report.md: what was run (what all runs share and what varies), the sweep's Table 1 with the paper's values
// beside it, how far each cell had converged, the best tau per loss, the claims checklist and the plots.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <set>
#include <sstream>

#include "common/config.h"
#include "launch/report/report.h"
#include "launch/sweep/pruning.h"
#include "launch/sweep/sweep_spec.h"
#include "launch/sweep/sweep_state.h"
#include "launch/sweep/sweep_status.h"

namespace tempered {

namespace {

// docs/paper.md §6 Table 1, in its column order: infonce at 0.07, 0.3, 0.7, 1.0, simple, hard at 0.07, 0.3, 0.7, 1.0,
// hard_simple. NaN where the paper gives no number (SVHN's uniformity and tolerance).
struct PaperRow {
  const char* dataset;
  double linear[10], uniformity[10], tolerance[10];
};
constexpr double kN = kNoValue;
constexpr PaperRow kTable1[] = {
    {"cifar10",
     {79.75, 83.27, 82.69, 82.21, 74.83, 79.20, 83.63, 84.19, 84.19, 84.84},
     {3.86, 3.60, 3.17, 2.96, 1.68, 3.88, 3.89, 3.87, 3.86, 3.85},
     {0.04, 0.178, 0.333, 0.372, 0.61, 0.034, 0.027, 0.030, 0.030, 0.030}},
    {"cifar100",
     {51.82, 56.44, 50.99, 48.33, 39.31, 50.77, 56.55, 57.54, 56.77, 55.71},
     {3.86, 3.60, 3.18, 2.96, 2.12, 3.87, 3.88, 3.87, 3.86, 3.86},
     {0.10, 0.269, 0.331, 0.343, 0.39, 0.088, 0.124, 0.158, 0.172, 0.174}},
    {"svhn",
     {92.55, 95.47, 94.17, 92.07, 70.83, 91.82, 94.79, 95.02, 95.26, 94.99},
     {kN, kN, kN, kN, kN, kN, kN, kN, kN, kN},
     {kN, kN, kN, kN, kN, kN, kN, kN, kN, kN}},
};

// The Table 1 column of a loss at a tau, or -1.
int PaperColumn(LossConfig::Name loss, double tau) {
  if (loss == LossConfig::SIMPLE) return 4;
  if (loss == LossConfig::HARD_SIMPLE) return 9;
  if (loss != LossConfig::INFONCE && loss != LossConfig::HARD) return -1;
  const char* const taus[] = {"0.07", "0.3", "0.7", "1"};
  for (int i = 0; i < 4; ++i) {
    if (FormatFloat(tau) == taus[i]) return (loss == LossConfig::HARD ? 5 : 0) + i;
  }
  return -1;
}

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

// "2.41 ± 0.05 (n=2)"; "2.41 (n=1)"; "—" without a value.
std::string StatText(const Stat& s, const char* format) {
  if (s.n == 0) return "—";
  return Cellf(s.mean, format) + (s.n >= 2 ? " ± " + Cellf(s.std, format) : "") + " (n=" + std::to_string(s.n) + ")";
}

// The settings that describe a run, in the order the setup text gives them.
const char* const kSetupFields[] = {"data.dataset", "data.train_subset", "data.test_subset", "model.arch",
                                    "loss.negatives", "epochs", "max_steps", "batch_size", "optim.lr",
                                    "optim.warmup_epochs", "eval.metric_samples", "eval.curve_train_samples"};

// The distinct values of a config field over the finished runs whose loss uses it, in ValueLess order.
std::vector<std::string> ValuesOf(const std::vector<RunRecord>& records, const std::string& path) {
  std::set<std::string> values;
  for (const RunRecord& r : records) {
    if (r.has_result && LossUsesField(r.config.loss().name(), path)) {
      values.insert(Lower(ConfigFieldText(r.config, path)));
    }
  }
  values.erase("");  // a field this config version lacks
  std::vector<std::string> sorted(values.begin(), values.end());
  std::sort(sorted.begin(), sorted.end(), ValueLess);
  return sorted;
}

std::string CommonAndVarying(const std::vector<RunRecord>& records, const SweepSpec& spec) {
  std::vector<std::string> paths = {"loss.name", "loss.tau"};
  paths.insert(paths.end(), std::begin(kSetupFields), std::end(kSetupFields));
  paths.push_back("loss.hard_k");
  for (const auto& axis : spec.axis()) {
    if (std::find(paths.begin(), paths.end(), axis.field()) == paths.end()) paths.push_back(axis.field());
  }
  paths.push_back("seed");
  std::string common, varies;
  for (const std::string& path : paths) {
    const std::vector<std::string> values = ValuesOf(records, path);
    if (values.size() == 1) common += (common.empty() ? "" : ", ") + path + " " + *values.begin();
    if (values.size() < 2) continue;
    varies += (varies.empty() ? "" : "; ") + path + ":";
    for (const std::string& v : values) varies += " " + v;
  }
  return "Common to every finished run: " + common + "; " + std::to_string(spec.ranks_per_run()) + " rank(s) x " +
         std::to_string(spec.threads_per_rank()) + " thread(s).\n\nVaries: " + varies +
         ". A cell is one value of each of these but the seed; it averages over its seeds.\n\n";
}

// Which samples the metrics used (docs/paper.md §4: say which split and how many).
// "uniformity, ... on 1000 test samples; kNN of 2000 test images against 20000 training images" (a result from
// before the kNN sample sizes were recorded has 0 there: left out).
std::string SamplesOf(const Metrics& m) {
  std::string s = "uniformity, alignment, tolerance and local separation on " + std::to_string(m.metric_samples()) +
                  " " + (m.metric_split().empty() ? "" : m.metric_split() + " ") + "samples";
  if (m.knn_train_samples() > 0) {
    s += "; kNN of " + std::to_string(m.knn_test_samples()) + " test images against " +
         std::to_string(m.knn_train_samples()) + " training images";
  }
  return s;
}

std::string Samples(const RunRecord& example) {
  std::string s = "Final metrics: " + SamplesOf(example.result.final()) + "; accuracies in %.";
  for (const EpochResult& e : example.result.epochs()) {
    if (e.has_metrics()) return s + " Per-epoch curve (convergence): " + SamplesOf(e.metrics()) + ".\n\n";
  }
  return s + "\n\n";
}

// The paper's Table 1 column to compare with: SweepSpec.paper_table, else the runs' data set.
std::string PaperTableOf(const std::vector<RunRecord>& records, const SweepSpec& spec) {
  if (!spec.paper_table().empty()) return spec.paper_table();
  for (const RunRecord& r : records) {
    if (r.has_result) return r.config.data().dataset();
  }
  return "";
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
  s << CommonAndVarying(records, spec) << Samples(*example);
  if (!PaperHasDataset(PaperTableOf(records, spec))) {
    s << "These are short CPU runs: compare the *directions* with the paper (docs/paper.md §6-7), not its numbers.\n\n";
  }
  return s.str();
}

// "+0.210 (moving)", "+0.004", "unknown (1 epoch)": the member run that moved most on `m`.
std::string TrendText(const Cell& c, Measure m) {
  const Trend* fastest = nullptr;
  for (const CellRun& run : c.members) {
    const Trend& t = run.trend[static_cast<int>(m)];
    if (t.evaluated_epochs < 2) return "unknown (" + std::to_string(t.evaluated_epochs) + " epochs)";
    if (fastest == nullptr || std::fabs(t.slope) > std::fabs(fastest->slope)) fastest = &t;
  }
  if (fastest == nullptr) return "—";
  return Cellf(fastest->slope, "%+.3f") + (fastest->moving(m) ? " (moving)" : "");
}

std::string Row(const std::vector<Cell>& cells, const std::string& name,
                const std::function<std::string(const Cell&)>& text) {
  std::string s = "| " + name + " |";
  for (const Cell& c : cells) s += " " + text(c) + " |";
  return s + "\n";
}

// How the trend rows and the "not converged" verdict are decided, with the thresholds the code uses.
std::string ConvergenceNote() {
  char buf[1024];
  std::snprintf(buf, sizeof(buf),
                "Trend: the least-squares slope per epoch of a run's per-epoch curve over its last "
                "max(2, ⌈E/3⌉) of E evaluated epochs, shown for the cell's run that moved most. Linear top-1, "
                "measured only at full evaluations, follows the kNN curve where it has fewer than 2 points. "
                "*Moving* above %g uniformity, %g tolerance, %g alignment or %g accuracy points per epoch; a claim "
                "that would disagree while a run behind it is moving is reported as **not converged**. Claims "
                "that one accuracy is above another (7c, 9a) are **within noise** when the difference is under "
                "%g standard errors (the test set's binomial error, plus the seeds' spread over >= 2 seeds).\n\n",
                StillMovingPerEpoch(Measure::kUniformity), StillMovingPerEpoch(Measure::kTolerance),
                StillMovingPerEpoch(Measure::kAlignment), StillMovingPerEpoch(Measure::kKnn), kWithinNoiseErrors);
  return buf;
}

std::string Table1(const std::vector<Cell>& cells, const std::string& dataset) {
  std::ostringstream s;
  s << "## Table 1 (this sweep: mean ± std over each column's seeds, n = runs)\n\n| metric |";
  for (const Cell& c : cells) s << " " << CellLabel(c) << " |";
  s << "\n|---|";
  for (size_t i = 0; i < cells.size(); ++i) s << "---:|";
  s << "\n";
  const bool paper = PaperHasDataset(dataset);
  bool any_linear = false;
  for (const Cell& c : cells) any_linear = any_linear || c[Measure::kLinear].n > 0;
  auto measured = [&](Measure m, const char* format) {
    s << Row(cells, MeasureName(m), [&](const Cell& c) { return StatText(c[m], format); });
  };
  auto of_paper = [&](const char* name, double PaperValues::*field, const char* format) {
    if (!paper) return;
    s << Row(cells, std::string(name) + " (paper, " + dataset + ")",
             [&](const Cell& c) { return Cellf(PaperTable1(dataset, c.loss, c.tau).*field, format); });
  };
  measured(Measure::kKnn, "%.2f");
  if (any_linear) measured(Measure::kLinear, "%.2f");
  of_paper("linear top-1", &PaperValues::linear, "%.2f");
  measured(Measure::kUniformity, "%.3f");
  of_paper("uniformity", &PaperValues::uniformity, "%.2f");
  measured(Measure::kAlignment, "%.3f");
  measured(Measure::kTolerance, "%.3f");
  of_paper("tolerance", &PaperValues::tolerance, "%.3f");
  measured(Measure::kGap, "%.3f");
  for (Measure m : {Measure::kUniformity, Measure::kTolerance, Measure::kKnn}) {
    s << Row(cells, std::string(MeasureName(m)) + " trend /epoch", [&](const Cell& c) { return TrendText(c, m); });
  }
  s << Row(cells, "runs", [](const Cell& c) { return std::to_string(c.runs); });
  return s.str() + "\n" + ConvergenceNote();
}

std::string BestTau(const std::vector<Cell>& cells) {
  std::ostringstream s;
  s << "## Best τ per loss\n\n| loss | best τ (linear) | linear top-1 | best τ (kNN) | kNN top-1 | uniformity at "
       "best | tolerance at best |\n|---|---|---:|---|---:|---:|---:|\n";
  std::vector<std::pair<LossConfig::Name, std::vector<std::pair<std::string, std::string>>>> series;
  for (const Cell& c : cells) {
    if (c.loss != LossConfig::INFONCE && c.loss != LossConfig::HARD) continue;
    if (std::find(series.begin(), series.end(), std::make_pair(c.loss, c.group)) == series.end()) {
      series.emplace_back(c.loss, c.group);
    }
  }
  for (const auto& [loss, group] : series) {
    const Cell *by_linear = nullptr, *by_knn = nullptr;
    for (const Cell& c : cells) {
      if (c.loss != loss || c.group != group) continue;
      const double linear = c.mean(Measure::kLinear), knn = c.mean(Measure::kKnn);
      if (!std::isnan(linear) && (by_linear == nullptr || linear > by_linear->mean(Measure::kLinear))) by_linear = &c;
      if (by_knn == nullptr || knn > by_knn->mean(Measure::kKnn)) by_knn = &c;
    }
    const Cell& best = by_linear ? *by_linear : *by_knn;
    s << "| " << LossName(loss) << (group.empty() ? "" : " (" + GroupLabel(group) + ")") << " | "
      << (by_linear ? FormatFloat(by_linear->tau) : "—") << " | "
      << (by_linear ? StatText((*by_linear)[Measure::kLinear], "%.2f") : "—") << " | " << FormatFloat(by_knn->tau)
      << " | " << StatText((*by_knn)[Measure::kKnn], "%.2f") << " | "
      << StatText(best[Measure::kUniformity], "%.3f") << " | " << StatText(best[Measure::kTolerance], "%.3f")
      << " |\n";
  }
  return s.str() + "\n";
}

std::string Claims(const std::vector<Cell>& cells) {
  std::ostringstream s;
  s << "## The paper's claims (docs/paper.md §7, items 3-9)\n\n";
  for (const ClaimCheck& c : CheckClaims(cells)) {
    s << "- **" << c.verdict << "** — " << c.claim << ". " << c.evidence << ".\n";
  }
  return s.str() + "\n";
}

std::string Plots(const std::vector<std::string>& plots) {
  if (plots.empty()) return "";
  std::ostringstream s;
  s << "## Plots\n\n";
  for (const auto& path : plots) {
    for (const PlotInfo& plot : ReportPlots()) {
      if (path == std::string("plots/") + plot.name + ".png") {
        s << "![" << plot.name << "](" << path << ")\n\n" << plot.caption << "\n\n";
      }
    }
  }
  return s.str();
}

// Successive halving: what each run scored at its rungs and where it stopped, and the steps the pruning saved.
std::string Halving(const std::vector<RunRecord>& records, const SweepSpec& spec) {
  if (!PruningOn(spec)) return "";
  std::ostringstream rows;
  int64_t done = 0, full = 0;
  int pruned = 0, unknown = 0;
  for (const RunRecord& r : records) {
    done += r.steps_done;
    full += r.total_steps;
    unknown += r.total_steps == 0;
    pruned += r.state == "pruned";
    if (r.rung_scores.empty()) continue;
    std::string scores;
    for (double v : r.rung_scores) scores += (scores.empty() ? "" : ", ") + Cellf(v, "%.2f");
    rows << "| " << r.name << " | " << scores << " | "
         << (r.state == "pruned" ? "pruned at rung " + std::to_string(r.rung_scores.size()) : r.state) << " | "
         << r.steps_done << " / " << r.total_steps << " |\n";
  }
  std::ostringstream s;
  s << "## Successive halving\n\nRungs at " << RungsText(spec)
    << " of each run's steps; at each, within each loss (and value of every other axis), the τ are ranked by "
    << RungMetricName(spec) << " of the full evaluation there (seeds averaged) and the best "
    << FormatFloat(spec.pruning().keep() > 0 ? spec.pruning().keep() : 0.5)
    << " of them (rounded down, at least one) go on. " << pruned << " of " << records.size()
    << " runs were pruned; the tables above show the τ that ran to the end. Training steps: " << done << " of the "
    << full << " the runs would take at full length (" << Cellf(full > 0 ? 100.0 * done / full : 0, "%.1f") << "%)"
    << (unknown > 0 ? ", " + std::to_string(unknown) + " runs without a result.json not counted" : "")
    << ". A sweep rerun without `pruning` resumes the pruned runs from their checkpoints to full length.\n\n";
  if (!rows.str().empty()) {
    s << "| run | " << RungMetricName(spec) << " at each rung | state | global steps |\n|---|---|---|---:|\n"
      << rows.str() << "\n";
  }
  return s.str();
}

std::string Unfinished(const std::vector<RunRecord>& records) {
  std::ostringstream s;
  for (const RunRecord& r : records) {
    if (r.has_result || r.state == "pruned") continue;
    s << "| " << r.name << " | " << r.state << " | " << r.attempts << " | " << r.last_error << " |\n";
  }
  if (s.str().empty()) return "";
  return "## Runs without a result\n\n| run | state | attempts | last error |\n|---|---|---:|---|\n" + s.str() + "\n";
}

// Each run's hosts and devices (RunResult.environment), and what the runs were built from: a result is traced to
// the machines and code that made it.
std::string Placement(const std::vector<RunRecord>& records) {
  std::ostringstream rows;
  std::set<std::string> builds;
  for (const RunRecord& r : records) {
    const RunEnvironment& e = r.result.environment();
    if (!r.has_result || e.ranks().empty()) continue;
    rows << "| " << r.name << " | " << FormatPlacement(e) << " |\n";
    builds.insert("Tempered " + e.tempered_commit() + ", LibTorch " + e.libtorch_version() + ", " + e.mpi_version() +
                  (e.nccl_version().empty() ? ", no NCCL" : ", NCCL " + e.nccl_version()));
  }
  if (rows.str().empty()) return "";
  std::string built;
  for (const std::string& b : builds) built += "- " + b + "\n";
  return "## Where the runs ran\n\n| run | host, GPUs (CUDA_VISIBLE_DEVICES), devices |\n|---|---|\n" + rows.str() +
         "\nBuilt from:\n" + built + "\n";
}

}  // namespace

std::string ReportMarkdown(const std::vector<RunRecord>& records, const SweepSpec& spec,
                           const std::vector<std::string>& plots) {
  const std::vector<Cell> cells = GroupCells(records, spec);
  std::string md = "# Tempered sweep report\n\n" + Setup(records, spec);
  if (!cells.empty()) md += Table1(cells, PaperTableOf(records, spec)) + BestTau(cells) + TauBeyondConstant(cells) + Claims(cells) + Plots(plots);
  md += Halving(records, spec) + Unfinished(records) + Placement(records);
  md += "Per-run numbers (with each run's trends): results.csv, results.json; run directories under runs/.\n";
  return md;
}

std::string WriteSweepReport(const std::string& sweep_dir, const SweepSpec& spec,
                             const std::vector<SweepState::Run>& runs) {
  const std::vector<RunRecord> records = CollectRecords(sweep_dir, runs);
  WriteFileAtomically(sweep_dir + "/results.csv", ResultsCsv(records, spec));
  WriteFileAtomically(sweep_dir + "/results.json", ResultsJson(records));
  const std::vector<std::string> plots = WritePlots(sweep_dir, GroupCells(records, spec));
  const std::string path = sweep_dir + "/report.md";
  WriteFileAtomically(path, ReportMarkdown(records, spec, plots));
  WriteHParams(sweep_dir, spec, records);
  return path;
}

PaperValues PaperTable1(const std::string& dataset, LossConfig::Name loss, double tau) {
  const int column = PaperColumn(loss, tau);
  for (const PaperRow& row : kTable1) {
    if (dataset == row.dataset && column >= 0) {
      return {row.linear[column], row.uniformity[column], row.tolerance[column]};
    }
  }
  return {};
}

bool PaperHasDataset(const std::string& dataset) {
  for (const PaperRow& row : kTable1) {
    if (dataset == row.dataset) return true;
  }
  return false;
}

}  // namespace tempered
