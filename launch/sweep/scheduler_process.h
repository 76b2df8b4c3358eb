// Process helpers of the schedulers: start a command in its own session with its output in files, run a short
// command and capture its output, and inspect processes through /proc.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tempered {

struct SpawnOptions {
  std::vector<std::string> argv;                            // argv[0] is looked up in PATH
  std::vector<std::pair<std::string, std::string>> env;     // set on top of this process's environment
  std::string stdout_path, stderr_path;                     // truncated and written by the child
};

// Starts `options.argv` in a new session (setsid), so that a terminal's Ctrl-C reaches only the coordinator (which
// then stops its runs in order), and so that every process of the run, mpirun's ranks included (mpirun puts each
// rank in its own process group but leaves it in its session), can be found by its session id = the returned pid.
// UserError when the command cannot be started.
pid_t SpawnInNewSession(const SpawnOptions& options);

struct CommandResult {
  int exit_code = -1;       // -1 when the command could not be started or was killed
  std::string output;       // stdout and stderr together; ends with a sentence saying so when it timed out
  bool timed_out = false;   // killed at the timeout
};
// The longest a short command may take before it is killed (a Slurm controller that does not answer).
constexpr double kCommandTimeoutSeconds = 120;
// Runs a short command (sbatch, squeue, scancel, nvidia-smi, gnuplot) to completion, or kills it after
// timeout_seconds; its callers report a failed command's output, which then says it timed out.
CommandResult RunCommand(const std::vector<std::string>& argv, double timeout_seconds = kCommandTimeoutSeconds);

// "exit code 3", "killed by signal 9 (Killed)" for a waitpid status.
std::string DescribeWaitStatus(int status);

struct ProcessInfo {
  char state = '?';            // R, S, D, Z (zombie), ...
  pid_t session = 0;
  uint64_t start_ticks = 0;    // clock ticks since boot: with the pid, identifies one process
};
// Reads /proc/PID/stat; false when the process does not exist.
bool ReadProcessInfo(pid_t pid, ProcessInfo* info);
// Whether `pid` is the live (not zombie) process that started at `start_ticks`.
bool ProcessAlive(pid_t pid, uint64_t start_ticks);
// Sends `signal` to every live process whose session id is `session`; returns how many there were.
int SignalSession(pid_t session, int signal);

std::string HostName();

// CPUs this process may run on (its affinity mask: a container's or Slurm allocation's share, not the host's).
int MachineCores();

// `flag_value` made absolute when given; otherwise tempered-train next to this executable (an install's bin/) or in
// ../trainer/ (a build tree). UserError when it is not an executable file.
std::string FindTrainBinary(const std::string& flag_value);

}  // namespace tempered
