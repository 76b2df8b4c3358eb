#include "launch/sweep/sweep_state.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "common/config.h"
#include "common/errors.h"

namespace tempered {

namespace {

bool ReadFile(const std::string& path, std::string* contents) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *contents = ss.str();
  return true;
}

}  // namespace

std::string StatePath(const std::string& sweep_dir) { return sweep_dir + "/sweep_state.json"; }

bool LoadState(const std::string& sweep_dir, SweepState* state) {
  std::string json;
  if (!ReadFile(StatePath(sweep_dir), &json)) return false;
  FromJson(json, state, StatePath(sweep_dir));
  return true;
}

void SaveState(const std::string& sweep_dir, const SweepState& state) {
  WriteFileAtomically(StatePath(sweep_dir), ToJson(state));
}

int MergeGrid(const std::vector<GridPoint>& points, SweepState* state) {
  std::set<std::string> known;
  for (const auto& run : state->runs()) known.insert(run.id());
  int added = 0;
  for (const GridPoint& point : points) {
    if (known.count(point.id)) continue;
    SweepState::Run* run = state->add_runs();
    run->set_id(point.id);
    *run->mutable_config() = point.config;
    run->set_state(SweepState::Run::PENDING);
    run->set_run_dir("runs/" + point.name);
    ++added;
  }
  return added;
}

int64_t CheckpointedStep(const std::string& run_dir) {
  int64_t step = 0;
  std::error_code ignored;
  for (const auto& entry : std::filesystem::directory_iterator(run_dir, ignored)) {
    const std::string name = entry.path().filename().string();
    const bool earlier = name.rfind("attempt-", 0) == 0 && name.size() > 12 &&
                         name.compare(name.size() - 12, 12, ".result.json") == 0;
    RunResult result;
    if ((name == "result.json" || earlier) && ReadRunResultFile(entry.path().string(), &result)) {
      step = std::max<int64_t>(step, result.global_steps());
    }
  }
  return step;
}

bool ReadProgress(const std::string& run_dir, Progress* p) {
  std::string text;
  if (!ReadFile(run_dir + "/progress.json", &text)) return false;
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return false;
  p->step = j.value("step", int64_t{0});
  p->total_steps = j.value("total_steps", int64_t{0});
  p->epoch = j.value("epoch", int64_t{0});
  p->epochs = j.value("epochs", int64_t{0});
  p->loss = j.value("loss", 0.0);
  p->images_per_second = j.value("images_per_second", 0.0);
  p->eta_seconds = j.value("eta_seconds", 0.0);
  return true;
}

void AppendEvent(const std::string& sweep_dir, const std::string& line) {
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", std::localtime(&now));
  std::ofstream out(sweep_dir + "/sweep.log", std::ios::app);
  out << stamp << " " << line << "\n";
}

std::string AbsolutePath(const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  char cwd[4096];
  if (::getcwd(cwd, sizeof(cwd)) == nullptr) throw UserError(std::string("cannot read the current directory: ") +
                                                               std::strerror(errno));
  std::string abs = std::string(cwd) + "/" + path;
  while (abs.size() > 1 && abs.back() == '/') abs.pop_back();
  return abs;
}

}  // namespace tempered
