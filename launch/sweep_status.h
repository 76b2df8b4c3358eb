// The live status of a sweep: one row per run (run, loss, tau, state, attempt, epoch, loss, images/s, ETA, kNN),
// redrawn in place on a terminal and written as log lines otherwise. `tempered-sweep --status DIR` prints it once.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "proto/tempered.pb.h"

namespace tempered {

struct StatusRow {
  std::string run, loss, tau, state, attempt, epoch, loss_value, images_per_second, eta, knn;
  bool running = false;
};

// Rows for `runs` (in order), reading progress.json / result.json from their directories under `sweep_dir`.
std::vector<StatusRow> CollectStatus(const std::string& sweep_dir, const std::vector<SweepState::Run>& runs);

// The aligned table with a header and a closing count line ("12 runs: 3 finished, 2 running, 7 pending").
std::string FormatStatusTable(const std::vector<StatusRow>& rows);

// "0:01:05"
std::string FormatDuration(double seconds);

class StatusDisplay {
 public:
  // `interactive`: redraw the table in place (a terminal); otherwise print log lines.
  StatusDisplay(std::FILE* out, bool interactive) : out_(out), interactive_(interactive) {}
  // An event line ("finished infonce_tau0.1_...: kNN 71.2%"): printed above the table on a terminal.
  void Event(const std::string& line);
  // Redraws the table (at most once a second) on a terminal; otherwise every 30 s one line per running run.
  void Refresh(const std::vector<StatusRow>& rows);
  // Leaves the last table on the screen / prints it once in log mode.
  void Final(const std::vector<StatusRow>& rows);

 private:
  void Erase();
  void Draw(const std::vector<StatusRow>& rows);

  std::FILE* out_;
  bool interactive_;
  int lines_drawn_ = 0;
  double last_refresh_ = -1e9;
  std::vector<StatusRow> last_rows_;
};

}  // namespace tempered
