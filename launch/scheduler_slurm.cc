// The Slurm backend: one sbatch job per attempt, mpirun inside. Job states are read back with squeue -t all (and
// scontrol for a job squeue no longer lists); without slurmdbd there is no sacct, and Slurm forgets a job MinJobAge
// seconds after it ends, after which the run directory alone tells the outcome.
#include <chrono>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "launch/scheduler.h"
#include "launch/scheduler_process.h"
#include "trainer/config.h"
#include "trainer/errors.h"

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

// The job's state from scontrol: "" when Slurm no longer knows the job, "?" when Slurm cannot be asked.
std::string ScontrolState(const std::string& job_id) {
  const CommandResult r = RunCommand({"scontrol", "show", "job", job_id});
  static const std::regex kState("JobState=([A-Z_]+)");
  std::smatch m;
  if (r.exit_code == 0 && std::regex_search(r.output, m, kState)) return m[1];
  if (r.output.find("Invalid job id") != std::string::npos) return "";
  return "?";
}

// job id -> state for every job squeue lists; empty when squeue failed (e.g. an id it no longer knows).
std::map<std::string, std::string> SqueueStates(const std::vector<std::string>& job_ids) {
  std::string ids;
  for (const auto& id : job_ids) ids += (ids.empty() ? "" : ",") + id;
  const CommandResult r = RunCommand({"squeue", "-h", "-t", "all", "-j", ids, "-o", "%i %T"});
  std::map<std::string, std::string> states;
  if (r.exit_code != 0) return states;
  std::istringstream lines(r.output);
  for (std::string id, state; lines >> id >> state;) states[id] = state;
  return states;
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
    std::map<std::string, std::string> states;
    if (!ids.empty()) states = SqueueStates(ids);
    std::map<std::string, std::string> ended;
    for (const auto& run : running) {
      if (run.slurm_job_id().empty()) {  // e.g. started by the local backend before the spec changed
        ended[run.id()] = "no Slurm job recorded";
        continue;
      }
      auto it = states.find(run.slurm_job_id());
      const std::string state = it != states.end() ? it->second : ScontrolState(run.slurm_job_id());
      if (state == "?") continue;  // Slurm unreachable: keep waiting rather than retry a run that may be running
      if (state.empty()) {
        ended[run.id()] = "Slurm job " + run.slurm_job_id() + " no longer known to Slurm";
      } else if (IsTerminal(state)) {
        ended[run.id()] = "Slurm job " + run.slurm_job_id() + " " + state;
      }
    }
    return ended;
  }

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
};

}  // namespace

std::string SlurmScript(const BackendOptions& o, const LaunchRequest& r, const std::string& job_name) {
  std::ostringstream s;
  s << "#!/bin/bash\n"
    << "#SBATCH --job-name=" << job_name << "\n"
    << "#SBATCH --output=" << r.stdout_path << "\n"
    << "#SBATCH --error=" << r.stderr_path << "\n"
    << "#SBATCH --chdir=" << r.run_dir << "\n"
    << "#SBATCH --ntasks=" << o.ranks_per_run << "\n"
    << "#SBATCH --cpus-per-task=" << o.threads_per_rank << "\n";
  if (!o.slurm.partition().empty()) s << "#SBATCH --partition=" << o.slurm.partition() << "\n";
  if (!o.slurm.time_limit().empty()) s << "#SBATCH --time=" << o.slurm.time_limit() << "\n";
  s << "# Written by tempered-sweep: attempt " << r.attempt << " of " << r.run_dir << "\n"
    << "export OMP_NUM_THREADS=" << o.threads_per_rank << " OPENBLAS_NUM_THREADS=" << o.threads_per_rank << "\n"
    << "exec";
  for (const std::string& arg : TrainCommand(o, r)) s << " " << ShellQuote(arg);
  s << "\n";
  return s.str();
}

std::unique_ptr<Backend> MakeSlurmBackend(const BackendOptions& options) {
  return std::make_unique<SlurmBackend>(options);
}

}  // namespace tempered
