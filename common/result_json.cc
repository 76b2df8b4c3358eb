#include "common/result_json.h"

#include <fstream>
#include <sstream>

#include "common/config.h"
#include "common/errors.h"

namespace tempered {

bool ReadRunResultFile(const std::string& path, RunResult* result) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream json;
  json << in.rdbuf();
  try {
    FromJson(json.str(), result, path);
  } catch (const UserError&) {
    return false;
  }
  return true;
}

bool ReadRunResult(const std::string& run_dir, RunResult* result) {
  return ReadRunResultFile(run_dir + "/result.json", result);
}

}  // namespace tempered
