// The Slurm backend: one sbatch job per attempt, mpirun inside. Job states are read back with squeue -t all (and
// scontrol for a job squeue no longer lists); without slurmdbd there is no sacct, and Slurm forgets a job MinJobAge
// seconds after it ends, after which the run directory alone tells the outcome.
#include <chrono>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "common/config.h"
#include "common/errors.h"
#include "launch/sweep/scheduler.h"
#include "launch/sweep/scheduler_process.h"

namespace tempered {

namespace {

constexpr double kStopTimeoutSeconds = 30;

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

bool IsTerminal(const std::string& state) {
  static const std::set<std::string> kTerminal = {"COMPLETED", "FAILED",        "CANCELLED", "TIMEOUT",
                                                  "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
                                                  "DEADLINE"};
  return kTerminal.count(state) > 0;
}

// The job as scontrol shows it: state "" when Slurm no longer knows the job, "?" when Slurm cannot be asked.
JobState ScontrolJob(const std::string& job_id) {
  const CommandResult r = RunCommand({"scontrol", "show", "job", job_id});
  static const std::regex kState("JobState=([A-Z_]+)"), kReason("Reason=(\\S+)"), kRestarts("Restarts=([0-9]+)");
  std::smatch m;
  JobState job;
  if (r.exit_code == 0 && std::regex_search(r.output, m, kState)) {
    job.state = m[1];
    if (std::regex_search(r.output, m, kReason) && m[1] != "None") job.reason = m[1];
    if (std::regex_search(r.output, m, kRestarts)) job.restarts = std::stoi(m[1]);
  } else if (r.output.find("Invalid job id") == std::string::npos) {
    job.state = "?";
  }
  return job;
}

// job id -> job for every job squeue lists; empty when squeue failed (e.g. an id it no longer knows).
std::map<std::string, JobState> SqueueJobs(const std::vector<std::string>& job_ids) {
  std::string ids;
  for (const auto& id : job_ids) ids += (ids.empty() ? "" : ",") + id;
  // Wide columns, the reason last: it may have spaces ("launch failed requeued held").
  const CommandResult r =
      RunCommand({"squeue", "-h", "-t", "all", "-j", ids, "-O", "JobID:40,State:24,RestartCnt:12,Reason:400"});
  std::map<std::string, JobState> jobs;
  if (r.exit_code != 0) return jobs;
  std::istringstream lines(r.output);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::string id;
    JobState job;
    if (!(fields >> id >> job.state >> job.restarts)) continue;
    std::getline(fields >> std::ws, job.reason);
    while (!job.reason.empty() && job.reason.back() == ' ') job.reason.pop_back();
    if (job.reason == "None") job.reason.clear();
    jobs[id] = job;
  }
  return jobs;
}

// The #SBATCH lines of the spec's Slurm settings that are set (0 and "" leave Slurm's default).
std::string ResourceDirectives(const SweepSpec::Slurm& slurm) {
  std::ostringstream s;
  const std::pair<const char*, int> numbers[] = {
      {"gpus-per-task", slurm.gpus_per_task()}, {"nodes", slurm.nodes()}, {"ntasks-per-node", slurm.ntasks_per_node()}};
  for (const auto& [option, value] : numbers) {
    if (value > 0) s << "#SBATCH --" << option << "=" << value << "\n";
  }
  const std::pair<const char*, std::string> strings[] = {{"partition", slurm.partition()}, {"time", slurm.time_limit()},
                                                         {"account", slurm.account()},     {"qos", slurm.qos()},
                                                         {"constraint", slurm.constraint()}};
  for (const auto& [option, value] : strings) {
    if (!value.empty()) s << "#SBATCH --" << option << "=" << value << "\n";
  }
  return s.str();
}

class SlurmBackend : public Backend {
 public:
  explicit SlurmBackend(const BackendOptions& options) : options_(options) {
    const CommandResult r = RunCommand({"squeue", "-h", "-o", "%i"});
    if (r.exit_code != 0) throw UserError("the slurm backend needs a reachable Slurm: 'squeue' failed: " + r.output);
  }

  void Launch(const LaunchRequest& request, SweepState::Run* run) override {
    const std::string script_path = request.run_dir + "/attempt-" + std::to_string(request.attempt) + ".sbatch";
    const std::string name = request.run_dir.substr(request.run_dir.rfind('/') + 1);
    WriteFileAtomically(script_path, SlurmScript(options_, request, "tempered-" + name));
    std::vector<std::string> argv = {"sbatch", "--parsable"};
    argv.insert(argv.end(), options_.slurm.extra_args().begin(), options_.slurm.extra_args().end());
    argv.push_back(script_path);
    const CommandResult r = RunCommand(argv);
    // --parsable prints "<job id>[;<cluster>]"; warnings (merged from stderr) are on other lines.
    static const std::regex kJobId("^([0-9]+)(;.*)?$");
    std::istringstream lines(r.output);
    for (std::string line; std::getline(lines, line);) {
      std::smatch m;
      if (r.exit_code == 0 && std::regex_match(line, m, kJobId)) {
        run->set_slurm_job_id(m[1]);
        return;
      }
    }
    throw UserError("sbatch " + script_path + " failed: " + r.output);
  }

  std::map<std::string, std::string> Ended(const std::vector<SweepState::Run>& running) override {
    std::vector<std::string> ids;
    for (const auto& run : running) {
      if (!run.slurm_job_id().empty()) ids.push_back(run.slurm_job_id());
    }
    std::map<std::string, JobState> jobs;
    if (!ids.empty()) jobs = SqueueJobs(ids);
    std::map<std::string, std::string> ended;
    job_states_.clear();
    for (const auto& run : running) {
      if (run.slurm_job_id().empty()) {  // e.g. started by the local backend before the spec changed
        ended[run.id()] = "no Slurm job recorded";
        continue;
      }
      auto it = jobs.find(run.slurm_job_id());
      const JobState job = it != jobs.end() ? it->second : ScontrolJob(run.slurm_job_id());
      if (job.state == "?") continue;  // Slurm unreachable: keep waiting rather than retry a run that may be running
      if (job.state.empty()) {
        ended[run.id()] = "Slurm job " + run.slurm_job_id() + " no longer known to Slurm";
        continue;
      }
      job_states_[run.id()] = job;
      if (IsTerminal(job.state)) ended[run.id()] = "Slurm job " + run.slurm_job_id() + " " + job.state;
    }
    return ended;
  }

  std::map<std::string, JobState> JobStates() const override { return job_states_; }

  void Stop(const std::vector<SweepState::Run>& running) override {
    if (running.empty()) return;
    std::vector<std::string> argv = {"scancel"};
    for (const auto& run : running) argv.push_back(run.slurm_job_id());
    RunCommand(argv);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(kStopTimeoutSeconds);
    while (std::chrono::steady_clock::now() < deadline && Ended(running).size() < running.size()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }

  double PollSeconds() const override { return options_.poll_seconds > 0 ? options_.poll_seconds : 2.0; }

 private:
  BackendOptions options_;
  std::map<std::string, JobState> job_states_;  // run id -> its job, as of the last Ended call
};

}  // namespace

int SignalGraceSeconds(const SweepSpec::Slurm& slurm) {
  constexpr int kDefaultSignalGraceSeconds = 120;
  return slurm.signal_grace_seconds() > 0 ? slurm.signal_grace_seconds() : kDefaultSignalGraceSeconds;
}

std::string SlurmScript(const BackendOptions& o, const LaunchRequest& r, const std::string& job_name) {
  std::ostringstream s;
  s << "#!/bin/bash\n"
    << "#SBATCH --job-name=" << job_name << "\n"
    << "#SBATCH --output=" << r.stdout_path << "\n"
    << "#SBATCH --error=" << r.stderr_path << "\n"
    << "#SBATCH --chdir=" << r.run_dir << "\n"
    << "#SBATCH --ntasks=" << o.ranks_per_run << "\n"
    << "#SBATCH --cpus-per-task=" << o.threads_per_rank << "\n"
    << ResourceDirectives(o.slurm)
    << "#SBATCH --signal=B:TERM@" << SignalGraceSeconds(o.slurm) << "\n"
    << "# Written by tempered-sweep: attempt " << r.attempt << " of " << r.run_dir << "\n"
    << "export OMP_NUM_THREADS=" << o.threads_per_rank << " OPENBLAS_NUM_THREADS=" << o.threads_per_rank << "\n"
    << "# Slurm's SIGTERM (--signal=B: before the time limit, a preemption) reaches this shell. mpirun would answer it\n"
    << "# by killing the ranks; SIGUSR1 it forwards to every rank, on every node, and tempered-train stops on it as on\n"
    << "# SIGTERM: each rank finishes its step, the run checkpoints and ends INTERRUPTED.\n";
  for (const std::string& arg : TrainCommand(o, r)) s << ShellQuote(arg) << " ";
  s << "&\n"
    << "mpirun_pid=$!\n"
    << "trap 'kill -USR1 $mpirun_pid' TERM\n"
    << "# wait returns early when the trap runs; wait again until mpirun is gone.\n"
    << "status=0; wait $mpirun_pid || status=$?\n"
    << "while kill -0 $mpirun_pid 2>/dev/null; do status=0; wait $mpirun_pid || status=$?; done\n"
    << "exit $status\n";
  return s.str();
}

std::unique_ptr<Backend> MakeSlurmBackend(const BackendOptions& options) {
  return std::make_unique<SlurmBackend>(options);
}

}  // namespace tempered
