// out_dir/result.json of a run, written by rank 0 (a no-op elsewhere).
#pragma once

#include <mutex>
#include <string>

#include "proto/tempered.pb.h"

namespace tempered {

// Every write of result.json goes through here, so that a failure can be recorded over the last result written:
// from the main thread when an error ends the run, or from comm's watchdog thread (the failure hook) while the main
// thread is stuck in a collective, as when another rank died or stalled.
class ResultFile {
 public:
  explicit ResultFile(const RunConfig& config);
  ~ResultFile();
  ResultFile(const ResultFile&) = delete;
  ResultFile& operator=(const ResultFile&) = delete;

  // Atomically. Once a failure is recorded, a RUNNING result no longer replaces it (after a stop request the run
  // either dies or ends INTERRUPTED); a final one (FINISHED, INTERRUPTED) does: the run got to its end.
  void Write(const RunResult& result);

  // The last result written, with status FAILED and `error`. Best effort: the run is failing already, and its error
  // is printed whether or not this write succeeds (a full disk, say). Nothing before the first write: a run that
  // fails in setup leaves what an earlier attempt wrote.
  void Fail(const std::string& error) noexcept;

  // A run stopped by a signal before its first step: what an earlier attempt wrote (its steps, its epochs), or a
  // new result of `config`, with status INTERRUPTED, so that a sweep resumes it without spending an attempt.
  void Interrupted(const RunConfig& config);

 private:
  const std::string path_;
  const bool rank_zero_;
  std::mutex mutex_;  // Write (main thread) against Fail (possibly the watchdog's thread)
  RunResult last_;
  bool written_ = false;
  bool failed_ = false;  // a failure was recorded
};

}  // namespace tempered
