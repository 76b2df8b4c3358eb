// Aggregation of a sweep into DIR/results.csv, DIR/results.json, DIR/report.md (Table-1-style tables, the best tau
// per loss, and a checklist of PAPER.md §7 claims 3-7) and PNG plots under DIR/plots made with gnuplot.
#pragma once

#include <string>
#include <vector>

#include "proto/tempered.pb.h"

namespace tempered {

// One grid point as the report sees it.
struct RunRecord {
  std::string id, name;
  std::string run_dir;     // relative to the sweep directory
  std::string state;       // finished, failed, pending, running
  int attempts = 0;
  std::string last_error;
  RunConfig config;
  bool has_result = false;  // result.json exists and says FINISHED
  RunResult result;
};
std::vector<RunRecord> CollectRecords(const std::string& sweep_dir, const std::vector<SweepState::Run>& runs);

// One row per run: id, loss, tau, hard_k, seed, one column per generic axis of `spec`, status, attempts, metrics,
// wall_seconds, run_dir. Metrics are empty for a run without a result; linear_top1 is empty without linear eval.
std::string ResultsCsv(const std::vector<RunRecord>& records, const SweepSpec& spec);
// {"runs": [{"id", "run_dir", "state", "attempts", "last_error", "result": RunResult JSON or null}]}
std::string ResultsJson(const std::vector<RunRecord>& records);

// Means of one loss at one tau over its finished runs (seeds, hard_k and generic axes pooled).
struct Cell {
  LossConfig::Name loss = LossConfig::NAME_UNSPECIFIED;
  double tau = 0;  // NaN for a loss that does not use tau
  int runs = 0;
  double knn = 0, linear = 0, uniformity = 0, alignment = 0, tolerance = 0;  // linear is NaN without linear eval
};
// Cells in report order: infonce, hard, simple, hard_simple, nearest; tau ascending.
std::vector<Cell> MeanByLossAndTau(const std::vector<RunRecord>& records);

// Spearman's rank correlation (average ranks for ties); NaN with fewer than 2 points or a constant input.
double SpearmanRho(const std::vector<double>& x, const std::vector<double>& y);

struct ClaimCheck {
  std::string claim;     // "3a. infonce: uniformity falls as tau grows"
  std::string verdict;   // "agrees", "disagrees", "not enough data"
  std::string evidence;  // the numbers behind the verdict
};
std::vector<ClaimCheck> CheckClaims(const std::vector<Cell>& cells);

// Density of the relative penalty over negatives spread uniformly on s in [-1, 1] (PAPER.md §3, Fig 3):
// r(s) = exp(s/tau) / Σ_k exp(s_k/tau) -> p(s) = exp(s/tau) / ∫_{-1}^{1} exp(u/tau) du
//        = exp((s - 1)/tau) / (tau (1 - exp(-2/tau)))   (the stable form: no overflow at tau = 0.01).
double RelativePenaltyDensity(double s, double tau);

// Writes DIR/plots/{*.dat, plots.gp} and runs gnuplot (pngcairo); returns the PNG paths relative to DIR, or none
// (with a warning) when gnuplot is missing or fails.
std::vector<std::string> WritePlots(const std::string& sweep_dir, const std::vector<Cell>& cells);

std::string ReportMarkdown(const std::vector<RunRecord>& records, const SweepSpec& spec,
                           const std::vector<std::string>& plots);

// Writes results.csv, results.json, the plots and report.md for `runs`; returns the path of report.md.
std::string WriteSweepReport(const std::string& sweep_dir, const SweepSpec& spec,
                             const std::vector<SweepState::Run>& runs);

}  // namespace tempered
