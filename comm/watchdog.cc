// The collective watchdog: a rank that waits in a blocking collective for longer than the timeout takes the job
// down with one sentence, instead of waiting forever for a peer that was stopped (SIGSTOP), deadlocked, or lost
// with its node (a dead node's TCP connections may never close, and shared memory never reports a dead peer).
//
// How: every blocking MPI call of a collective runs inside a CollectiveWatch, which records "waiting in <what>
// since <t>" in two atomics; one thread per process (started by Init when the world has 2 or more ranks) looks at
// them every 50 ms. The main thread stays the only one that calls MPI (MPI_THREAD_FUNNELED), except for the
// watchdog's final MPI_Abort, the usual pattern: the main thread is stuck inside MPI and cannot do it, and Open MPI
// aborts through its runtime (PMIx), which any thread may call.
//
// The same thread notices a stop request (SIGTERM): that is how mpirun ends the survivors of a rank that died or
// aborted (SIGTERM, then SIGKILL up to a second later), so the failure hook runs at once, while there is time to
// record the failure. A graceful stop (every rank told to stop) overwrites that record when it ends.
#include <errno.h>  // program_invocation_short_name

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "comm/backend.h"
#include "comm/comm.h"

namespace tempered::comm {
namespace {

using Clock = std::chrono::steady_clock;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

// Well within mpirun's second between SIGTERM and SIGKILL, also on a loaded machine.
constexpr auto kPollInterval = std::chrono::milliseconds(50);
// After a stop request the timeout does not fire for this long: mpirun is ending the job (its SIGKILL follows in a
// second), and a second error sentence from a rank that was stopped in a collective would only confuse.
constexpr int64_t kStopQuietNs = 5'000'000'000;
// A poll this late finds the process just continued (SIGSTOP, SIGCONT) or starved: the time since the last poll is
// not counted as waiting for the other ranks. mpirun continues a stopped rank a second before it ends it: that
// rank must not then report its own stop as a wait.
constexpr int64_t kLatePollNs = 1'000'000'000;

// Leaked on purpose: the thread may still run while the process exits through std::exit (Abort), and destroying a
// joinable std::thread would call std::terminate.
struct Watchdog {
  std::atomic<int64_t> waiting_since_ns{0};     // 0: not in a collective
  std::atomic<const char*> waiting_in{nullptr};  // a string literal: "all-reduce", ...
  std::atomic<int> depth{0};                     // CollectiveWatch nesting (main thread only)
  std::atomic<const char*> long_wait_for{nullptr};  // an open LongWait: what it awaits (nullptr: none)
  std::atomic<double> long_wait_seconds{0};
  std::atomic<double> timeout_seconds{kDefaultCollectiveTimeoutSeconds};
  std::atomic<int64_t> stop_noted_ns{0};         // NoteStopRequested, 0: none
  std::atomic<bool> stop_reported{false};
  int rank = -1;
  std::mutex mutex;  // guards `running` and the condition variable, nothing else
  std::condition_variable wake;
  bool running = false;
  std::thread thread;
  std::function<void(const std::string&)> hook;  // guarded by hook_mutex
  std::mutex hook_mutex;
  std::function<std::string(double)> async_poll;  // guarded by poll_mutex
  std::mutex poll_mutex;
};

Watchdog& Get() {
  static Watchdog* watchdog = new Watchdog;
  return *watchdog;
}

[[noreturn]] void EndJob(const std::string& sentence) {
  detail::AbortJob(c10::str(program_invocation_short_name, ": error: ", sentence, " (", detail::Where(), ")"),
                   sentence, 1);
}

[[noreturn]] void TimedOut(int rank, double timeout, const char* what, const char* awaited) {
  char seconds[32];
  std::snprintf(seconds, sizeof(seconds), "%g", timeout);
  EndJob(c10::str("rank ", rank, " waited ", seconds, " s in ", what, " for ", awaited));
}

// The asynchronous work's failure sentence, or "".
std::string PollAsync(Watchdog& w) {
  std::lock_guard<std::mutex> lock(w.poll_mutex);
  return w.async_poll ? w.async_poll(w.timeout_seconds.load()) : std::string();
}

void Loop(Watchdog& w) {
  std::unique_lock<std::mutex> lock(w.mutex);
  int64_t last_poll = NowNs();
  int64_t watched_since = 0, waited_ns = 0;  // the wait being timed, and how long it has lasted
  while (w.running) {
    w.wake.wait_for(lock, kPollInterval);
    // The main thread writes waiting_in, then waiting_since_ns, and clears waiting_since_ns when the call returns:
    // the same non-zero time read before and after waiting_in means waiting_in names that wait.
    const int64_t since = w.waiting_since_ns.load();
    const char* what = w.waiting_in.load();
    const bool waiting = since != 0 && w.waiting_since_ns.load() == since;
    const int64_t now = NowNs();
    const int64_t stop = w.stop_noted_ns.load();
    if (stop != 0 && !w.stop_reported) {
      w.stop_reported = true;
      detail::RunFailureHook(c10::str("rank ", w.rank, " was told to stop (SIGTERM or SIGINT)",
                                      waiting ? c10::str(" while it waited in ", what, " for the other ranks") : "",
                                      "; another rank died or the job was cancelled"));
    }
    const bool quiet = stop != 0 && now - stop < kStopQuietNs;
    if (const std::string failed = quiet ? std::string() : PollAsync(w); !failed.empty()) {
      lock.unlock();
      EndJob(failed);
    }
    const int64_t counted = now - last_poll <= kLatePollNs ? now - last_poll : 0;
    last_poll = now;
    if (!waiting) continue;
    if (since != watched_since) {  // a new wait, begun since the last poll
      watched_since = since;
      waited_ns = std::min(now - since, counted);
    } else {
      waited_ns += counted;
    }
    if (quiet) continue;
    const char* awaited = w.long_wait_for.load();
    const double timeout = awaited != nullptr ? w.long_wait_seconds.load() : w.timeout_seconds.load();
    if (timeout <= 0 || waited_ns * 1e-9 < timeout) continue;
    lock.unlock();
    TimedOut(w.rank, timeout, what, awaited != nullptr ? awaited : "the other ranks; a rank stalled or died");
  }
}

}  // namespace

void SetCollectiveTimeout(double seconds) { Get().timeout_seconds = seconds; }
double CollectiveTimeout() { return Get().timeout_seconds; }

LongWait::LongWait(double seconds, const char* waiting_for) {
  Get().long_wait_seconds = seconds;  // before the description, which the watchdog reads first
  Get().long_wait_for = waiting_for;
}
LongWait::~LongWait() { Get().long_wait_for = nullptr; }

void SetFailureHook(std::function<void(const std::string& message)> hook) {
  std::lock_guard<std::mutex> lock(Get().hook_mutex);
  Get().hook = std::move(hook);
}

void NoteStopRequested() {
  int64_t none = 0;  // only the first request counts; compare_exchange on a lock-free atomic is signal-safe
  Get().stop_noted_ns.compare_exchange_strong(none, NowNs());
}

namespace detail {

CollectiveWatch::CollectiveWatch(const char* what) {
  Watchdog& w = Get();
  if (w.depth++ > 0) return;  // the outermost call names the wait
  w.waiting_in = what;
  w.waiting_since_ns = NowNs();
}

CollectiveWatch::~CollectiveWatch() {
  Watchdog& w = Get();
  if (--w.depth == 0) w.waiting_since_ns = 0;
}

void RunFailureHook(const std::string& message) {
  // Not re-entrant on one thread: a failure inside the hook (it writes files) must not call it again.
  thread_local bool in_hook = false;
  if (in_hook) return;
  Watchdog& w = Get();
  std::lock_guard<std::mutex> lock(w.hook_mutex);  // another thread's failure waits for this one's record
  if (!w.hook) return;
  in_hook = true;
  try {
    w.hook(message);
  } catch (...) {
    // The job is failing already; the sentence that says why has been or will be printed.
  }
  in_hook = false;
}

void SetAsyncPoll(std::function<std::string(double timeout_seconds)> poll) {
  std::lock_guard<std::mutex> lock(Get().poll_mutex);
  Get().async_poll = std::move(poll);
}

void StartWatchdog(int rank) {
  Watchdog& w = Get();
  std::lock_guard<std::mutex> lock(w.mutex);
  if (w.running) return;
  w.rank = rank;
  w.running = true;
  w.thread = std::thread(Loop, std::ref(w));
}

void StopWatchdog() {
  Watchdog& w = Get();
  {
    std::lock_guard<std::mutex> lock(w.mutex);
    if (!w.running) return;
    w.running = false;
  }
  w.wake.notify_all();
  w.thread.join();
}

}  // namespace detail
}  // namespace tempered::comm
