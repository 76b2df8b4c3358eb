// The live status of a sweep: one row per run (run, loss, tau, state, attempt, epoch, loss, images/s, ETA, kNN) and
// the sweep's progress as a whole (runs finished / running / pending / failed, slots in use, ETA), redrawn in place
// on a terminal and written as log lines otherwise. `tempered-sweep --status DIR` prints it once.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "proto/tempered.pb.h"

namespace tempered {

struct StatusRow {
  std::string run, loss, tau, state, attempt, epoch, loss_value, images_per_second, eta, knn;
  bool running = false;
  double fraction_done = -1;  // a running run's step / total_steps (progress.json); -1 when unknown
  double eta_seconds = -1;    // a running run's own ETA for its remaining steps (progress.json); -1 when unknown
  double wall_seconds = -1;   // a finished run's duration (result.json wall_seconds)
  double knn_top1 = -1;       // a finished run's final kNN top-1 (result.json final.knn_top1)
  std::string where;          // FormatPlacement of its result; a running run's host and GPUs as the state has them
};

// The sweep as a whole, for the progress line.
struct SweepProgress {
  int total = 0, finished = 0, running = 0, pending = 0, failed = 0;
  int pruned = 0;               // stopped by successive halving (SweepSpec.pruning); a run paused at a rung is pending
  int slots = 0;                // runs allowed at once (INT_MAX: no limit)
  int timed_runs = 0;           // finished runs with a duration, which the ETA is estimated from
  double mean_run_seconds = 0;  // their mean duration
  double eta_seconds = -1;      // until the last run ends; -1 when unknown (no run has finished yet)
};

// The counts of `rows`, and the ETA with `slots` runs at once: each pending run is assumed to take the finished runs'
// mean duration, and a running run the rest of that mean by its steps done (at least its own ETA).
SweepProgress SummarizeProgress(const std::vector<StatusRow>& rows, int slots);

// The time until the last of the runs ends when the `pending` ones, `run_seconds` each, start in order on the
// first of `slots` to free up, and the running ones free theirs after `running_left` seconds.
double ScheduledSeconds(const std::vector<double>& running_left, int pending, double run_seconds, int slots);

// "38 runs: 12 finished, 2 running, 23 pending, 1 failed; slots 2/2 in use; ETA 0:18:20 (mean of 12 finished runs:
// 0:01:10)"
std::string FormatProgressLine(const SweepProgress& progress);

// "[######......] 3/6 runs done (50%)": finished or failed runs, `width` characters between the brackets.
std::string ProgressBar(const SweepProgress& progress, int width);

// The finished run with the highest final kNN top-1 of each loss, one line each under a heading naming the metric;
// "" when no run has finished.
std::string FormatBestRuns(const std::vector<StatusRow>& rows);

// Rows for `runs` (in order), reading progress.json / result.json from their directories under `sweep_dir`.
std::vector<StatusRow> CollectStatus(const std::string& sweep_dir, const std::vector<SweepState::Run>& runs);

// The aligned table with a header, closed by the progress line for `slots` (FormatProgressLine).
std::string FormatStatusTable(const std::vector<StatusRow>& rows, int slots);

// "0:01:05"
std::string FormatDuration(double seconds);

// Where a run ran, per host in rank order: its name, the CUDA_VISIBLE_DEVICES its ranks saw and the devices they
// used, each distinct value once: "node1 GPUs 0,1 cuda:0,cuda:1", "node1 cpu; node2 cpu". "" without ranks.
std::string FormatPlacement(const RunEnvironment& environment);

class StatusDisplay {
 public:
  // `interactive`: redraw the table and a progress bar in place (a terminal); otherwise print log lines. `slots`:
  // runs allowed at once.
  StatusDisplay(std::FILE* out, bool interactive, int slots) : out_(out), interactive_(interactive), slots_(slots) {}
  // An event line ("finished infonce_tau0.1_...: kNN 71.2%"): printed above the table on a terminal.
  void Event(const std::string& line);
  // Redraws the table and the bar (at most once a second) on a terminal; otherwise the progress line whenever a run
  // starts or ends, and every 30 s with one line per running run.
  void Refresh(const std::vector<StatusRow>& rows);
  // Leaves the last table on the screen / prints it once in log mode.
  void Final(const std::vector<StatusRow>& rows);

 private:
  void Erase();
  void Draw(const std::vector<StatusRow>& rows);

  // Log mode: one line per running run; the sweep's progress line.
  void LogRunningRuns(const std::vector<StatusRow>& rows);
  void LogProgress(const std::vector<StatusRow>& rows);

  std::FILE* out_;
  bool interactive_;
  int slots_;
  std::string last_counts_;  // log mode: the counts of the last progress line printed
  int lines_drawn_ = 0;
  double last_refresh_ = -1e9;
  std::vector<StatusRow> last_rows_;
};

}  // namespace tempered
