#include "launch/sweep/sweep.h"

#include <signal.h>
#include <unistd.h>

#include <glog/logging.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "common/config.h"
#include "common/errors.h"
#include "common/files.h"
#include "launch/report/report.h"
#include "launch/sweep/attempt_policy.h"
#include "launch/sweep/pruning.h"
#include "launch/sweep/scheduler_process.h"
#include "launch/sweep/sweep_spec.h"
#include "launch/sweep/sweep_state.h"
#include "launch/sweep/sweep_status.h"

namespace tempered {

namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

void OnStopSignal(int signal) { g_stop_signal = signal; }

// Without SA_RESTART, so that the coordinator's sleep ends as soon as a signal arrives.
void InstallStopHandlers() {
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaction(s, &action, nullptr);
}

void SleepFor(double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!g_stop_signal && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

std::string RunName(const SweepState::Run& run) { return run.run_dir().substr(run.run_dir().rfind('/') + 1); }

std::string Summary(const RunResult& r) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), "kNN %.1f%%, linear %.1f%%, uniformity %.3f, tolerance %.3f, %s", r.final().knn_top1(),
                r.final().linear_top1(), r.final().uniformity(), r.final().tolerance(),
                FormatDuration(r.wall_seconds()).c_str());
  return buf;
}

// The last line of a run's stderr that names an error ("tempered-train: error: ..."), or "".
std::string ErrorLine(const std::string& path) {
  std::ifstream in(path);
  std::string line, found;
  while (std::getline(in, line)) {
    if (line.find("error") != std::string::npos || line.find("Error") != std::string::npos) found = line;
  }
  return found.size() > 300 ? found.substr(0, 300) + "..." : found;
}

class Coordinator {
 public:
  explicit Coordinator(const SweepOptions& options)
      : o_(options), display_(stdout, options.interactive, SweepSlots(options.spec, options.machine_cores,
                                                                      options.node_gpus.size())) {
    o_.backend.ranks_per_run = o_.spec.ranks_per_run();
    o_.backend.threads_per_rank = o_.spec.threads_per_rank();
    o_.backend.mpirun_args.assign(o_.spec.mpirun_args().begin(), o_.spec.mpirun_args().end());
    o_.backend.slurm = o_.spec.slurm();
    backend_ = o_.spec.backend() == SweepSpec::SLURM ? MakeSlurmBackend(o_.backend) : MakeLocalBackend(o_.backend);
  }

  int Run() {
    MakeDirectories(o_.sweep_dir + "/runs");
    FileLock lock(o_.sweep_dir + "/.lock", "another tempered-sweep on " + o_.sweep_dir,
                  "wait for it or stop it first");
    InstallStopHandlers();
    Prepare();
    const bool completed = Loop();
    if (!completed) StopRunning();
    display_.Final(CollectStatus(o_.sweep_dir, GridRuns()));
    const std::string report = WriteSweepReport(o_.sweep_dir, o_.spec, GridRuns());
    std::printf("report: %s\n", report.c_str());
    if (!completed) {
      std::printf("interrupted: re-run the same command to resume\n");
      return 128 + g_stop_signal;
    }
    return Count(SweepState::Run::FAILED) > 0 ? 1 : 0;
  }

 private:
  // Loads the state, adds the spec's new points and settles what the state file cannot know: runs that finished
  // while no coordinator watched, and failed runs that this invocation retries.
  void Prepare() {
    LoadState(o_.sweep_dir, &state_);
    CheckRungsUnchanged(state_.spec(), o_.spec, state_, o_.sweep_dir);
    *state_.mutable_spec() = o_.spec;
    state_.set_slots(Slots() == INT_MAX ? -1 : Slots());
    const std::vector<GridPoint> grid = ExpandGrid(o_.spec);
    const int added = MergeGrid(grid, &state_);
    for (const GridPoint& point : grid) grid_ids_.push_back(point.id);
    for (auto& run : *state_.mutable_runs()) {
      if (std::count(grid_ids_.begin(), grid_ids_.end(), run.id())) Reconcile(&run);
    }
    ApplyRungDecisions();
    Save();
    Log("sweep " + o_.sweep_dir + ": " + std::to_string(grid.size()) + " runs (" + std::to_string(added) +
        " new, " + std::to_string(Count(SweepState::Run::FINISHED)) + " finished), " +
        (o_.spec.backend() == SweepSpec::SLURM ? "slurm" : "local") + " backend, " +
        std::to_string(o_.spec.ranks_per_run()) + " ranks x " + std::to_string(o_.spec.threads_per_rank()) +
        " threads per run, " + GpuSummary() + "up to " + (Slots() == INT_MAX ? std::string("all") : std::to_string(Slots())) +
        " at a time");
  }

  void Reconcile(SweepState::Run* run) {
    RunResult result;
    if (ReadRunResult(RunDir(*run), &result) && result.status() == RunResult::FINISHED) {
      if (run->state() != SweepState::Run::FINISHED) Log("found finished " + RunName(*run) + " (result.json)");
      run->set_state(SweepState::Run::FINISHED);
      ClearHandle(run);
    } else if (run->state() == SweepState::Run::FINISHED) {
      Log("the result of " + RunName(*run) + " is gone; running it again");
      run->set_state(SweepState::Run::PENDING);
    } else if (run->state() == SweepState::Run::FAILED) {
      Log("retrying failed " + RunName(*run) + " (last error: " + run->last_error() + ")");
      run->set_state(SweepState::Run::PENDING);
    } else if (!PruningOn(o_.spec) && (run->state() == SweepState::Run::PRUNED ||
                                       run->state() == SweepState::Run::AT_RUNG)) {
      Log("resuming " + RunName(*run) + " (" + (run->state() == SweepState::Run::PRUNED ? "pruned" : "paused") +
          " at global step " +
          std::to_string(CheckpointedStep(RunDir(*run))) + ") to full length: this sweep does not prune");
      run->set_state(SweepState::Run::PENDING);
    }
    if (run->state() == SweepState::Run::RUNNING) {  // the first poll tells whether it still runs
      Log("watching " + RunName(*run) + ", started by an earlier coordinator (" +
          (run->slurm_job_id().empty() ? "pid " + std::to_string(run->pid()) : "Slurm job " + run->slurm_job_id()) +
          (run->gpus().empty() ? "" : ", GPUs " + run->gpus()) + ")");
    }
  }

  // false when a stop signal arrived.
  bool Loop() {
    for (;;) {
      if (g_stop_signal) return false;
      const std::map<std::string, std::string> ended = backend_->Ended(Running());
      NoteJobStates(backend_->JobStates());
      for (const auto& [id, how] : ended) HandleEnded(Find(id), how);
      if (!ended.empty()) ApplyRungDecisions();
      LaunchPending();
      display_.Refresh(CollectStatus(o_.sweep_dir, GridRuns()));
      if (Running().empty() && Count(SweepState::Run::PENDING) == 0) return true;
      SleepFor(backend_->PollSeconds());
    }
  }

  void LaunchPending() {
    SettleForeignWriters();
    for (SweepState::Run* run; Busy() < Slots() && (run = NextPending()) != nullptr;) {
      std::string gpus;
      if (!ReserveGpus(&gpus)) return;  // runs of an earlier coordinator (another gpus_per_rank) hold too many
      Launch(run, gpus);
    }
  }

  // Runs of ours and runs written by a tempered-train this coordinator did not start: both use a slot.
  int Busy() const { return static_cast<int>(Running().size() + foreign_writers_.size()); }

  // A run directory whose out_dir lock is held (kOutDirLockFile) has a writer this coordinator did not start: one
  // launched by a coordinator killed before it saved its state, or by hand. Launching beside it would make two
  // writers of one run, so the run waits, holding a slot, until that writer ends; true when it must wait.
  bool HasForeignWriter(const SweepState::Run& run) {
    if (!FileLockHeld(RunDir(run) + "/" + kOutDirLockFile)) return false;
    if (foreign_writers_.insert(run.id()).second) {
      Log(RunName(run) + " is being written by a tempered-train this coordinator did not start (it holds " +
          run.run_dir() + "/" + kOutDirLockFile + "); waiting for it to end");
    }
    return true;
  }

  // Foreign writers that have ended: their run is finished (result.json) or pending again, to be resumed.
  void SettleForeignWriters() {
    for (auto it = foreign_writers_.begin(); it != foreign_writers_.end();) {
      SweepState::Run* run = Find(*it);
      if (FileLockHeld(RunDir(*run) + "/" + kOutDirLockFile)) {
        ++it;
        continue;
      }
      it = foreign_writers_.erase(it);
      Log("the writer of " + RunName(*run) + " that this coordinator did not start has ended");
      Reconcile(run);
      Save();
    }
  }

  // The GPUs of the next run ("" for a CPU run): the first of the node's that no running run holds. The state is
  // the record of who holds what, so runs started by an earlier coordinator keep theirs and an ended run's are
  // free again once it leaves RUNNING. false when too few are free.
  bool ReserveGpus(std::string* gpus) const {
    const int per_run = o_.spec.ranks_per_run() * LocalGpusPerRank(o_.spec);
    if (per_run == 0) return true;
    GpuSlots slots(o_.node_gpus.gpus);
    for (const auto& running : Running()) slots.Hold(running.gpus());
    *gpus = slots.Reserve(per_run);
    return !gpus->empty();
  }

  std::string GpuSummary() const {
    if (LocalGpusPerRank(o_.spec) == 0) return "";
    return std::to_string(o_.spec.gpus_per_rank()) + " GPU(s) per rank of " + JoinGpuList(o_.node_gpus.gpus) +
           " (" + o_.node_gpus.source + "), ";
  }

  void Launch(SweepState::Run* run, const std::string& gpus) {
    const std::string dir = RunDir(*run);
    MakeDirectories(dir);
    if (HasForeignWriter(*run)) return;  // before anything of the run directory is touched
    RunResult result;
    if (ReadRunResult(dir, &result) && result.status() == RunResult::FINISHED) {  // never run a config twice
      run->set_state(SweepState::Run::FINISHED);
      Save();
      return;
    }
    const int attempt = run->attempts() + 1;
    const double pause = NextPause(o_.spec, *run, GridRuns());
    run->set_start_step(CheckpointedStep(dir));
    // Keep a failed attempt's result for inspection; progress.json would show the old attempt's numbers.
    std::rename((dir + "/result.json").c_str(), (dir + "/attempt-" + std::to_string(attempt - 1) + ".result.json").c_str());
    std::remove((dir + "/progress.json").c_str());
    RunConfig config = run->config();
    config.set_out_dir(dir);
    config.set_threads(o_.spec.threads_per_rank());
    std::string text;
    google::protobuf::TextFormat::PrintToString(config, &text);
    WriteFileAtomically(dir + "/run.pbtxt", text);
    const std::string stem = dir + "/attempt-" + std::to_string(attempt);
    run->set_attempts(attempt);
    ++attempts_now_[run->id()];
    try {
      backend_->Launch({dir, dir + "/run.pbtxt", attempt, stem + ".out", stem + ".err", gpus, pause}, run);
    } catch (const UserError& e) {
      FailAttempt(run, e.what());
      return;
    }
    run->set_state(SweepState::Run::RUNNING);
    run->set_gpus(gpus);
    Save();
    Log("launched " + RunName(*run) + " (attempt " + std::to_string(attempt) +
        (run->slurm_job_id().empty() ? "" : ", Slurm job " + run->slurm_job_id()) +
        (gpus.empty() ? "" : ", GPUs " + gpus) +
        (pause > 0 ? ", to rung " + std::to_string(run->rung_scores_size() + 1) + " at " + FormatFloat(pause) +
                         " of its steps" : "") + ")");
  }

  void HandleEnded(SweepState::Run* run, const std::string& how) {
    RunResult result;
    const bool has_result = ReadRunResult(RunDir(*run), &result);
    EndedAttempt ended;
    ended.slurm_state = run->slurm_state();
    ended.requeued = run->slurm_requeued();
    ended.interrupted = has_result && result.status() == RunResult::INTERRUPTED;
    ended.start_step = run->start_step();
    ended.end_step = has_result ? result.global_steps() : 0;
    ClearHandle(run);
    if (has_result && result.status() == RunResult::FINISHED) {
      run->set_state(SweepState::Run::FINISHED);
      run->clear_last_error();
      Save();
      Log("finished " + RunName(*run) + ": " + Summary(result));
      return;
    }
    if (has_result && result.status() == RunResult::PAUSED) {
      Paused(run, result);
      return;
    }
    if (IsFreeAttempt(ended)) {
      ResumeFree(run, how, ended);
      return;
    }
    const std::string log = "attempt-" + std::to_string(run->attempts()) + ".err";
    std::string error = has_result && !result.error().empty() ? result.error() : ErrorLine(RunDir(*run) + "/" + log);
    FailAttempt(run, how + ": " + (error.empty() ? "no result" : error) + " (see " + run->run_dir() + "/" + log + ")");
  }

  // A run paused at its rung: it waits there for the rest of its group (ApplyRungDecisions). A pause is a success:
  // max_attempts counts the failures after it. A sweep that no longer prunes lets it go on.
  void Paused(SweepState::Run* run, const RunResult& result) {
    attempts_now_[run->id()] = 0;
    run->clear_last_error();
    if (!PruningOn(o_.spec)) {
      run->set_state(SweepState::Run::PENDING);
      Save();
      return;
    }
    run->add_rung_scores(RungScore(o_.spec, result));
    run->set_state(SweepState::Run::AT_RUNG);
    Save();
    char score[64];
    std::snprintf(score, sizeof(score), "%s %.2f%%", RungMetricName(o_.spec).c_str(), RungScore(o_.spec, result));
    Log("paused " + RunName(*run) + " at rung " + std::to_string(run->rung_scores_size()) + " (global step " +
        std::to_string(result.global_steps()) + " of " + std::to_string(result.total_steps()) + "): " + score);
  }

  // Successive halving: the rungs every run of their group has reached are decided (launch/sweep/pruning.h).
  void ApplyRungDecisions() {
    const RungDecisions decisions = DecideRungs(o_.spec, GridRuns());
    for (const std::string& id : decisions.promote) Find(id)->set_state(SweepState::Run::PENDING);
    for (const std::string& id : decisions.prune) Find(id)->set_state(SweepState::Run::PRUNED);
    for (const std::string& line : decisions.log) Log(line);
    if (!decisions.log.empty()) Save();
  }

  // An attempt stopped from outside after progress (IsFreeAttempt): it runs again from its checkpoint, and this
  // invocation's count of its attempts gives the attempt back.
  void ResumeFree(SweepState::Run* run, const std::string& how, const EndedAttempt& ended) {
    int& attempts = attempts_now_[run->id()];
    if (attempts > 0) --attempts;
    const std::string steps = "global step " + std::to_string(ended.start_step) + " to " +
                              std::to_string(ended.end_step);
    run->set_last_error(how + (ended.interrupted ? " (the run checkpointed and stopped)" : "") + " after " + steps);
    run->set_state(SweepState::Run::PENDING);
    Save();
    Log("attempt " + std::to_string(run->attempts()) + " of " + RunName(*run) + ": " + run->last_error() +
        ": stopped from outside after progress, resuming from its checkpoint (not counted toward max_attempts)");
  }

  // Keeps what Slurm says of each running run's job (for --status), and logs a requeue and any state that waits on
  // someone (a hold, a suspension) as it comes and goes: a sweep never waits on a held job in silence.
  void NoteJobStates(const std::map<std::string, JobState>& jobs) {
    bool changed = false;
    for (const auto& [id, job] : jobs) {
      SweepState::Run* run = Find(id);
      const std::string name = "Slurm job " + run->slurm_job_id() + " of " + RunName(*run);
      if (job.restarts > 0 && !run->slurm_requeued()) {
        run->set_slurm_requeued(true);
        changed = true;
        Log(name + " was requeued by Slurm: it runs again and resumes from its checkpoint");
      }
      if (job.state == run->slurm_state() && job.reason == run->slurm_reason()) continue;
      const std::string before = SlurmWaitNote(run->slurm_job_id(), run->slurm_state(), run->slurm_reason());
      const std::string note = SlurmWaitNote(run->slurm_job_id(), job.state, job.reason);
      run->set_slurm_state(job.state);
      run->set_slurm_reason(job.reason);
      changed = true;
      const std::string state = job.state + (job.reason.empty() ? "" : " (" + job.reason + ")");
      if (!note.empty()) Log(name + " is " + state + ": " + note);
      if (note.empty() && !before.empty()) Log(name + " is " + state + " now");
    }
    if (changed) Save();
  }

  void FailAttempt(SweepState::Run* run, const std::string& error) {
    run->set_last_error(error);
    const bool retry = attempts_now_[run->id()] < o_.spec.max_attempts();
    run->set_state(retry ? SweepState::Run::PENDING : SweepState::Run::FAILED);
    Save();
    Log((retry ? "attempt " + std::to_string(run->attempts()) + " of " : "FAILED ") + RunName(*run) + ": " +
        error + (retry ? "; retrying" : ""));
  }

  // Stops the running runs; one that finished meanwhile counts as finished, the others run again next time.
  void StopRunning() {
    const std::vector<SweepState::Run> running = Running();
    Log(std::string("stopping (") + strsignal(g_stop_signal) + "): " + std::to_string(running.size()) +
        " running runs");
    backend_->Stop(running);
    for (const auto& stopped : running) {
      SweepState::Run* run = Find(stopped.id());
      RunResult result;
      const bool finished = ReadRunResult(RunDir(*run), &result) && result.status() == RunResult::FINISHED;
      run->set_state(finished ? SweepState::Run::FINISHED : SweepState::Run::PENDING);
      if (!finished) run->set_last_error(std::string("stopped by ") + strsignal(g_stop_signal));
      // A Slurm job cancelled while still queued never started (Slurm creates its output file at the start):
      // it was no attempt, and the next one reuses its number.
      const std::string out = RunDir(*run) + "/attempt-" + std::to_string(run->attempts()) + ".out";
      if (!finished && ::access(out.c_str(), F_OK) != 0) run->set_attempts(run->attempts() - 1);
      ClearHandle(run);
    }
    Save();
  }

  int Slots() const { return SweepSlots(o_.spec, o_.machine_cores, o_.node_gpus.size()); }

  std::vector<SweepState::Run> GridRuns() const {
    std::map<std::string, const SweepState::Run*> by_id;
    for (const auto& run : state_.runs()) by_id[run.id()] = &run;
    std::vector<SweepState::Run> runs;
    for (const auto& id : grid_ids_) runs.push_back(*by_id.at(id));
    return runs;
  }

  std::vector<SweepState::Run> Running() const {
    std::vector<SweepState::Run> running;
    for (const auto& run : GridRuns()) {
      if (run.state() == SweepState::Run::RUNNING) running.push_back(run);
    }
    return running;
  }

  int Count(SweepState::Run::State state) const {
    const auto runs = GridRuns();
    return static_cast<int>(std::count_if(runs.begin(), runs.end(), [&](const auto& r) { return r.state() == state; }));
  }

  SweepState::Run* NextPending() {
    for (const auto& id : grid_ids_) {
      SweepState::Run* run = Find(id);
      if (run->state() == SweepState::Run::PENDING && !foreign_writers_.count(id)) return run;
    }
    return nullptr;
  }

  SweepState::Run* Find(const std::string& id) {
    for (auto& run : *state_.mutable_runs()) {
      if (run.id() == id) return &run;
    }
    CHECK(false) << "run " << id << " is not in the sweep state";
    return nullptr;
  }

  // Forgets what identified the ended attempt (sweep.log keeps its pid or job id).
  static void ClearHandle(SweepState::Run* run) {
    run->clear_slurm_job_id();
    run->clear_pid();
    run->clear_pid_start_ticks();
    run->clear_host();
    run->clear_gpus();
    run->clear_slurm_state();
    run->clear_slurm_reason();
    run->clear_slurm_requeued();
  }

  std::string RunDir(const SweepState::Run& run) const { return o_.sweep_dir + "/" + run.run_dir(); }
  void Save() { SaveState(o_.sweep_dir, state_); }
  void Log(const std::string& line) {
    AppendEvent(o_.sweep_dir, line);
    display_.Event(line);
  }

  SweepOptions o_;
  StatusDisplay display_;
  std::unique_ptr<Backend> backend_;
  SweepState state_;
  std::vector<std::string> grid_ids_;        // the current spec's points, in grid order
  std::map<std::string, int> attempts_now_;  // attempts started by this invocation (max_attempts applies to them)
  std::set<std::string> foreign_writers_;     // pending runs whose directory a writer we did not start holds
};

}  // namespace

int SweepSlots(const SweepSpec& spec, int machine_cores, int node_gpus) {
  const int per_run = spec.ranks_per_run() * spec.threads_per_rank();
  const int budget = spec.core_budget() > 0 ? spec.core_budget() : (spec.backend() == SweepSpec::LOCAL ? machine_cores : 0);
  int slots = budget > 0 ? std::max(1, budget / per_run) : INT_MAX;
  if (spec.max_parallel_runs() > 0) slots = std::min(slots, spec.max_parallel_runs());
  if (LocalGpusPerRank(spec) > 0) slots = std::min(slots, node_gpus / (spec.ranks_per_run() * LocalGpusPerRank(spec)));
  return slots;
}

int RunSweep(const SweepOptions& options) { return Coordinator(options).Run(); }

std::string FormatSlurmWaits(const std::vector<SweepState::Run>& runs) {
  std::string text;
  for (const auto& run : runs) {
    if (run.state() != SweepState::Run::RUNNING) continue;
    const std::string note = SlurmWaitNote(run.slurm_job_id(), run.slurm_state(), run.slurm_reason());
    if (note.empty()) continue;
    text += "Slurm job " + run.slurm_job_id() + " of " + RunName(run) + " is " + run.slurm_state() +
            (run.slurm_reason().empty() ? "" : " (" + run.slurm_reason() + ")") + ": " + note + "\n";
  }
  return text.empty() ? "" : "waiting on someone (as the coordinator last saw it):\n" + text;
}

void PrintSweepStatus(const std::string& sweep_dir) {
  SweepState state;
  if (!LoadState(sweep_dir, &state)) {
    throw UserError("no sweep in " + sweep_dir + " (" + StatePath(sweep_dir) + " does not exist)");
  }
  // The latest spec's grid, in order; runs of earlier specs stay in the state but are not shown.
  std::vector<SweepState::Run> runs;
  for (const GridPoint& point : ExpandGrid(state.spec())) {
    for (const auto& run : state.runs()) {
      if (run.id() == point.id) runs.push_back(run);
    }
  }
  // None found: the ids were made by another tempered-train's defaults; show every run the state knows.
  if (runs.empty()) runs.assign(state.runs().begin(), state.runs().end());
  const std::vector<StatusRow> rows = CollectStatus(sweep_dir, runs);
  // The coordinator's slots; for a state from before they were recorded, this machine's (GPUs as it sees them now,
  // asked only of GPU sweeps).
  int slots = state.slots() < 0 ? INT_MAX : state.slots();
  if (slots == 0) {
    const int gpus = LocalGpusPerRank(state.spec()) > 0 ? DetectNodeGpus("").size() : 0;
    slots = SweepSlots(state.spec(), MachineCores(), gpus);
  }
  std::fputs(FormatStatusTable(rows, slots).c_str(), stdout);
  std::fputs(FormatSlurmWaits(runs).c_str(), stdout);
  std::fputs(FormatBestRuns(rows).c_str(), stdout);
  if (::access((sweep_dir + "/report.md").c_str(), F_OK) == 0) std::printf("report: %s/report.md\n", sweep_dir.c_str());
}

}  // namespace tempered
