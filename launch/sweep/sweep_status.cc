#include "launch/sweep/sweep_status.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <functional>
#include <map>
#include <queue>
#include <sstream>

#include "common/config.h"
#include "launch/sweep/sweep_spec.h"
#include "launch/sweep/sweep_state.h"

namespace tempered {

namespace {

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string Fixed(double value, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, value);
  return buf;
}

std::string StateName(SweepState::Run::State state) {
  std::string s = SweepState::Run::State_Name(state);
  std::transform(s.begin(), s.end(), s.begin(), ::tolower);
  return s;
}

void FillFromProgress(const Progress& p, StatusRow* row) {
  row->epoch = std::to_string(p.epoch) + "/" + std::to_string(p.epochs);
  row->loss_value = Fixed(p.loss, 4);
  row->images_per_second = Fixed(p.images_per_second, 0);
  row->eta = FormatDuration(p.eta_seconds);
  row->eta_seconds = p.eta_seconds;
  if (p.total_steps > 0) row->fraction_done = std::min(1.0, static_cast<double>(p.step) / p.total_steps);
}

void FillFromResult(const RunResult& r, StatusRow* row) {
  const int epochs = r.epochs_size();
  row->epoch = std::to_string(epochs) + "/" + std::to_string(r.config().epochs());
  if (epochs > 0) row->loss_value = Fixed(r.epochs(epochs - 1).mean_loss(), 4);
  row->images_per_second = Fixed(r.images_per_second(), 0);
  row->eta = "-";
  row->where = FormatPlacement(r.environment());
  if (r.status() == RunResult::FINISHED) {
    row->knn = Fixed(r.final().knn_top1(), 1);
    row->knn_top1 = r.final().knn_top1();
    row->wall_seconds = r.wall_seconds();
  }
}

// What is left of a running run: the mean run's duration less the share of steps done (evaluation comes after the
// steps, so the mean covers it), but never less than the run's own ETA for its steps.
double RemainingSeconds(const StatusRow& row, double mean_run_seconds) {
  const double by_mean = row.fraction_done >= 0 ? mean_run_seconds * (1 - row.fraction_done) : mean_run_seconds;
  return std::max(by_mean, row.eta_seconds);
}

// The progress line's counts, to tell when they changed.
std::string CountsKey(const SweepProgress& p) {
  return std::to_string(p.finished) + "," + std::to_string(p.running) + "," + std::to_string(p.pending) + "," +
         std::to_string(p.failed);
}

}  // namespace

std::string FormatDuration(double seconds) {
  const long s = std::max(0L, static_cast<long>(seconds + 0.5));
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  return buf;
}

std::string FormatPlacement(const RunEnvironment& environment) {
  struct Host {
    std::string name;
    std::vector<std::string> visible, devices;  // distinct values, in rank order
  };
  std::vector<Host> hosts;
  const auto add_once = [](std::vector<std::string>* values, const std::string& value) {
    if (!value.empty() && std::find(values->begin(), values->end(), value) == values->end()) values->push_back(value);
  };
  for (const RunEnvironment::Rank& rank : environment.ranks()) {
    auto host = std::find_if(hosts.begin(), hosts.end(), [&](const Host& h) { return h.name == rank.host(); });
    if (host == hosts.end()) host = hosts.insert(hosts.end(), Host{rank.host(), {}, {}});
    add_once(&host->visible, rank.cuda_visible_devices());
    add_once(&host->devices, rank.device());
  }
  const auto join = [](const std::vector<std::string>& values, const char* separator) {
    std::string joined;
    for (const std::string& v : values) joined += (joined.empty() ? "" : separator) + v;
    return joined;
  };
  std::vector<std::string> parts;
  for (const Host& h : hosts) {
    parts.push_back(h.name + (h.visible.empty() ? "" : " GPUs " + join(h.visible, "/")) +
                    (h.devices.empty() ? "" : " " + join(h.devices, ",")));
  }
  return join(parts, "; ");
}

std::vector<StatusRow> CollectStatus(const std::string& sweep_dir, const std::vector<SweepState::Run>& runs) {
  std::vector<StatusRow> rows;
  for (const auto& run : runs) {
    StatusRow row;
    const std::string dir = sweep_dir + "/" + run.run_dir();
    row.run = run.run_dir().substr(run.run_dir().rfind('/') + 1);
    row.loss = LossName(run.config().loss().name());
    row.tau = LossUsesTau(run.config().loss().name()) ? FormatFloat(run.config().loss().tau()) : "-";
    row.state = StateName(run.state());
    // A run whose Slurm job is not running (queued, held, suspended) says so, as the coordinator last saw it.
    const std::string& slurm = run.slurm_state();
    if (run.state() == SweepState::Run::RUNNING && !slurm.empty() && slurm != "RUNNING") {
      row.state = "slurm " + slurm + (run.slurm_reason().empty() ? "" : " (" + run.slurm_reason() + ")");
    }
    row.attempt = std::to_string(run.attempts());
    row.running = run.state() == SweepState::Run::RUNNING;
    Progress progress;
    RunResult result;
    // What the coordinator gave it: the attempt's result.json may not be written yet.
    if (row.running) row.where = run.host() + (run.gpus().empty() ? "" : " GPUs " + run.gpus());
    if (row.running && ReadProgress(dir, &progress)) {
      FillFromProgress(progress, &row);
    } else if (!row.running && run.state() != SweepState::Run::PENDING && ReadRunResult(dir, &result)) {
      FillFromResult(result, &row);
    }
    rows.push_back(row);
  }
  return rows;
}

double ScheduledSeconds(const std::vector<double>& running_left, int pending, double run_seconds, int slots) {
  // The earliest-free slot first, as the coordinator launches: a min-heap of the times the slots free up.
  std::priority_queue<double, std::vector<double>, std::greater<double>> free_at(running_left.begin(),
                                                                                 running_left.end());
  const long in_use = std::min<long>(slots, static_cast<long>(running_left.size()) + pending);
  for (long idle = in_use - static_cast<long>(free_at.size()); idle > 0; --idle) free_at.push(0);
  double end = running_left.empty() ? 0 : *std::max_element(running_left.begin(), running_left.end());
  for (int i = 0; i < pending; ++i) {
    const double start = free_at.top();
    free_at.pop();
    free_at.push(start + run_seconds);
    end = std::max(end, start + run_seconds);
  }
  return end;
}

SweepProgress SummarizeProgress(const std::vector<StatusRow>& rows, int slots) {
  SweepProgress p;
  p.total = static_cast<int>(rows.size());
  p.slots = slots;
  double timed_sum = 0;
  for (const StatusRow& r : rows) {
    p.finished += r.state == "finished";
    p.running += r.running;
    p.pending += r.state == "pending" || r.state == "at_rung";  // a paused run goes on or is pruned
    p.failed += r.state == "failed";
    p.pruned += r.state == "pruned";
    if (r.state == "finished" && r.wall_seconds > 0) {
      ++p.timed_runs;
      timed_sum += r.wall_seconds;
    }
  }
  if (p.timed_runs > 0) p.mean_run_seconds = timed_sum / p.timed_runs;
  if (p.running + p.pending == 0) {
    p.eta_seconds = 0;
  } else if (p.timed_runs > 0) {
    std::vector<double> running_left;
    for (const StatusRow& r : rows) {
      if (r.running) running_left.push_back(RemainingSeconds(r, p.mean_run_seconds));
    }
    p.eta_seconds = ScheduledSeconds(running_left, p.pending, p.mean_run_seconds, slots);
  }
  return p;
}

std::string FormatProgressLine(const SweepProgress& p) {
  std::string line = std::to_string(p.total) + " runs: " + std::to_string(p.finished) + " finished, " +
                     std::to_string(p.running) + " running, " + std::to_string(p.pending) + " pending, " +
                     std::to_string(p.failed) + " failed" +
                     (p.pruned > 0 ? ", " + std::to_string(p.pruned) + " pruned" : std::string()) +
                     "; slots " + std::to_string(p.running) +
                     (p.slots == INT_MAX ? " in use (no limit)" : "/" + std::to_string(p.slots) + " in use");
  if (p.eta_seconds < 0) return line + "; ETA once a run has finished";
  line += "; ETA " + FormatDuration(p.eta_seconds);
  if (p.timed_runs > 0) {
    line += " (mean of " + std::to_string(p.timed_runs) + " finished run" + (p.timed_runs > 1 ? "s" : "") + ": " +
            FormatDuration(p.mean_run_seconds) + ")";
  }
  return line;
}

std::string ProgressBar(const SweepProgress& p, int width) {
  const int done = p.finished + p.failed + p.pruned;
  const int filled = p.total > 0 ? width * done / p.total : 0;
  return "[" + std::string(filled, '#') + std::string(width - filled, '.') + "] " + std::to_string(done) + "/" +
         std::to_string(p.total) + " runs done (" + std::to_string(p.total > 0 ? 100 * done / p.total : 0) + "%)";
}

std::string FormatBestRuns(const std::vector<StatusRow>& rows) {
  std::vector<std::string> losses;  // in grid order
  std::map<std::string, const StatusRow*> best;
  for (const StatusRow& r : rows) {
    if (r.state != "finished" || r.knn_top1 < 0) continue;
    if (!best.count(r.loss)) losses.push_back(r.loss);
    if (!best.count(r.loss) || r.knn_top1 > best[r.loss]->knn_top1) best[r.loss] = &r;
  }
  if (losses.empty()) return "";
  size_t loss_width = 0;
  for (const std::string& loss : losses) loss_width = std::max(loss_width, loss.size());
  std::string text = "best run so far per loss, by final kNN top-1 (result.json final.knn_top1):\n";
  for (const std::string& loss : losses) {
    const StatusRow& r = *best[loss];
    text += "  " + loss + std::string(loss_width - loss.size(), ' ') + "  " + Fixed(r.knn_top1, 2) + "%  tau " +
            r.tau + "  " + r.run + "\n";
  }
  return text;
}

std::string FormatStatusTable(const std::vector<StatusRow>& rows, int slots) {
  const std::vector<std::string> header = {"run", "loss", "tau", "state", "try", "epoch", "loss", "img/s", "ETA",
                                           "kNN%", "where"};
  std::vector<std::vector<std::string>> cells = {header};
  for (const auto& r : rows) {
    cells.push_back({r.run, r.loss, r.tau, r.state, r.attempt, r.epoch, r.loss_value, r.images_per_second, r.eta,
                     r.knn, r.where});
  }
  std::vector<size_t> width(header.size(), 0);
  for (const auto& line : cells) {
    for (size_t c = 0; c < line.size(); ++c) width[c] = std::max(width[c], line[c].size());
  }
  std::ostringstream out;
  for (const auto& line : cells) {
    std::string text;
    for (size_t c = 0; c < line.size(); ++c) {
      text += line[c] + std::string(width[c] - line[c].size() + (c + 1 < line.size() ? 2 : 0), ' ');
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out << text << "\n";
  }
  out << FormatProgressLine(SummarizeProgress(rows, slots)) << "\n";
  return out.str();
}

void StatusDisplay::Erase() {
  if (lines_drawn_ > 0) std::fprintf(out_, "\x1b[%dA\x1b[J", lines_drawn_);  // cursor up N lines, clear below
  lines_drawn_ = 0;
}

void StatusDisplay::Draw(const std::vector<StatusRow>& rows) {
  std::string table = FormatStatusTable(rows, slots_);
  if (interactive_) table += ProgressBar(SummarizeProgress(rows, slots_), 50) + "\n";
  std::fputs(table.c_str(), out_);
  lines_drawn_ = static_cast<int>(std::count(table.begin(), table.end(), '\n'));
  std::fflush(out_);
}

void StatusDisplay::Event(const std::string& line) {
  if (interactive_) Erase();
  std::fprintf(out_, "%s\n", line.c_str());
  if (interactive_ && !last_rows_.empty()) Draw(last_rows_);
  std::fflush(out_);
}

void StatusDisplay::Refresh(const std::vector<StatusRow>& rows) {
  last_rows_ = rows;
  const double now = NowSeconds();
  if (interactive_) {
    if (now - last_refresh_ < 1.0) return;
    last_refresh_ = now;
    Erase();
    Draw(rows);
    return;
  }
  const bool due = now - last_refresh_ >= 30.0;
  if (due) {
    last_refresh_ = now;
    LogRunningRuns(rows);
  }
  if (due || CountsKey(SummarizeProgress(rows, slots_)) != last_counts_) LogProgress(rows);
}

void StatusDisplay::LogRunningRuns(const std::vector<StatusRow>& rows) {
  for (const auto& r : rows) {
    if (!r.running || r.epoch.empty()) continue;
    std::fprintf(out_, "progress %s: epoch %s, loss %s, %s img/s, ETA %s\n", r.run.c_str(), r.epoch.c_str(),
                 r.loss_value.c_str(), r.images_per_second.c_str(), r.eta.c_str());
  }
}

void StatusDisplay::LogProgress(const std::vector<StatusRow>& rows) {
  const SweepProgress progress = SummarizeProgress(rows, slots_);
  last_counts_ = CountsKey(progress);
  std::fprintf(out_, "sweep progress: %s\n", FormatProgressLine(progress).c_str());
  std::fflush(out_);
}

void StatusDisplay::Final(const std::vector<StatusRow>& rows) {
  if (interactive_) Erase();
  Draw(rows);
  lines_drawn_ = 0;
}

}  // namespace tempered
