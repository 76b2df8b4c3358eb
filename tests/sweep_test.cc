// Unit tests of tempered-sweep's pure parts: grid expansion and run ids, spec validation, the state file, the status
// table, the launch commands, and the process helpers (the report's are in report_test.cc).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <google/protobuf/text_format.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/config.h"
#include "common/errors.h"
#include "launch/sweep/attempt_policy.h"
#include "launch/sweep/scheduler.h"
#include "launch/sweep/scheduler_process.h"
#include "launch/sweep/sweep.h"
#include "launch/sweep/sweep_spec.h"
#include "launch/sweep/sweep_state.h"
#include "launch/sweep/sweep_status.h"

namespace tempered {
namespace {

SweepSpec Spec(const std::string& text) {
  SweepSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &spec)) << text;
  return ResolveSweepSpec(spec);
}

std::string ValidationError(const std::string& text, int cores = 2) {
  try {
    ValidateSweepSpec(Spec(text), cores);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

std::string TempDir() {
  char tmpl[] = "/tmp/sweep_test.XXXXXX";
  return ::mkdtemp(tmpl);
}

// Attempt N of run /s/runs/a.
LaunchRequest RequestOfAttempt(int attempt) {
  LaunchRequest r;
  r.run_dir = "/s/runs/a";
  r.config_path = "/s/runs/a/run.pbtxt";
  r.attempt = attempt;
  r.stdout_path = "/s/runs/a/attempt-" + std::to_string(attempt) + ".out";
  r.stderr_path = "/s/runs/a/attempt-" + std::to_string(attempt) + ".err";
  return r;
}

StatusRow Row(const std::vector<std::string>& columns, bool running) {
  StatusRow row;
  std::string* fields[] = {&row.run,   &row.loss,       &row.tau,   &row.state, &row.attempt,
                           &row.epoch, &row.loss_value, &row.images_per_second, &row.eta, &row.knn};
  for (size_t i = 0; i < std::size(fields) && i < columns.size(); ++i) *fields[i] = columns[i];
  row.running = running;
  return row;
}

TEST(SweepSpec, DefaultSweepCoversTheClaims) {
  const SweepSpec spec = ResolveSweepSpec(DefaultSweepSpec());
  ValidateSweepSpec(spec, 2);
  const auto points = ExpandGrid(spec);
  // infonce and hard at 8 temperatures; simple, hard_simple and nearest do not use tau and run once; 2 seeds each.
  ASSERT_EQ(points.size(), 38u);
  std::multiset<std::string> losses;
  std::set<std::string> ids;
  for (const auto& p : points) {
    losses.insert(LossName(p.config.loss().name()));
    ids.insert(p.id);
    EXPECT_EQ(p.config.out_dir(), "");  // set by the scheduler, not part of the identity
    EXPECT_EQ(p.name.substr(p.name.size() - 16), p.id);
  }
  EXPECT_EQ(ids.size(), 38u);
  EXPECT_EQ(losses.count("infonce"), 16u);
  EXPECT_EQ(losses.count("hard"), 16u);
  EXPECT_EQ(losses.count("simple"), 2u);
  EXPECT_EQ(losses.count("hard_simple"), 2u);
  EXPECT_EQ(losses.count("nearest"), 2u);
  EXPECT_EQ(points[0].name.substr(0, 16), "infonce_tau0.05_");
  EXPECT_EQ(points[0].config.data().dataset(), "fashion_mnist");
}

TEST(SweepSpec, RunIdIsFnv1aOfTheConfigWithoutPlacement) {
  // FNV-1a 64 of the empty string is its offset basis; out_dir and threads are not part of the identity.
  RunConfig config;
  EXPECT_EQ(RunId(config), "cbf29ce484222325");
  config.set_out_dir("/somewhere");
  config.set_threads(4);
  config.set_log_every_steps(7);
  config.set_checkpoint_every_steps(100);
  config.set_collective_timeout_seconds(30);
  config.set_gradient_bucket_kib(1024);
  EXPECT_EQ(RunId(config), "cbf29ce484222325");
  RunConfig data;
  data.mutable_data()->set_dataset("cifar10");
  RunConfig more_workers = data;
  more_workers.mutable_data()->set_workers(2);
  more_workers.mutable_data()->set_prefetch_steps(2);
  EXPECT_EQ(RunId(more_workers), RunId(data));
  config.clear_out_dir();
  // Text "seed: 7\n": FNV-1a 64 published test vectors cover single bytes; check one byte of difference matters.
  config.set_seed(7);
  const std::string a = RunId(config);
  config.set_seed(8);
  EXPECT_NE(RunId(config), a);
  config.set_seed(7);
  EXPECT_EQ(RunId(config), a);
}

TEST(SweepSpec, AxesThatALossIgnoresDoNotMultiplyIt) {
  auto points = ExpandGrid(Spec(R"(loss: ["simple", "nearest"] tau: [0.1, 0.2, 0.5])"));
  EXPECT_EQ(points.size(), 2u);
  points = ExpandGrid(Spec(R"(loss: ["infonce", "hard", "hard_simple"] hard_k: [8, 16] tau: [0.1])"));
  ASSERT_EQ(points.size(), 5u);  // infonce 1, hard 2, hard_simple 2
  EXPECT_EQ(points[1].name.substr(0, 15), "hard_tau0.1_k8_");
  EXPECT_EQ(points[1].config.loss().hard_k(), 8);
  EXPECT_EQ(points[0].config.loss().hard_k(), 0);  // infonce keeps the base value
}

TEST(SweepSpec, GenericAxisAndSeedsMultiply) {
  const auto points = ExpandGrid(Spec(R"(
    tau: [0.1, 0.2]
    seed: [1, 2]
    axis { field: "optim.lr" values: ["0.03", "0.1"] })"));
  ASSERT_EQ(points.size(), 8u);
  std::set<std::string> combos;
  for (const auto& p : points) {
    combos.insert(FormatFloat(p.config.loss().tau()) + "/" + std::to_string(p.config.seed()) + "/" +
                  FormatFloat(p.config.optim().lr()));
  }
  EXPECT_EQ(combos.size(), 8u);
  EXPECT_TRUE(combos.count("0.2/2/0.03"));
  EXPECT_NE(points[0].name.find("_seed1_"), std::string::npos);
}

TEST(SweepSpec, BadSpecsAreRejectedWithOneSentence) {
  EXPECT_NE(ValidationError("tau: [0.1, 0]").find("every tau must be > 0"), std::string::npos);
  EXPECT_NE(ValidationError("tau: [-1]").find("-1"), std::string::npos);
  EXPECT_NE(ValidationError(R"(loss: ["infonce", "fancy"])").find("unknown loss 'fancy'"), std::string::npos);
  EXPECT_NE(ValidationError(R"(axis { field: "optim.lr" })").find("axis 'optim.lr' has no values"),
            std::string::npos);
  EXPECT_NE(ValidationError(R"(axis { field: "optim.lrr" values: ["1"] })").find("unknown config field 'optim.lrr'"),
            std::string::npos);
  EXPECT_NE(ValidationError(R"(axis { field: "loss.tau" values: ["1"] })").find("duplicates"), std::string::npos);
  EXPECT_NE(ValidationError(R"(axis { field: "optim.lr" values: ["fast"] })").find("invalid value 'fast'"),
            std::string::npos);
  EXPECT_NE(ValidationError("ranks_per_run: 2 threads_per_rank: 2").find("more than the core budget of 2"),
            std::string::npos);
  EXPECT_EQ(ValidationError("ranks_per_run: 2 threads_per_rank: 2 core_budget: 8"), "");
  EXPECT_EQ(ValidationError("ranks_per_run: 4 backend: SLURM"), "");  // the cluster's cores, not this machine's
  EXPECT_NE(ValidationError(R"(base { out_dir: "x" })").find("base.out_dir"), std::string::npos);
  EXPECT_NE(ValidationError("base { batch_size: 1 }").find("batch_size must be >= 2"), std::string::npos);
  EXPECT_EQ(ValidationError("tau: [0.1, 0.2]"), "");
}

TEST(SweepSpec, FormatFloatGivesTheShortestRoundTrip) {
  EXPECT_EQ(FormatFloat(0.1f), "0.1");
  EXPECT_EQ(FormatFloat(0.05f), "0.05");
  EXPECT_EQ(FormatFloat(1.0f), "1");
  EXPECT_EQ(FormatFloat(0.07f), "0.07");
}

TEST(SweepState, MergeAddsOnlyNewPointsAndTheStateRoundTrips) {
  SweepState state;
  auto points = ExpandGrid(Spec("tau: [0.1, 0.2]"));
  EXPECT_EQ(MergeGrid(points, &state), 2);
  state.mutable_runs(0)->set_state(SweepState::Run::FINISHED);
  state.mutable_runs(0)->set_attempts(1);
  points = ExpandGrid(Spec("tau: [0.1, 0.2, 0.5]"));
  EXPECT_EQ(MergeGrid(points, &state), 1);
  ASSERT_EQ(state.runs_size(), 3);
  EXPECT_EQ(state.runs(0).state(), SweepState::Run::FINISHED);
  EXPECT_EQ(state.runs(2).state(), SweepState::Run::PENDING);
  EXPECT_EQ(state.runs(2).run_dir(), "runs/" + points[2].name);

  const std::string dir = TempDir();
  SweepState loaded;
  EXPECT_FALSE(LoadState(dir, &loaded));
  SaveState(dir, state);
  ASSERT_TRUE(LoadState(dir, &loaded));
  EXPECT_EQ(loaded.SerializeAsString(), state.SerializeAsString());
}

TEST(Status, TableIsAlignedAndCounted) {
  const StatusRow a =
      Row({"infonce_tau0.1_0123", "infonce", "0.1", "running", "1", "1/2", "4.1234", "350", "0:01:05", ""}, true);
  const StatusRow b = Row({"simple_4567", "simple", "-", "finished", "1", "2/2", "3.0000", "360", "-", "71.2"}, false);
  const std::string table = FormatStatusTable({a, b}, 2);
  EXPECT_NE(table.find("run                  loss     tau  state     try  epoch  loss    img/s  ETA      kNN%"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("2 runs: 1 finished, 1 running, 0 pending, 0 failed"), std::string::npos) << table;
  EXPECT_EQ(FormatDuration(3725), "1:02:05");
}

TEST(Scheduler, CommandsCarryTheRootAndBindingFlags) {
  BackendOptions o;
  o.train_binary = "/bin/tempered-train";
  o.ranks_per_run = 2;
  o.threads_per_rank = 3;
  o.slurm.set_partition("debug");
  const LaunchRequest r = RequestOfAttempt(2);
  const auto argv = TrainCommand(o, r);
  std::string joined;
  for (const auto& a : argv) joined += a + " ";
  EXPECT_EQ(joined.find("mpirun --allow-run-as-root --oversubscribe --bind-to none"), 0u) << joined;
  EXPECT_NE(joined.find("-np 2 /bin/tempered-train --config /s/runs/a/run.pbtxt --out_dir /s/runs/a --resume"),
            std::string::npos)
      << joined;
  LaunchRequest paused = r;
  paused.pause_at_fraction = 0.15;  // successive halving's rung: the trainer pauses there
  std::string joined_paused;
  for (const auto& a : TrainCommand(o, paused)) joined_paused += a + " ";
  EXPECT_NE(joined_paused.find("--resume --pause_at_fraction 0.15 "), std::string::npos) << joined_paused;
  EXPECT_EQ(joined.find("pause"), std::string::npos) << joined;
  const std::string script = SlurmScript(o, r, "tempered-a");
  for (const char* line : {"#SBATCH --ntasks=2\n", "#SBATCH --cpus-per-task=3\n", "#SBATCH --partition=debug\n",
                           "#SBATCH --output=/s/runs/a/attempt-2.out\n", "export OMP_NUM_THREADS=3",
                           "'mpirun' '--allow-run-as-root'"}) {
    EXPECT_NE(script.find(line), std::string::npos) << line << "\n" << script;
  }
}

TEST(Scheduler, SlurmScriptAsksForGpusNodesAndTheSignalBeforeTheTimeLimit) {
  BackendOptions o;
  o.train_binary = "/bin/tempered-train";
  o.ranks_per_run = 4;
  const LaunchRequest r = RequestOfAttempt(1);
  // Nothing set: Slurm's defaults, but the signal (default grace 120 s) is always asked for.
  const std::string plain = SlurmScript(o, r, "tempered-a");
  for (const char* option : {"--gpus-per-task", "--nodes", "--ntasks-per-node", "--account", "--qos", "--constraint",
                             "--time", "--partition"}) {
    EXPECT_EQ(plain.find(option), std::string::npos) << option << "\n" << plain;
  }
  EXPECT_NE(plain.find("#SBATCH --signal=B:TERM@120\n"), std::string::npos) << plain;

  o.slurm.set_gpus_per_task(1);
  o.slurm.set_nodes(2);
  o.slurm.set_ntasks_per_node(2);
  o.slurm.set_account("vision");
  o.slurm.set_qos("high");
  o.slurm.set_constraint("a100|h100");
  o.slurm.set_time_limit("04:00:00");
  o.slurm.set_signal_grace_seconds(300);
  const std::string script = SlurmScript(o, r, "tempered-a");
  for (const char* line : {"#SBATCH --ntasks=4\n", "#SBATCH --gpus-per-task=1\n", "#SBATCH --nodes=2\n",
                           "#SBATCH --ntasks-per-node=2\n", "#SBATCH --account=vision\n", "#SBATCH --qos=high\n",
                           "#SBATCH --constraint=a100|h100\n", "#SBATCH --time=04:00:00\n",
                           "#SBATCH --signal=B:TERM@300\n"}) {
    EXPECT_NE(script.find(line), std::string::npos) << line << "\n" << script;
  }
  // sbatch stops reading #SBATCH lines at the first command.
  EXPECT_LT(script.rfind("#SBATCH"), script.find("\nexport")) << script;
  // B: signals the batch shell, which hands mpirun a SIGUSR1 (mpirun forwards that to the ranks; a SIGTERM it answers
  // by killing them) and waits for it.
  EXPECT_NE(script.find("\n'mpirun' '--allow-run-as-root'"), std::string::npos) << script;
  EXPECT_NE(script.find("--resume' &\nmpirun_pid=$!\ntrap 'kill -USR1 $mpirun_pid' TERM\n"), std::string::npos)
      << script;
}

TEST(SweepSpec, BadSlurmSettingsAreRejectedWithOneSentence) {
  EXPECT_NE(ValidationError("backend: SLURM slurm { gpus_per_task: -1 }").find("slurm.gpus_per_task must be >= 0"),
            std::string::npos);
  EXPECT_NE(ValidationError("backend: SLURM slurm { signal_grace_seconds: -5 }").find("signal_grace_seconds"),
            std::string::npos);
  EXPECT_NE(ValidationError("backend: SLURM ranks_per_run: 4 slurm { nodes: 2 ntasks_per_node: 1 }")
                .find("slurm.nodes x slurm.ntasks_per_node = 2 x 1 must equal ranks_per_run (4)"),
            std::string::npos);
  EXPECT_NE(ValidationError("backend: SLURM slurm { account: \"a\\nrm -rf /\" }").find("slurm.account must be one line"),
            std::string::npos);
  EXPECT_EQ(ValidationError("backend: SLURM ranks_per_run: 4 slurm { nodes: 2 ntasks_per_node: 2 gpus_per_task: 1 "
                            "account: \"vision\" qos: \"high\" constraint: \"a100\" signal_grace_seconds: 60 }"),
            "");
}

EndedAttempt Attempt(const std::string& slurm_state, int64_t start_step, int64_t end_step, bool interrupted = false,
                     bool requeued = false) {
  EndedAttempt a;
  a.slurm_state = slurm_state;
  a.start_step = start_step;
  a.end_step = end_step;
  a.interrupted = interrupted;
  a.requeued = requeued;
  return a;
}

TEST(AttemptPolicy, OnlyAStopFromOutsideAfterProgressIsFree) {
  // Stopped by Slurm after the checkpoint moved on: free.
  EXPECT_TRUE(IsFreeAttempt(Attempt("TIMEOUT", 0, 40)));
  EXPECT_TRUE(IsFreeAttempt(Attempt("PREEMPTED", 40, 41)));
  EXPECT_TRUE(IsFreeAttempt(Attempt("NODE_FAIL", 10, 20)));
  EXPECT_TRUE(IsFreeAttempt(Attempt("COMPLETED", 10, 20, /*interrupted=*/false, /*requeued=*/true)));
  // SIGTERM before the time limit (--signal): mpirun exits non-zero, so Slurm says FAILED; the run says INTERRUPTED.
  EXPECT_TRUE(IsFreeAttempt(Attempt("FAILED", 0, 16, /*interrupted=*/true)));
  // The same stops without progress count: the next attempt would get no further.
  EXPECT_FALSE(IsFreeAttempt(Attempt("TIMEOUT", 40, 40)));
  EXPECT_FALSE(IsFreeAttempt(Attempt("PREEMPTED", 40, 0)));  // no result.json: nothing written
  EXPECT_FALSE(IsFreeAttempt(Attempt("FAILED", 16, 16, /*interrupted=*/true)));
  // The run's own failures count, however far it got; so does a job someone cancelled.
  EXPECT_FALSE(IsFreeAttempt(Attempt("FAILED", 0, 40)));
  EXPECT_FALSE(IsFreeAttempt(Attempt("OUT_OF_MEMORY", 0, 40)));
  EXPECT_FALSE(IsFreeAttempt(Attempt("CANCELLED", 0, 40, /*interrupted=*/true)));
  // The local backend: no scheduler stops a run from outside.
  EXPECT_FALSE(IsFreeAttempt(Attempt("", 0, 40, /*interrupted=*/true)));
}

TEST(AttemptPolicy, HeldAndSuspendedJobsAreNamedWithWhatReleasesThem) {
  EXPECT_EQ(SlurmWaitNote("42", "PENDING", "JobHeldUser"), "held: it starts once released (scontrol release 42)");
  EXPECT_EQ(SlurmWaitNote("42", "PENDING", "launch failed requeued held"),
            "held: it starts once released (scontrol release 42)");
  EXPECT_NE(SlurmWaitNote("42", "REQUEUE_HOLD", "").find("scontrol release 42"), std::string::npos);
  EXPECT_NE(SlurmWaitNote("42", "SPECIAL_EXIT", "").find("scontrol release 42"), std::string::npos);
  EXPECT_NE(SlurmWaitNote("42", "RESV_DEL_HOLD", "").find("reservation"), std::string::npos);
  EXPECT_NE(SlurmWaitNote("42", "SUSPENDED", "").find("scontrol resume 42"), std::string::npos);
  EXPECT_NE(SlurmWaitNote("42", "PENDING", "DependencyNeverSatisfied").find("DependencyNeverSatisfied"),
            std::string::npos);
  // Waiting its turn, or running: nothing to say.
  for (const char* reason : {"", "Priority", "Resources", "BeginTime", "QOSMaxJobsPerUserLimit"}) {
    EXPECT_EQ(SlurmWaitNote("42", "PENDING", reason), "") << reason;
  }
  EXPECT_EQ(SlurmWaitNote("42", "RUNNING", ""), "");
  EXPECT_EQ(SlurmWaitNote("42", "TIMEOUT", ""), "");
}

TEST(Status, AHeldSlurmJobShowsInTheTableAndUnderIt) {
  SweepState state;
  MergeGrid(ExpandGrid(Spec("tau: [0.1, 0.2]")), &state);
  for (int i = 0; i < 2; ++i) {
    state.mutable_runs(i)->set_state(SweepState::Run::RUNNING);
    state.mutable_runs(i)->set_slurm_job_id(std::to_string(7 + i));
  }
  state.mutable_runs(0)->set_slurm_state("PENDING");
  state.mutable_runs(0)->set_slurm_reason("JobHeldUser");
  state.mutable_runs(1)->set_slurm_state("RUNNING");
  const std::vector<SweepState::Run> runs(state.runs().begin(), state.runs().end());
  const std::vector<StatusRow> rows = CollectStatus(TempDir(), runs);
  EXPECT_EQ(rows[0].state, "slurm PENDING (JobHeldUser)");
  EXPECT_TRUE(rows[0].running);
  EXPECT_EQ(rows[1].state, "running");
  const std::string waits = FormatSlurmWaits(runs);
  EXPECT_NE(waits.find("Slurm job 7 of " + rows[0].run + " is PENDING (JobHeldUser): held: it starts once released "
                       "(scontrol release 7)"),
            std::string::npos)
      << waits;
  EXPECT_EQ(waits.find("job 8"), std::string::npos) << waits;
  state.mutable_runs(0)->set_slurm_state("RUNNING");
  state.mutable_runs(0)->clear_slurm_reason();
  EXPECT_EQ(FormatSlurmWaits({state.runs().begin(), state.runs().end()}), "");
}

void WriteResult(const std::string& path, RunResult::Status status, int64_t global_steps) {
  RunResult result;
  result.set_status(status);
  result.set_global_steps(global_steps);
  std::ofstream(path) << ToJson(result);
}

TEST(SweepState, CheckpointedStepIsTheLargestOfEveryAttemptsResult) {
  const std::string dir = TempDir();
  EXPECT_EQ(CheckpointedStep(dir), 0);
  EXPECT_EQ(CheckpointedStep(dir + "/missing"), 0);
  WriteResult(dir + "/attempt-1.result.json", RunResult::INTERRUPTED, 24);
  WriteResult(dir + "/attempt-2.result.json", RunResult::FAILED, 16);  // failed before its first checkpoint
  std::ofstream(dir + "/attempt-3.result.json") << "{not json";
  std::ofstream(dir + "/progress.json") << R"({"step": 90})";  // steps after the checkpoint are not kept
  EXPECT_EQ(CheckpointedStep(dir), 24);
  WriteResult(dir + "/result.json", RunResult::RUNNING, 32);
  EXPECT_EQ(CheckpointedStep(dir), 32);
}

TEST(Process, RunCommandCapturesOutputAndExitCode) {
  const CommandResult r = RunCommand({"sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.output, "out\nerr\n");
  const CommandResult missing = RunCommand({"/nonexistent/binary"});
  EXPECT_EQ(missing.exit_code, -1);
  EXPECT_NE(missing.output.find("cannot start /nonexistent/binary"), std::string::npos) << missing.output;
}

TEST(Process, SessionHoldsEveryDescendantAndDiesTogether) {
  const std::string dir = TempDir();
  SpawnOptions spawn;
  // A grandchild in its own process group (as mpirun's ranks are) stays in the session.
  spawn.argv = {"sh", "-c", "set -m; sleep 30 & echo $TEMPERED_X; wait"};
  spawn.env = {{"TEMPERED_X", "hello"}};
  spawn.stdout_path = dir + "/out";
  spawn.stderr_path = dir + "/err";
  const pid_t pid = SpawnInNewSession(spawn);
  ProcessInfo info;
  ASSERT_TRUE(ReadProcessInfo(pid, &info));
  EXPECT_EQ(info.session, pid);
  EXPECT_TRUE(ProcessAlive(pid, info.start_ticks));
  EXPECT_FALSE(ProcessAlive(pid, info.start_ticks + 1));  // same pid, another start: a reused pid
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_GE(SignalSession(pid, 0), 2);
  EXPECT_GE(SignalSession(pid, SIGKILL), 2);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_EQ(DescribeWaitStatus(status), "killed by signal 9 (Killed)");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(SignalSession(pid, 0), 0);
  EXPECT_FALSE(ProcessAlive(pid, info.start_ticks));
  std::string out;
  ASSERT_TRUE(std::getline(*std::make_unique<std::ifstream>(dir + "/out"), out));
  EXPECT_EQ(out, "hello");
}

// An external command that hangs (a Slurm controller that does not answer) is killed at its timeout and says so.
TEST(RunCommandTest, AHungCommandIsKilledAtItsTimeout) {
  const auto start = std::chrono::steady_clock::now();
  const CommandResult hung = RunCommand({"sleep", "30"}, 0.5);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 10);
  EXPECT_TRUE(hung.timed_out);
  EXPECT_EQ(hung.exit_code, -1);
  EXPECT_NE(hung.output.find("sleep did not finish within 0.5 s and was killed"), std::string::npos) << hung.output;
  const CommandResult quick = RunCommand({"echo", "done"}, 30);
  EXPECT_FALSE(quick.timed_out);
  EXPECT_EQ(quick.exit_code, 0);
  EXPECT_EQ(quick.output, "done\n");
}

}  // namespace
}  // namespace tempered
