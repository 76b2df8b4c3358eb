// Aggregation of a sweep into DIR/results.csv, DIR/results.json, DIR/report.md (Table-1-style tables with the
// paper's values beside them, the best tau per loss, each run's convergence, and a checklist of docs/paper.md §7 claims
// 3-9) and PNG plots under DIR/plots made with gnuplot.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <utility>
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
  // Successive halving: the metric at each rung reached (SweepState.Run.rung_scores), and the global steps done of
  // the run's total by any result.json (a paused or pruned run's too; 0 of 0 without one).
  std::vector<double> rung_scores;
  int64_t steps_done = 0, total_steps = 0;
};
std::vector<RunRecord> CollectRecords(const std::string& sweep_dir, const std::vector<SweepState::Run>& runs);

// The text form of the RunConfig field at `path` ("optim.lr", enums by name); repeated values joined by commas; ""
// for no such field.
std::string ConfigFieldText(const RunConfig& config, const std::string& path);
// Whether a run's result depends on the field at `path`: loss.tau and loss.hard_k only for the losses whose formula
// has them (docs/paper.md §2; ExpandGrid leaves the base value in the others).
bool LossUsesField(LossConfig::Name loss, const std::string& path);

// Orders field values as the report lists them: numbers by value ("8" before "16"), anything else as text.
bool ValueLess(const std::string& a, const std::string& b);

// One row per run: id, loss, tau, hard_k, seed, one column per generic axis of `spec`, status, attempts, metrics,
// wall_seconds, the per-epoch trends, run_dir. Metrics are empty for a run without a result; linear_top1 is empty
// without linear eval.
std::string ResultsCsv(const std::vector<RunRecord>& records, const SweepSpec& spec);
// {"runs": [{"id", "run_dir", "state", "attempts", "last_error", "result": RunResult JSON or null}]}
std::string ResultsJson(const std::vector<RunRecord>& records);

// What the report averages, compares and follows over epochs.
enum class Measure { kKnn, kLinear, kUniformity, kAlignment, kTolerance, kPositiveSimilarity, kGap };
constexpr int kMeasureCount = 7;
inline constexpr double kNoValue = std::numeric_limits<double>::quiet_NaN();  // what NaN means here
// "kNN top-1", "linear top-1", "uniformity", ..., "gap" (for text); "knn_top1", ... (for files and columns).
const char* MeasureName(Measure m);
const char* MeasureKey(Measure m);
// The measure in one evaluation; NaN where it lacks it (linear top-1 without a linear classifier, the gap without
// local separation). Gap (Fig 8): positive similarity - mean of the (up to) 10 largest negative similarities.
double MeasureOf(const Metrics& metrics, Measure m);
// |slope| per epoch above which a run is still moving on a measure (kStillMoving* in report.cc).
double StillMovingPerEpoch(Measure m);
// Claims that one accuracy is above another (7c, 9a) are "within noise" under this many standard errors.
constexpr double kWithinNoiseErrors = 2.0;

// How a run's measure moved at the end of training: the least-squares slope per epoch over the last
// max(2, ceil(E/3)) of the E epochs with that measure on the per-epoch curve (EpochResult.metrics).
struct Trend {
  int evaluated_epochs = 0;  // E; under 2 the convergence is unknown and slope is NaN
  int first_epoch = 0, last_epoch = 0;  // the fitted window
  double slope = kNoValue;   // per epoch
  bool moving(Measure m) const { return std::fabs(slope) > StillMovingPerEpoch(m); }
};
Trend TrendOf(const RunResult& result, Measure m);
// The points behind TrendOf and the convergence plots: (epoch, value) for the epochs that have the measure and were
// evaluated on the most common sample size (a curve's bounded kNN bank and a full evaluation's whole training split
// give different numbers; mixing them would read the bank size as a trend).
std::vector<std::pair<int, double>> CurvePoints(const RunResult& result, Measure m);

// Mean, sample standard deviation (NaN under 2 values) and count of one measure over a cell's runs (NaNs skipped).
struct Stat {
  double mean = kNoValue, std = kNoValue;
  int n = 0;
};
Stat StatOf(const std::vector<double>& values);

// A run behind a cell, as the convergence checks see it.
struct CellRun {
  uint64_t seed = 0;
  std::array<Trend, kMeasureCount> trend;  // by Measure
};

// The runs of one grid cell: one loss at one tau with one value of every other field that varies in the sweep
// (hard_k where the loss uses it, the spec's generic axes); seeds are what a cell averages over.
struct Cell {
  LossConfig::Name loss = LossConfig::NAME_UNSPECIFIED;
  double tau = kNoValue;  // NaN for a loss that does not use tau
  // The other varying fields and their values in the sweep's order, e.g. {{"hard_k", "8"}, {"optim.lr", "0.1"}}.
  std::vector<std::pair<std::string, std::string>> group;
  int runs = 0;
  int test_samples = 0;  // the fewest test images behind one of its runs' accuracies (final.knn_test_samples; 0: unknown)
  std::array<Stat, kMeasureCount> stat;     // RunResult.final, by Measure
  std::array<Stat, kMeasureCount> initial;  // RunResult.initial of the runs that have one (n = 0: none)
  Stat raw_pixel_knn;                       // kNN top-1 on raw pixels of the runs with eval.raw_pixel_knn
  std::vector<double> top_negative;         // mean k-th largest negative similarity, k = 1..10 (Fig 8)
  std::map<int, std::array<double, kMeasureCount>> curve;  // epoch -> mean over runs of CurvePoints (NaN: none)
  std::vector<CellRun> members;
  Stat final_tau;                    // the tau its runs ended at (loss.tau_mode; the constant for CONSTANT)
  std::map<int, double> tau_curve;   // epoch -> mean over runs of EpochResult.tau
  const Stat& operator[](Measure m) const { return stat[static_cast<int>(m)]; }
  double mean(Measure m) const { return (*this)[m].mean; }
};
// Cells in report order: infonce, hard, simple, hard_simple, nearest; then by group; tau ascending. `spec` names
// the generic axes; hard_k is part of a cell when the sweep's hard-k losses take more than one value of it.
std::vector<Cell> GroupCells(const std::vector<RunRecord>& records, const SweepSpec& spec);
// "hard τ=0.1", "simple", "τ=0.5" (infonce is the default), with the group: "hard τ=0.1 (hard_k=8)".
std::string CellLabel(const Cell& c);
std::string GroupLabel(const std::vector<std::pair<std::string, std::string>>& group);

// Spearman's rank correlation (average ranks for ties); NaN with fewer than 2 points or a constant input.
double SpearmanRho(const std::vector<double>& x, const std::vector<double>& y);

// The standard error (points) of a cell's mean accuracy on `m` (kKnn or kLinear): the test set's binomial error
// sqrt(p (1 - p) / N) over its N test images (none when N is unknown) and, over >= 2 seeds, their spread
// std / sqrt(n). With one seed the spread over seeds is unknown, so this is the least the error can be.
double AccuracyError(const Cell& c, Measure m);

struct ClaimCheck {
  std::string claim;     // "3a. infonce: uniformity falls as tau grows"
  std::string verdict;   // "agrees", "disagrees", "not converged", "within noise", "not enough data"
  std::string evidence;  // the numbers behind the verdict
};
// The claims over every group of cells (a sweep that varies hard_k or a generic axis gets each claim once per value
// of the fields its losses use, the group in brackets after the claim).
std::vector<ClaimCheck> CheckClaims(const std::vector<Cell>& cells);

// docs/paper.md §6 Table 1 for a dataset ("cifar10", "cifar100", "svhn") and a loss at a tau (ignored by losses without
// one): linear top-1, uniformity and tolerance where the paper gives them, NaN where it does not; all NaN for a
// cell the table lacks.
struct PaperValues {
  double linear = kNoValue, uniformity = kNoValue, tolerance = kNoValue;
};
PaperValues PaperTable1(const std::string& dataset, LossConfig::Name loss, double tau);
bool PaperHasDataset(const std::string& dataset);

// Density of the relative penalty over negatives spread uniformly on s in [-1, 1] (docs/paper.md §3, Fig 3):
// r(s) = exp(s/tau) / Σ_k exp(s_k/tau) -> p(s) = exp(s/tau) / ∫_{-1}^{1} exp(u/tau) du
//        = exp((s - 1)/tau) / (tau (1 - exp(-2/tau)))   (the stable form: no overflow at tau = 0.01).
double RelativePenaltyDensity(double s, double tau);

// The report's plots in report order: DIR/plots/<name>.png and the caption report.md gives it.
struct PlotInfo {
  const char* name;
  const char* caption;
};
const std::vector<PlotInfo>& ReportPlots();

// Writes DIR/plots/{*.dat, plots.gp} and runs gnuplot (pngcairo); returns the PNG paths relative to DIR, or none
// (with a warning) when gnuplot is missing or fails.
std::vector<std::string> WritePlots(const std::string& sweep_dir, const std::vector<Cell>& cells);

// The report's "τ beyond a constant" section: each cell whose loss.tau_mode (a sweep axis) is not CONSTANT against
// the best constant tau of the same loss and other axis values (accuracy with the within-noise rule, uniformity,
// tolerance, the tau it ended at); "" when the sweep has no such cell.
std::string TauBeyondConstant(const std::vector<Cell>& cells);

std::string ReportMarkdown(const std::vector<RunRecord>& records, const SweepSpec& spec,
                           const std::vector<std::string>& plots);

// The sweep as one TensorBoard HParams experiment (launch/report/report_hparams.cc): the experiment in sweep_dir,
// each started run's session in its run directory, in files of fixed names that a later call replaces.
void WriteHParams(const std::string& sweep_dir, const SweepSpec& spec, const std::vector<RunRecord>& records);

// Writes results.csv, results.json, the plots, report.md and the HParams records for `runs`; returns the path of
// report.md.
std::string WriteSweepReport(const std::string& sweep_dir, const SweepSpec& spec,
                             const std::vector<SweepState::Run>& runs);

}  // namespace tempered
