// Successive halving's decisions (launch/sweep/pruning.h) on hand-made sweep states: which runs pause where, when a rung
// is decided, which τ are kept, and that seeds are averaged and failed runs do not block a group.
#include <gtest/gtest.h>

#include <google/protobuf/text_format.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common/errors.h"
#include "launch/sweep/pruning.h"
#include "launch/sweep/sweep_spec.h"

namespace tempered {
namespace {

using State = SweepState::Run;

SweepSpec Spec(const std::string& text) {
  SweepSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &spec)) << text;
  return spec;
}

const SweepSpec kHalving = Spec("pruning { rungs: [0.25, 0.5] keep: 0.5 }");

State RunOf(const std::string& loss, float tau, int seed, State::State state, std::vector<double> scores = {}) {
  State run;
  LossConfig::Name name;
  std::string upper = loss;
  std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
  EXPECT_TRUE(LossConfig::Name_Parse(upper, &name));
  run.mutable_config()->mutable_loss()->set_name(name);
  run.mutable_config()->mutable_loss()->set_tau(tau);
  run.mutable_config()->set_seed(seed);
  run.set_id(loss + "_" + std::to_string(tau) + "_" + std::to_string(seed));
  run.set_state(state);
  for (double s : scores) run.add_rung_scores(s);
  return run;
}

std::vector<std::string> Sorted(std::vector<std::string> ids) {
  std::sort(ids.begin(), ids.end());
  return ids;
}

TEST(Pruning, KeepsHalfRoundedDownAndAtLeastOne) {
  EXPECT_EQ(CellsKept(kHalving, 8), 4);
  EXPECT_EQ(CellsKept(kHalving, 5), 2);
  EXPECT_EQ(CellsKept(kHalving, 1), 1);
  EXPECT_EQ(CellsKept(Spec("pruning { rungs: 0.5 }"), 3), 1);  // keep unset: 0.5
  EXPECT_EQ(CellsKept(Spec("pruning { rungs: 0.5 keep: 0.34 }"), 3), 1);
}

TEST(Pruning, RunsPauseAtTheirNextRungOnlyWhenTheyHaveSomethingToBeComparedWith) {
  const std::vector<State> grid = {RunOf("infonce", 0.1f, 1, State::PENDING), RunOf("infonce", 0.5f, 1, State::PENDING),
                                   RunOf("simple", 0.1f, 1, State::PENDING)};
  EXPECT_DOUBLE_EQ(NextPause(kHalving, grid[0], grid), 0.25);
  EXPECT_DOUBLE_EQ(NextPause(kHalving, RunOf("infonce", 0.1f, 1, State::PENDING, {60}), grid), 0.5);
  EXPECT_DOUBLE_EQ(NextPause(kHalving, RunOf("infonce", 0.1f, 1, State::PENDING, {60, 70}), grid), 0);
  EXPECT_DOUBLE_EQ(NextPause(kHalving, grid[2], grid), 0);  // the only run of its loss
  EXPECT_DOUBLE_EQ(NextPause(SweepSpec(), grid[0], grid), 0);  // pruning off
}

TEST(Pruning, ARungWaitsForEveryLiveRunOfItsGroupThenKeepsTheBestHalf) {
  std::vector<State> grid = {RunOf("infonce", 0.05f, 1, State::AT_RUNG, {50}),
                             RunOf("infonce", 0.1f, 1, State::AT_RUNG, {70}),
                             RunOf("infonce", 0.5f, 1, State::RUNNING),
                             RunOf("infonce", 1.0f, 1, State::AT_RUNG, {55}),
                             RunOf("hard", 0.1f, 1, State::AT_RUNG, {10})};  // another group, alone: kept
  EXPECT_TRUE(DecideRungs(kHalving, grid).prune.empty());  // tau 0.5 has not reached rung 1
  grid[2] = RunOf("infonce", 0.5f, 1, State::AT_RUNG, {65});
  const RungDecisions d = DecideRungs(kHalving, grid);
  EXPECT_EQ(Sorted(d.promote), Sorted({grid[1].id(), grid[2].id(), grid[4].id()}));
  EXPECT_EQ(Sorted(d.prune), Sorted({grid[0].id(), grid[3].id()}));
  ASSERT_EQ(d.log.size(), 2u);
  EXPECT_EQ(d.log[0],
            "rung 1 (0.25 of the steps) of infonce, by kNN top-1: tau 0.1 70.00% kept, tau 0.5 65.00% kept, "
            "tau 1 55.00% pruned, tau 0.05 50.00% pruned");
}

TEST(Pruning, SeedsAreAveragedAndFailedRunsDoNotBlock) {
  const std::vector<State> grid = {RunOf("infonce", 0.1f, 1, State::AT_RUNG, {80}),
                                   RunOf("infonce", 0.1f, 2, State::AT_RUNG, {40}),  // mean 60
                                   RunOf("infonce", 0.5f, 1, State::AT_RUNG, {62}),
                                   RunOf("infonce", 0.5f, 2, State::FAILED)};
  const RungDecisions d = DecideRungs(kHalving, grid);
  EXPECT_EQ(d.promote, std::vector<std::string>{grid[2].id()});
  EXPECT_EQ(Sorted(d.prune), Sorted({grid[0].id(), grid[1].id()}));
  EXPECT_NE(d.log[0].find("tau 0.1 60.00% (mean of 2) pruned"), std::string::npos) << d.log[0];
}

TEST(Pruning, ADecidedRungIsNotDecidedAgainAndTheNextRungRanksTheSurvivorsOnly) {
  std::vector<State> grid = {RunOf("infonce", 0.05f, 1, State::PRUNED, {50}),
                             RunOf("infonce", 0.1f, 1, State::RUNNING, {70}),
                             RunOf("infonce", 0.5f, 1, State::AT_RUNG, {65, 72}),
                             RunOf("infonce", 1.0f, 1, State::PRUNED, {55})};
  EXPECT_TRUE(DecideRungs(kHalving, grid).log.empty());  // tau 0.1 is on its way to rung 2
  grid[1] = RunOf("infonce", 0.1f, 1, State::AT_RUNG, {70, 71});
  const RungDecisions d = DecideRungs(kHalving, grid);
  EXPECT_EQ(d.promote, std::vector<std::string>{grid[2].id()});
  EXPECT_EQ(d.prune, std::vector<std::string>{grid[1].id()});
  EXPECT_EQ(d.log.size(), 1u);
}

TEST(Pruning, TheMetricIsKnnOrLinearOfThePausedEvaluation) {
  RunResult paused;
  paused.mutable_final()->set_knn_top1(71.5);
  paused.mutable_final()->set_linear_top1(80.25);
  EXPECT_DOUBLE_EQ(RungScore(kHalving, paused), 71.5);
  EXPECT_DOUBLE_EQ(RungScore(Spec("pruning { metric: LINEAR rungs: 0.5 }"), paused), 80.25);
  EXPECT_EQ(RungMetricName(Spec("pruning { metric: LINEAR rungs: 0.5 }")), "linear top-1");
}

// A resumed sweep whose spec moved the rungs or changed the metric would rank scores taken at other fractions of a
// run (NextPause counts rungs by index): refused with a sentence. Unscored runs, the same rungs, another keep and
// pruning turned off are fine.
TEST(Pruning, ScoresFromOtherRungsAreRefused) {
  SweepState state;
  *state.add_runs() = RunOf("infonce", 0.1f, 1, State::AT_RUNG, {60});
  const SweepSpec moved = Spec("pruning { rungs: [0.15, 0.3, 0.6] }");
  EXPECT_NO_THROW(CheckRungsUnchanged(kHalving, Spec("pruning { rungs: [0.25, 0.5] keep: 0.3 }"), state, "d"));
  EXPECT_NO_THROW(CheckRungsUnchanged(kHalving, SweepSpec(), state, "d"));
  EXPECT_NO_THROW(CheckRungsUnchanged(SweepSpec(), moved, SweepState(), "d"));
  for (const SweepSpec& before : {kHalving, Spec("pruning { metric: LINEAR rungs: [0.15, 0.3, 0.6] }"), SweepSpec()}) {
    try {
      CheckRungsUnchanged(before, moved, state, "sweep-dir");
      ADD_FAILURE() << "accepted scores of other rungs";
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find("the sweep in sweep-dir scored its runs"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("prunes at rungs 0.15, 0.3, 0.6 by kNN top-1"), std::string::npos)
          << e.what();
    }
  }
}

}  // namespace
}  // namespace tempered
