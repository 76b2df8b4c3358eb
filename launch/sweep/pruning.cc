#include "launch/sweep/pruning.h"

#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "common/errors.h"
#include "launch/report/report.h"
#include "launch/sweep/sweep_spec.h"

namespace tempered {

namespace {

using State = SweepState::Run;

std::string ConfigKey(RunConfig config, bool keep_tau) {
  if (!keep_tau) config.mutable_loss()->clear_tau();
  config.clear_seed();
  config.clear_out_dir();
  config.clear_threads();
  std::string text;
  google::protobuf::TextFormat::PrintToString(config, &text);
  return text;
}

// A group: every run of one loss and one value of every other axis; a cell: the seeds of one τ in it.
std::string GroupKey(const SweepState::Run& run) { return ConfigKey(run.config(), false); }
std::string CellKey(const SweepState::Run& run) { return ConfigKey(run.config(), true); }

std::string GroupName(const SweepSpec& spec, const RunConfig& config) {
  std::string name = LossName(config.loss().name());
  if (spec.hard_k_size() > 1 && LossUsesHardK(config.loss().name())) {
    name += " hard_k " + std::to_string(config.loss().hard_k());
  }
  for (const auto& axis : spec.axis()) name += " " + axis.field() + " " + ConfigFieldText(config, axis.field());
  return name;
}

struct Cell {
  std::string tau;
  std::vector<const SweepState::Run*> runs;
  double score = 0;
};

// The group's cells at rung k, ranked best first; empty while one of its runs that has not failed is short of the
// rung, or when none of them waits at it (decided already).
std::vector<Cell> RankedCellsAt(int k, const std::vector<const SweepState::Run*>& group) {
  std::map<std::string, Cell> cells;
  bool someone_waits = false;
  for (const SweepState::Run* run : group) {
    const bool reached = run->rung_scores_size() > k;
    if (!reached && (run->state() == State::PENDING || run->state() == State::RUNNING)) return {};
    if (!reached) continue;  // failed, or finished by a sweep without pruning: not ranked
    someone_waits |= run->state() == State::AT_RUNG && run->rung_scores_size() == k + 1;
    Cell& cell = cells[CellKey(*run)];
    cell.tau = FormatFloat(run->config().loss().tau());
    cell.runs.push_back(run);
  }
  if (!someone_waits) return {};
  std::vector<Cell> ranked;
  for (auto& [key, cell] : cells) {
    for (const SweepState::Run* run : cell.runs) cell.score += run->rung_scores(k) / cell.runs.size();
    ranked.push_back(cell);
  }
  std::stable_sort(ranked.begin(), ranked.end(), [](const Cell& a, const Cell& b) { return a.score > b.score; });
  return ranked;
}

std::string Percent(double value) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f%%", value);
  return buf;
}

// Decides rung k of one group (if it is ready): the kept cells' waiting runs go on, the others' stop.
void DecideRung(const SweepSpec& spec, int k, const std::vector<const SweepState::Run*>& group, RungDecisions* out) {
  const std::vector<Cell> ranked = RankedCellsAt(k, group);
  if (ranked.empty()) return;
  const int kept = CellsKept(spec, static_cast<int>(ranked.size()));
  std::string line = "rung " + std::to_string(k + 1) + " (" + FormatFloat(spec.pruning().rungs(k)) +
                     " of the steps) of " + GroupName(spec, ranked.front().runs.front()->config()) + ", by " +
                     RungMetricName(spec) + ":";
  for (size_t i = 0; i < ranked.size(); ++i) {
    const bool keep = static_cast<int>(i) < kept;
    line += std::string(i == 0 ? " " : ", ") + "tau " + ranked[i].tau + " " + Percent(ranked[i].score) +
            (ranked[i].runs.size() > 1 ? " (mean of " + std::to_string(ranked[i].runs.size()) + ")" : "") +
            (keep ? " kept" : " pruned");
    for (const SweepState::Run* run : ranked[i].runs) {
      if (run->state() != State::AT_RUNG || run->rung_scores_size() != k + 1) continue;
      (keep ? out->promote : out->prune).push_back(run->id());
    }
  }
  out->log.push_back(line);
}

}  // namespace

void CheckRungsUnchanged(const SweepSpec& before, const SweepSpec& now, const SweepState& state,
                         const std::string& sweep_dir) {
  const auto scored = [](const SweepState::Run& run) { return run.rung_scores_size() > 0; };
  if (!PruningOn(now) || std::none_of(state.runs().begin(), state.runs().end(), scored)) return;
  const auto rungs = [](const SweepSpec& spec) { return "rungs " + RungsText(spec) + " by " + RungMetricName(spec); };
  if (PruningOn(before) && rungs(before) == rungs(now)) return;
  const std::string scored_at = PruningOn(before) ? "at " + rungs(before)
                                                  : "at the rungs of an earlier spec (its last one did not prune)";
  throw UserError("the sweep in " + sweep_dir + " scored its runs " + scored_at + ", this spec prunes at " +
                  rungs(now) + ": scores at other fractions of a run cannot be ranked together, so run this spec " +
                  "in a new --out_dir or give it the sweep's pruning block again");
}

int CellsKept(const SweepSpec& spec, int cells) {
  const double keep = spec.pruning().keep() > 0 ? spec.pruning().keep() : 0.5;
  return std::max(1, static_cast<int>(std::floor(keep * cells + 1e-9)));
}

std::string RungsText(const SweepSpec& spec) {
  std::string text;
  for (float f : spec.pruning().rungs()) text += (text.empty() ? "" : ", ") + FormatFloat(f);
  return text;
}

std::string RungMetricName(const SweepSpec& spec) {
  return spec.pruning().metric() == SweepSpec::Pruning::LINEAR ? "linear top-1" : "kNN top-1";
}

double RungScore(const SweepSpec& spec, const RunResult& paused) {
  return spec.pruning().metric() == SweepSpec::Pruning::LINEAR ? paused.final().linear_top1()
                                                                : paused.final().knn_top1();
}

double NextPause(const SweepSpec& spec, const SweepState::Run& run, const std::vector<SweepState::Run>& grid) {
  const int next = run.rung_scores_size();
  if (!PruningOn(spec) || next >= spec.pruning().rungs_size()) return 0;
  const std::string group = GroupKey(run), cell = CellKey(run);
  for (const auto& other : grid) {
    if (GroupKey(other) == group && CellKey(other) != cell) return spec.pruning().rungs(next);
  }
  return 0;
}

RungDecisions DecideRungs(const SweepSpec& spec, const std::vector<SweepState::Run>& grid) {
  RungDecisions decisions;
  if (!PruningOn(spec)) return decisions;
  std::vector<std::string> order;  // groups in grid order
  std::map<std::string, std::vector<const SweepState::Run*>> groups;
  for (const auto& run : grid) {
    auto& members = groups[GroupKey(run)];
    if (members.empty()) order.push_back(GroupKey(run));
    members.push_back(&run);
  }
  for (const std::string& key : order) {
    for (int k = 0; k < spec.pruning().rungs_size(); ++k) DecideRung(spec, k, groups[key], &decisions);
  }
  return decisions;
}

}  // namespace tempered
