// Backends that run one attempt of a grid point: `local` (mpirun processes on this machine) and `slurm` (one sbatch
// job per attempt with mpirun inside). Both run the same command line (TrainCommand) and report only whether an
// attempt has ended: its outcome is read from the run directory's result.json by the coordinator.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "proto/tempered.pb.h"

namespace tempered {

struct BackendOptions {
  std::string train_binary;              // absolute path of tempered-train (or a wrapper taking its flags)
  std::string mpirun = "mpirun";
  int ranks_per_run = 1;
  int threads_per_rank = 1;
  std::vector<std::string> mpirun_args;  // SweepSpec.mpirun_args
  SweepSpec::Slurm slurm;
  double poll_seconds = 0;               // 0: the backend's default (local 0.5 s, Slurm 2 s)
};

// One attempt of one run. Paths are absolute.
struct LaunchRequest {
  std::string run_dir;
  std::string config_path;  // RUN_DIR/run.pbtxt: the fully resolved RunConfig
  int attempt = 1;          // 1-based, over all invocations
  std::string stdout_path;  // RUN_DIR/attempt-N.out
  std::string stderr_path;  // RUN_DIR/attempt-N.err
  std::string gpus;         // the run's GPUs as CUDA_VISIBLE_DEVICES ("0,1"); "" for a CPU run (left as inherited)
  double pause_at_fraction = 0;  // tempered-train --pause_at_fraction: successive halving's next rung (0: none)
};

// mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS
//        [-x CUDA_VISIBLE_DEVICES] [mpirun_args] -np R TRAIN --config RUN_DIR/run.pbtxt --out_dir RUN_DIR --resume
//        [--pause_at_fraction F]
// -x CUDA_VISIBLE_DEVICES when the request has GPUs: ranks on this node would inherit it anyway, but only -x carries
// it to ranks that mpirun starts on other hosts (mpirun_args may name some).
// --resume: an attempt after an interrupted or killed one continues from the run's last checkpoint (the run
// directory belongs to one config, so any checkpoint in it is this config's); without one it starts afresh.
// --bind-to none: with -np <= 2 Open MPI binds rank 0 to core 0 in every mpirun, so two concurrent runs would share
// one core. --allow-run-as-root: as root mpirun otherwise refuses and still exits 0 (docs/cpu.md).
std::vector<std::string> TrainCommand(const BackendOptions& options, const LaunchRequest& request);

// What the scheduler says of the job of a run's current attempt (Slurm; the local backend has no jobs).
struct JobState {
  std::string state;   // Slurm's job state: PENDING, RUNNING, TIMEOUT, REQUEUE_HOLD, ...
  std::string reason;  // why it is in that state (squeue %r, e.g. JobHeldUser); "" for None
  int restarts = 0;    // how often Slurm requeued it
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Starts one attempt and records in `run` what identifies it (pid, start time and host, or the Slurm job id).
  // UserError when it cannot be started or submitted.
  virtual void Launch(const LaunchRequest& request, SweepState::Run* run) = 0;
  // Of `running` (runs in state RUNNING, also ones started by an earlier, killed coordinator), those that have
  // ended: run id -> how, e.g. "exit code 1" or "Slurm state TIMEOUT".
  virtual std::map<std::string, std::string> Ended(const std::vector<SweepState::Run>& running) = 0;
  // What the scheduler said at the last Ended call of each run it was asked about, ended ones included: run id ->
  // state. Empty for a backend without a scheduler (local).
  virtual std::map<std::string, JobState> JobStates() const { return {}; }
  // Stops `running` and returns when they are gone: SIGUSR1 to mpirun (which forwards it to its ranks; they
  // checkpoint and end INTERRUPTED), then SIGKILL to everything left in the run's session; or scancel.
  virtual void Stop(const std::vector<SweepState::Run>& running) = 0;
  virtual double PollSeconds() const = 0;
};

std::unique_ptr<Backend> MakeLocalBackend(const BackendOptions& options);
std::unique_ptr<Backend> MakeSlurmBackend(const BackendOptions& options);

// The sbatch script of one attempt (exposed for tests).
std::string SlurmScript(const BackendOptions& options, const LaunchRequest& request, const std::string& job_name);

// SweepSpec.Slurm.signal_grace_seconds, or its default (120) when 0.
int SignalGraceSeconds(const SweepSpec::Slurm& slurm);

}  // namespace tempered
