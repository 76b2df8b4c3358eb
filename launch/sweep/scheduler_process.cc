#include "launch/sweep/scheduler_process.h"

#include <dirent.h>
#include <poll.h>
#include <sched.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "common/errors.h"
#include "launch/sweep/sweep_state.h"

extern char** environ;

namespace tempered {

namespace {

// argv / envp arrays for posix_spawn that point into `strings`.
std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

std::vector<std::string> Environment(const std::vector<std::pair<std::string, std::string>>& overrides) {
  std::map<std::string, std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const size_t eq = entry.find('=');
    if (eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  for (const auto& [name, value] : overrides) env[name] = value;
  std::vector<std::string> out;
  for (const auto& [name, value] : env) out.push_back(name + "=" + value);
  return out;
}

// Attributes shared by every spawn: default SIGINT/SIGTERM/SIGHUP dispositions and an empty signal mask in the
// child, whatever the coordinator installed for itself.
void InitSpawnAttributes(posix_spawnattr_t* attr, short extra_flags) {
  posix_spawnattr_init(attr);
  sigset_t defaults, empty;
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) sigaddset(&defaults, s);
  sigemptyset(&empty);
  posix_spawnattr_setsigdefault(attr, &defaults);
  posix_spawnattr_setsigmask(attr, &empty);
  posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | extra_flags);
}

}  // namespace

pid_t SpawnInNewSession(const SpawnOptions& options) {
  std::vector<std::string> args = options.argv;
  std::vector<std::string> env = Environment(options.env);
  std::vector<char*> argv = CStrings(args), envp = CStrings(env);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, options.stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, options.stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawnattr_t attr;
  InitSpawnAttributes(&attr, POSIX_SPAWN_SETSID);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw UserError("cannot start " + options.argv[0] + ": " + std::strerror(rc));
  return pid;
}

CommandResult RunCommand(const std::vector<std::string>& command, double timeout_seconds) {
  CommandResult result;
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return result;
  std::vector<std::string> args = command;
  std::vector<char*> argv = CStrings(args);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
  posix_spawnattr_t attr;
  InitSpawnAttributes(&attr, 0);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(pipe_fds[1]);
  if (rc != 0) {
    ::close(pipe_fds[0]);
    result.output = "cannot start " + command[0] + ": " + std::strerror(rc);
    return result;
  }
  // Read until the command closes its output, or kill it at the deadline: a hung sbatch, squeue or nvidia-smi (a
  // Slurm controller that does not answer, a GPU driver in a bad state) must not hang the coordinator.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
  char buf[4096];
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      ::kill(pid, SIGKILL);
      result.timed_out = true;
      break;
    }
    pollfd readable = {pipe_fds[0], POLLIN, 0};
    const int ready = ::poll(&readable, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) continue;
    const ssize_t n = ::read(pipe_fds[0], buf, sizeof(buf));
    if (n == 0) break;
    if (n > 0) result.output.append(buf, static_cast<size_t>(n));
    else if (errno != EINTR) break;
  }
  ::close(pipe_fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (result.timed_out) {
    char seconds[32];
    std::snprintf(seconds, sizeof(seconds), "%g", timeout_seconds);
    result.output += (result.output.empty() ? "" : "\n") + command[0] + " did not finish within " + seconds +
                     " s and was killed";
  } else if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  }
  return result;
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")";
  }
  return "status " + std::to_string(status);
}

bool ReadProcessInfo(pid_t pid, ProcessInfo* info) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!in || !std::getline(in, line)) return false;
  // The command name (field 2) may contain spaces and ')': the fields after it start after the last ')'.
  const size_t close = line.rfind(')');
  if (close == std::string::npos || close + 2 > line.size()) return false;
  std::istringstream fields(line.substr(close + 2));
  std::vector<std::string> f;  // f[0] is field 3 (state)
  for (std::string x; fields >> x;) f.push_back(x);
  if (f.size() < 20) return false;
  info->state = f[0][0];
  info->session = static_cast<pid_t>(std::stol(f[3]));  // field 6
  info->start_ticks = std::stoull(f[19]);                // field 22
  return true;
}

bool ProcessAlive(pid_t pid, uint64_t start_ticks) {
  ProcessInfo info;
  return pid > 0 && ReadProcessInfo(pid, &info) && info.state != 'Z' && info.start_ticks == start_ticks;
}

int SignalSession(pid_t session, int signal) {
  if (session <= 0) return 0;
  int count = 0;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return 0;
  while (const dirent* entry = ::readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(entry->d_name, &end, 10);
    ProcessInfo info;
    if (*end != '\0' || pid <= 0 || !ReadProcessInfo(static_cast<pid_t>(pid), &info)) continue;
    if (info.session != session || info.state == 'Z') continue;
    if (::kill(static_cast<pid_t>(pid), signal) == 0) ++count;
  }
  ::closedir(proc);
  return count;
}

int MachineCores() {
  cpu_set_t set;
  if (::sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN));
}

std::string FindTrainBinary(const std::string& flag_value) {
  std::vector<std::string> candidates;
  if (!flag_value.empty()) {
    candidates.push_back(AbsolutePath(flag_value));
  } else {
    char self[4096];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
    const std::string exe = n > 0 ? std::string(self, static_cast<size_t>(n)) : "";
    const std::string dir = exe.substr(0, exe.rfind('/'));
    candidates = {dir + "/tempered-train", dir + "/../trainer/tempered-train"};
  }
  for (const std::string& path : candidates) {
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  throw UserError("cannot find the training binary (looked for " + candidates.front() +
                  (candidates.size() > 1 ? " and " + candidates.back() : std::string()) +
                  "); build tempered-train or pass --train_binary");
}

std::string HostName() {
  char name[256] = {0};
  ::gethostname(name, sizeof(name) - 1);
  return name;
}

}  // namespace tempered
