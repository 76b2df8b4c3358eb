// Successive halving over τ (SweepSpec.pruning): every run of a group (one loss and one value of every other axis)
// pauses at each rung, a fraction of its steps; once all of the group's runs have reached the rung, its τ (the
// cells: each τ's seeds, averaged) are ranked by the metric there, and the lower-ranked ones stop, PRUNED, with
// their checkpoints: a later sweep without pruning resumes them to full length. Pure functions of the state; the
// coordinator (sweep.cc) applies them.
#pragma once

#include <string>
#include <vector>

#include "proto/tempered.pb.h"

namespace tempered {

inline bool PruningOn(const SweepSpec& spec) { return spec.pruning().rungs_size() > 0; }

// The fraction of its steps at which `run`, about to be launched, pauses next: its next rung, or 0 (to the end)
// when pruning is off, it has passed every rung, or its group has one cell (nothing to compare it with).
double NextPause(const SweepSpec& spec, const SweepState::Run& run, const std::vector<SweepState::Run>& grid);

// The pruning metric of a paused run's result (kNN or linear top-1 of result.final, %).
double RungScore(const SweepSpec& spec, const RunResult& paused);
std::string RungMetricName(const SweepSpec& spec);
// The rungs as the log, the report and the errors name them: "0.25, 0.5".
std::string RungsText(const SweepSpec& spec);

// What the rungs that every run of their group has reached decide: run ids that go on (AT_RUNG -> PENDING) and run
// ids that stop (AT_RUNG -> PRUNED), with one log line per decision (the ranked cells and their scores). A group
// waits while one of its runs that has not failed is still short of the rung.
struct RungDecisions {
  std::vector<std::string> promote, prune, log;
};
RungDecisions DecideRungs(const SweepSpec& spec, const std::vector<SweepState::Run>& grid);

// Throws UserError when `now` prunes at other rungs or by another metric than `before`, the spec that scored the
// runs of `state` at their rungs: a score at 0.25 of a run cannot be ranked against one at 0.15. Pruning turned
// off is fine (the runs go on to full length), as is another `keep` (it applies to the rungs not yet decided).
void CheckRungsUnchanged(const SweepSpec& before, const SweepSpec& now, const SweepState& state,
                         const std::string& sweep_dir);

// The cells kept of `cells` ranked at a rung: keep x cells rounded down, at least one.
int CellsKept(const SweepSpec& spec, int cells);

}  // namespace tempered
