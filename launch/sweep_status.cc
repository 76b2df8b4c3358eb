#include "launch/sweep_status.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <sstream>

#include "launch/sweep_spec.h"
#include "launch/sweep_state.h"

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
}

void FillFromResult(const RunResult& r, StatusRow* row) {
  const int epochs = r.epochs_size();
  row->epoch = std::to_string(epochs) + "/" + std::to_string(r.config().epochs());
  if (epochs > 0) row->loss_value = Fixed(r.epochs(epochs - 1).mean_loss(), 4);
  row->images_per_second = Fixed(r.images_per_second(), 0);
  row->eta = "-";
  if (r.status() == RunResult::FINISHED) row->knn = Fixed(r.final().knn_top1(), 1);
}

}  // namespace

std::string FormatDuration(double seconds) {
  const long s = std::max(0L, static_cast<long>(seconds + 0.5));
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  return buf;
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
    row.attempt = std::to_string(run.attempts());
    row.running = run.state() == SweepState::Run::RUNNING;
    Progress progress;
    RunResult result;
    if (row.running && ReadProgress(dir, &progress)) {
      FillFromProgress(progress, &row);
    } else if (!row.running && run.state() != SweepState::Run::PENDING && ReadRunResult(dir, &result)) {
      FillFromResult(result, &row);
    }
    rows.push_back(row);
  }
  return rows;
}

std::string FormatStatusTable(const std::vector<StatusRow>& rows) {
  const std::vector<std::string> header = {"run", "loss", "tau", "state", "try", "epoch", "loss", "img/s", "ETA",
                                           "kNN%"};
  std::vector<std::vector<std::string>> cells = {header};
  std::map<std::string, int> counts;
  for (const auto& r : rows) {
    cells.push_back({r.run, r.loss, r.tau, r.state, r.attempt, r.epoch, r.loss_value, r.images_per_second, r.eta,
                     r.knn});
    ++counts[r.state];
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
  out << rows.size() << " runs:";
  const char* sep = " ";
  for (const char* state : {"finished", "running", "pending", "failed"}) {
    out << sep << counts[state] << " " << state;
    sep = ", ";
  }
  out << "\n";
  return out.str();
}

void StatusDisplay::Erase() {
  if (lines_drawn_ > 0) std::fprintf(out_, "\x1b[%dA\x1b[J", lines_drawn_);  // cursor up N lines, clear below
  lines_drawn_ = 0;
}

void StatusDisplay::Draw(const std::vector<StatusRow>& rows) {
  const std::string table = FormatStatusTable(rows);
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
  if (now - last_refresh_ < (interactive_ ? 1.0 : 30.0)) return;
  last_refresh_ = now;
  if (interactive_) {
    Erase();
    Draw(rows);
    return;
  }
  for (const auto& r : rows) {
    if (!r.running || r.epoch.empty()) continue;
    std::fprintf(out_, "progress %s: epoch %s, loss %s, %s img/s, ETA %s\n", r.run.c_str(), r.epoch.c_str(),
                 r.loss_value.c_str(), r.images_per_second.c_str(), r.eta.c_str());
  }
  std::fflush(out_);
}

void StatusDisplay::Final(const std::vector<StatusRow>& rows) {
  if (interactive_) Erase();
  Draw(rows);
  lines_drawn_ = 0;
}

}  // namespace tempered
