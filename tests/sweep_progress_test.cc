// Unit tests of the sweep's progress as a whole (launch/sweep/sweep_status.h): the counts, the slots, the ETA from the
// finished runs' durations (closed forms of the list schedule), the progress line and bar, the best run per loss,
// and when the log mode prints the line.
#include <gtest/gtest.h>

#include <google/protobuf/text_format.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "launch/sweep/sweep.h"
#include "launch/sweep/sweep_spec.h"
#include "launch/sweep/sweep_status.h"

namespace tempered {
namespace {

StatusRow Row(const std::string& run, const std::string& loss, const std::string& state) {
  StatusRow row;
  row.run = run;
  row.loss = loss;
  row.tau = "0.1";
  row.state = state;
  row.running = state == "running";
  return row;
}

StatusRow Finished(const std::string& run, const std::string& loss, double wall_seconds, double knn) {
  StatusRow row = Row(run, loss, "finished");
  row.wall_seconds = wall_seconds;
  row.knn_top1 = knn;
  return row;
}

TEST(SweepProgress, ScheduleStartsEachPendingRunOnTheFirstSlotToFreeUp) {
  // Slots free at 10 and 30 s; three 60 s runs start at 10, 30 and 70: the last ends at 130.
  EXPECT_DOUBLE_EQ(ScheduledSeconds({10, 30}, 3, 60, 2), 130);
  // Nothing running: ceil(4 / 3) rounds of 100 s.
  EXPECT_DOUBLE_EQ(ScheduledSeconds({}, 4, 100, 3), 200);
  // No limit: every pending run starts now; the longest running one ends last.
  EXPECT_DOUBLE_EQ(ScheduledSeconds({80}, 5, 50, INT_MAX), 80);
  EXPECT_DOUBLE_EQ(ScheduledSeconds({}, 0, 50, 2), 0);
  EXPECT_DOUBLE_EQ(ScheduledSeconds({}, 3, 50, 1), 150);
}

TEST(SweepProgress, EtaComesFromTheFinishedRunsMeanDuration) {
  std::vector<StatusRow> rows = {Finished("a", "infonce", 100, 70), Finished("b", "infonce", 200, 72),
                                 Row("c", "hard", "running"), Row("d", "hard", "pending"),
                                 Row("e", "hard", "pending"), Row("f", "hard", "failed")};
  rows[2].fraction_done = 0.5;  // half its steps: 75 s of the 150 s mean left
  rows[2].eta_seconds = 10;     // its own ETA covers only the steps; the mean's share is longer
  const SweepProgress p = SummarizeProgress(rows, 2);
  EXPECT_EQ(p.total, 6);
  EXPECT_EQ(p.finished, 2);
  EXPECT_EQ(p.running, 1);
  EXPECT_EQ(p.pending, 2);
  EXPECT_EQ(p.failed, 1);
  EXPECT_EQ(p.timed_runs, 2);
  EXPECT_DOUBLE_EQ(p.mean_run_seconds, 150);
  // Slots free at 75 and 0: pending runs end at 150 and 225.
  EXPECT_DOUBLE_EQ(p.eta_seconds, 225);
  EXPECT_EQ(FormatProgressLine(p),
            "6 runs: 2 finished, 1 running, 2 pending, 1 failed; slots 1/2 in use; ETA 0:03:45 (mean of 2 finished "
            "runs: 0:02:30)");
  EXPECT_EQ(ProgressBar(p, 12), "[######......] 3/6 runs done (50%)");
}

TEST(SweepProgress, RunningRunsOwnEtaIsTheFloor) {
  std::vector<StatusRow> rows = {Finished("a", "infonce", 100, 70), Row("b", "infonce", "running")};
  rows[1].fraction_done = 0.9;  // 10 s by the mean
  rows[1].eta_seconds = 40;     // but its steps alone need 40
  EXPECT_DOUBLE_EQ(SummarizeProgress(rows, 1).eta_seconds, 40);
}

TEST(SweepProgress, EtaIsUnknownUntilARunFinishesAndZeroWhenDone) {
  const SweepProgress none = SummarizeProgress({Row("a", "infonce", "running"), Row("b", "hard", "pending")}, 1);
  EXPECT_LT(none.eta_seconds, 0);
  EXPECT_EQ(FormatProgressLine(none),
            "2 runs: 0 finished, 1 running, 1 pending, 0 failed; slots 1/1 in use; ETA once a run has finished");
  const SweepProgress done = SummarizeProgress({Finished("a", "infonce", 61, 70), Row("b", "hard", "failed")}, 1);
  EXPECT_EQ(FormatProgressLine(done),
            "2 runs: 1 finished, 0 running, 0 pending, 1 failed; slots 0/1 in use; ETA 0:00:00 (mean of 1 finished "
            "run: 0:01:01)");
  const SweepProgress unlimited = SummarizeProgress({Row("a", "infonce", "running")}, INT_MAX);
  EXPECT_NE(FormatProgressLine(unlimited).find("slots 1 in use (no limit)"), std::string::npos);
}

TEST(SweepProgress, PrunedRunsAreDoneAndRunsAtARungArePending) {
  const SweepProgress p = SummarizeProgress({Finished("a", "infonce", 100, 70), Row("b", "infonce", "pruned"),
                                             Row("c", "infonce", "at_rung"), Row("d", "infonce", "pruned")},
                                            2);
  EXPECT_EQ(FormatProgressLine(p),
            "4 runs: 1 finished, 0 running, 1 pending, 0 failed, 2 pruned; slots 0/2 in use; ETA 0:01:40 (mean of 1 "
            "finished run: 0:01:40)");
  EXPECT_EQ(ProgressBar(p, 4), "[###.] 3/4 runs done (75%)");
}

TEST(SweepProgress, StatusTableEndsWithTheProgressLine) {
  const std::string table = FormatStatusTable({Finished("a", "infonce", 100, 70), Row("b", "hard", "pending")}, 1);
  const std::string last = "2 runs: 1 finished, 0 running, 1 pending, 0 failed; slots 0/1 in use; ETA 0:01:40";
  EXPECT_NE(table.find("\n" + last), std::string::npos) << table;
}

TEST(SweepProgress, BestRunPerLossByFinalKnn) {
  StatusRow infonce_best = Finished("infonce_tau0.07", "infonce", 10, 81.7);
  infonce_best.tau = "0.07";
  const std::vector<StatusRow> rows = {Finished("infonce_tau0.5", "infonce", 10, 78.8), infonce_best,
                                       Finished("hard_tau0.5", "hard", 10, 83.04), Row("simple", "simple", "pending"),
                                       Row("nearest", "nearest", "failed")};
  EXPECT_EQ(FormatBestRuns(rows),
            "best run so far per loss, by final kNN top-1 (result.json final.knn_top1):\n"
            "  infonce  81.70%  tau 0.07  infonce_tau0.07\n"
            "  hard     83.04%  tau 0.1  hard_tau0.5\n");
  EXPECT_EQ(FormatBestRuns({Row("a", "infonce", "running")}), "");
}

TEST(SweepProgress, SlotsAreTheCoreBudgetOverEachRunsCores) {
  auto spec = [](const std::string& text) {
    SweepSpec s;
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &s)) << text;
    return ResolveSweepSpec(s);
  };
  EXPECT_EQ(SweepSlots(spec("ranks_per_run: 2 threads_per_rank: 1"), 2), 1);
  EXPECT_EQ(SweepSlots(spec("ranks_per_run: 1 threads_per_rank: 1"), 2), 2);
  EXPECT_EQ(SweepSlots(spec("ranks_per_run: 2 threads_per_rank: 1 core_budget: 8"), 2), 4);
  EXPECT_EQ(SweepSlots(spec("ranks_per_run: 1 threads_per_rank: 1 core_budget: 8 max_parallel_runs: 3"), 2), 3);
  EXPECT_EQ(SweepSlots(spec("backend: SLURM ranks_per_run: 1 threads_per_rank: 1"), 2), INT_MAX);
}

// Log mode (not a terminal): the progress line when a run starts or ends, not at every poll.
TEST(SweepProgress, LogModePrintsTheLineWhenTheCountsChange) {
  char* buffer = nullptr;
  size_t size = 0;
  std::FILE* out = open_memstream(&buffer, &size);
  ASSERT_NE(out, nullptr);
  {
    StatusDisplay display(out, /*interactive=*/false, 2);
    std::vector<StatusRow> rows = {Row("a", "infonce", "running"), Row("b", "hard", "pending")};
    display.Refresh(rows);
    display.Refresh(rows);  // the same counts within 30 s: nothing
    rows[0] = Finished("a", "infonce", 30, 70);
    rows[1] = Row("b", "hard", "running");
    display.Refresh(rows);
  }
  std::fclose(out);
  const std::string text(buffer, size);
  std::free(buffer);
  EXPECT_EQ(text,
            "sweep progress: 2 runs: 0 finished, 1 running, 1 pending, 0 failed; slots 1/2 in use; ETA once a run has "
            "finished\n"
            "sweep progress: 2 runs: 1 finished, 1 running, 0 pending, 0 failed; slots 1/2 in use; ETA 0:00:30 (mean "
            "of 1 finished run: 0:00:30)\n");
}

}  // namespace
}  // namespace tempered
