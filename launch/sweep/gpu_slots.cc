#include "launch/sweep/gpu_slots.h"

#include <glog/logging.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "common/errors.h"
#include "launch/sweep/scheduler_process.h"

namespace tempered {

namespace {

std::string Trimmed(const std::string& s) {
  const size_t begin = s.find_first_not_of(" \t");
  if (begin == std::string::npos) return "";
  return s.substr(begin, s.find_last_not_of(" \t") - begin + 1);
}

}  // namespace

std::vector<std::string> ParseGpuList(const std::string& text, const std::string& source) {
  std::vector<std::string> gpus;
  if (Trimmed(text).empty()) return gpus;
  std::istringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    const std::string name = Trimmed(item);
    if (name.empty()) {
      throw UserError(source + " must be a comma-separated list of GPUs such as 0,1,2,3, but '" + text +
                      "' has an empty entry");
    }
    if (std::count(gpus.begin(), gpus.end(), name)) {
      throw UserError(source + " names GPU " + name + " twice in '" + text + "'");
    }
    gpus.push_back(name);
  }
  if (text.back() == ',') {  // getline does not return the empty last entry of "0,1,"
    throw UserError(source + " must be a comma-separated list of GPUs such as 0,1,2,3, but '" + text +
                    "' has an empty entry");
  }
  return gpus;
}

std::string JoinGpuList(const std::vector<std::string>& gpus) {
  std::string joined;
  for (const std::string& gpu : gpus) joined += (joined.empty() ? "" : ",") + gpu;
  return joined;
}

std::vector<std::string> ParseNvidiaSmiList(const std::string& output) {
  std::vector<std::string> gpus;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("GPU ", 0) != 0) continue;  // "  MIG 1g.10gb Device 0: ..." lines are indented
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string index = line.substr(4, colon - 4);
    if (!index.empty() && index.find_first_not_of("0123456789") == std::string::npos) gpus.push_back(index);
  }
  return gpus;
}

NodeGpus DetectNodeGpus(const std::string& flag_value) {
  if (!flag_value.empty()) return {ParseGpuList(flag_value, "--gpus"), "--gpus"};
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES")) {
    return {ParseGpuList(visible, "CUDA_VISIBLE_DEVICES"), "CUDA_VISIBLE_DEVICES"};
  }
  const CommandResult smi = RunCommand({"nvidia-smi", "-L"});  // exit code -1 when there is no such command
  if (smi.exit_code == 0) return {ParseNvidiaSmiList(smi.output), "nvidia-smi -L"};
  return {{}, "none"};
}

GpuSlots::GpuSlots(std::vector<std::string> node_gpus) : node_gpus_(std::move(node_gpus)) {}

void GpuSlots::Hold(const std::string& gpus) {
  for (const std::string& gpu : ParseGpuList(gpus, "a run's GPU list")) {
    if (std::count(node_gpus_.begin(), node_gpus_.end(), gpu)) held_.insert(gpu);
  }
}

std::string GpuSlots::Reserve(int count) {
  CHECK_GE(count, 1);
  if (free_count() < count) return "";
  std::vector<std::string> taken;
  for (const std::string& gpu : node_gpus_) {
    if (static_cast<int>(taken.size()) == count) break;
    if (held_.insert(gpu).second) taken.push_back(gpu);
  }
  return JoinGpuList(taken);
}

}  // namespace tempered
