#include "trainer/io/result_file.h"

#include "comm/comm.h"
#include "common/config.h"
#include "common/result_json.h"
#include "common/utf8.h"

namespace tempered {

ResultFile::ResultFile(const RunConfig& config)
    : path_(config.out_dir() + "/result.json"), rank_zero_(comm::Rank() == 0) {
  if (rank_zero_) comm::SetFailureHook([this](const std::string& error) { Fail(error); });
}

ResultFile::~ResultFile() {
  if (rank_zero_) comm::SetFailureHook(nullptr);
}

// The slow part (the fsync) runs outside the lock, so that Fail, with mpirun's SIGKILL perhaps a second away, never
// waits for it.
void ResultFile::Write(const RunResult& result) {
  if (!rank_zero_) return;
  const std::string staged = StageFile(path_, ToJson(result));
  std::lock_guard<std::mutex> lock(mutex_);
  last_ = result;
  written_ = true;
  if (failed_ && result.status() == RunResult::RUNNING) return DiscardStagedFile(staged);
  CommitStagedFile(staged, path_);
}

void ResultFile::Fail(const std::string& error) noexcept {
  if (!rank_zero_) return;
  try {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!written_ || last_.status() != RunResult::RUNNING) return;
    RunResult failed = last_;
    failed.set_status(RunResult::FAILED);
    failed.set_error(Utf8Safe(error));  // a file name need not be UTF-8; JSON and protobuf strings must
    WriteFileAtomically(path_, ToJson(failed), Sync::kFast);  // mpirun's SIGKILL may be a second away
    failed_ = true;
  } catch (...) {
  }
}

void ResultFile::Interrupted(const RunConfig& config) {
  if (!rank_zero_) return;
  RunResult result;
  if (!ReadRunResultFile(path_, &result)) result.Clear();  // none yet, or a foreign file: replaced
  if (!result.has_config()) *result.mutable_config() = config;
  result.set_status(RunResult::INTERRUPTED);
  Write(result);
}

}  // namespace tempered
