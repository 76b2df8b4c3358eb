// result.json as both binaries read it: the trainer (to keep what an earlier attempt wrote) and the coordinator.
#pragma once

#include <string>

#include "proto/tempered.pb.h"

namespace tempered {

// False when the file is missing or not a RunResult in JSON (result.json is written atomically, so such a file is
// foreign or damaged: no result); `result` is then unspecified.
bool ReadRunResultFile(const std::string& path, RunResult* result);
// RUN_DIR/result.json.
bool ReadRunResult(const std::string& run_dir, RunResult* result);

}  // namespace tempered
