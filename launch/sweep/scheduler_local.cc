// The local backend: mpirun processes on this machine, each in its own session.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <thread>

#include "common/errors.h"
#include "launch/sweep/scheduler.h"
#include "launch/sweep/scheduler_process.h"

namespace tempered {

std::vector<std::string> TrainCommand(const BackendOptions& o, const LaunchRequest& r) {
  std::vector<std::string> argv = {o.mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
                                   "-x", "OMP_NUM_THREADS", "-x", "OPENBLAS_NUM_THREADS"};
  if (!r.gpus.empty()) argv.insert(argv.end(), {"-x", "CUDA_VISIBLE_DEVICES"});
  argv.insert(argv.end(), o.mpirun_args.begin(), o.mpirun_args.end());
  for (const std::string& a : {std::string("-np"), std::to_string(o.ranks_per_run), o.train_binary,
                               std::string("--config"), r.config_path, std::string("--out_dir"), r.run_dir,
                               std::string("--resume")}) {
    argv.push_back(a);
  }
  if (r.pause_at_fraction > 0) {
    char fraction[32];
    std::snprintf(fraction, sizeof(fraction), "%.9g", r.pause_at_fraction);
    argv.insert(argv.end(), {"--pause_at_fraction", fraction});
  }
  return argv;
}

namespace {

constexpr double kStopGraceSeconds = 10;

class LocalBackend : public Backend {
 public:
  explicit LocalBackend(const BackendOptions& options) : options_(options), host_(HostName()) {
    if (RunCommand({options.mpirun, "--version"}).exit_code != 0) {
      throw UserError("the local backend needs mpirun (Open MPI): '" + options.mpirun + " --version' failed");
    }
  }

  void Launch(const LaunchRequest& request, SweepState::Run* run) override {
    SpawnOptions spawn;
    spawn.argv = TrainCommand(options_, request);
    // One BLAS / OpenMP thread pool of threads_per_rank per rank, not one per core (2 runs x 2 ranks would
    // otherwise each start a pool the size of the machine).
    const std::string threads = std::to_string(options_.threads_per_rank);
    spawn.env = {{"OMP_NUM_THREADS", threads}, {"OPENBLAS_NUM_THREADS", threads}};
    if (!request.gpus.empty()) spawn.env.emplace_back("CUDA_VISIBLE_DEVICES", request.gpus);
    spawn.stdout_path = request.stdout_path;
    spawn.stderr_path = request.stderr_path;
    const pid_t pid = SpawnInNewSession(spawn);
    ProcessInfo info;
    ReadProcessInfo(pid, &info);  // the child exists until we reap it, so this succeeds
    run->set_pid(pid);
    run->set_pid_start_ticks(info.start_ticks);
    run->set_host(host_);
    children_.insert(pid);
  }

  std::map<std::string, std::string> Ended(const std::vector<SweepState::Run>& running) override {
    std::map<std::string, std::string> ended;
    for (const auto& run : running) {
      std::string how;
      if (HasEnded(run, &how)) {
        // mpirun gone: SIGKILL whatever it left behind (ranks of a killed mpirun keep running, ENV-tested).
        SignalSession(static_cast<pid_t>(run.pid()), SIGKILL);
        ended[run.id()] = how;
      }
    }
    return ended;
  }

  // SIGUSR1, not SIGTERM: mpirun (Open MPI 4.1) forwards SIGUSR1 to every rank, which finishes its step,
  // checkpoints and ends INTERRUPTED; a SIGTERM it answers by killing the ranks about a second later, which can cut
  // a checkpoint short.
  void Stop(const std::vector<SweepState::Run>& running) override {
    for (const auto& run : running) {
      if (ProcessAlive(static_cast<pid_t>(run.pid()), run.pid_start_ticks())) ::kill(run.pid(), SIGUSR1);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(kStopGraceSeconds);
    std::vector<SweepState::Run> left = running;
    while (!left.empty() && std::chrono::steady_clock::now() < deadline) {
      const auto ended = Ended(left);
      std::vector<SweepState::Run> still;
      for (const auto& run : left) {
        if (!ended.count(run.id())) still.push_back(run);
      }
      left = still;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    for (const auto& run : left) {
      SignalSession(static_cast<pid_t>(run.pid()), SIGKILL);
      ReapIfChild(static_cast<pid_t>(run.pid()));
    }
  }

  double PollSeconds() const override { return options_.poll_seconds > 0 ? options_.poll_seconds : 0.5; }

 private:
  bool HasEnded(const SweepState::Run& run, std::string* how) {
    const pid_t pid = static_cast<pid_t>(run.pid());
    if (children_.count(pid)) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) != pid) return false;
      children_.erase(pid);
      *how = "mpirun " + DescribeWaitStatus(status);
      return true;
    }
    // Started by an earlier coordinator: we cannot wait for it, only watch it.
    if (run.host() != host_) {
      *how = "started on host " + run.host() + ", which this coordinator cannot watch";
      return true;
    }
    if (ProcessAlive(pid, run.pid_start_ticks())) return false;
    *how = "ended while no coordinator was watching it";
    return true;
  }

  void ReapIfChild(pid_t pid) {
    if (children_.erase(pid)) {
      int status = 0;
      ::waitpid(pid, &status, 0);
    }
  }

  BackendOptions options_;
  std::string host_;
  std::set<pid_t> children_;  // pids this coordinator started and has not reaped yet
};

}  // namespace

std::unique_ptr<Backend> MakeLocalBackend(const BackendOptions& options) {
  return std::make_unique<LocalBackend>(options);
}

}  // namespace tempered
