// The GPUs of this node and which of them the local backend's runs hold. A GPU is named as CUDA_VISIBLE_DEVICES
// names it (an index "0", or a UUID "GPU-..."/"MIG-..."), and a run's share is a comma list of those names, which
// is what its mpirun gets as CUDA_VISIBLE_DEVICES and what SweepState.Run.gpus records.
#pragma once

#include <set>
#include <string>
#include <vector>

namespace tempered {

// "0,1,2,3" -> {"0", "1", "2", "3"}; "" -> {}. Spaces around names are dropped. UserError naming `source` (the flag
// or variable it came from) for an empty name ("0,,1") or one given twice.
std::vector<std::string> ParseGpuList(const std::string& text, const std::string& source);
std::string JoinGpuList(const std::vector<std::string>& gpus);

// The indices in `nvidia-smi -L` output: one "GPU 0: NVIDIA H200 (UUID: GPU-...)" line per GPU (MIG lines, indented
// under their GPU, are not GPUs of their own here).
std::vector<std::string> ParseNvidiaSmiList(const std::string& output);

struct NodeGpus {
  std::vector<std::string> gpus;
  std::string source;  // where they came from, for messages: "--gpus", "CUDA_VISIBLE_DEVICES", "nvidia-smi -L", "none"
  int size() const { return static_cast<int>(gpus.size()); }
};
// The node's GPUs: `flag_value` (--gpus) when given; else CUDA_VISIBLE_DEVICES when set (what this process may use
// is what its runs may use); else `nvidia-smi -L` when that command runs; else none.
NodeGpus DetectNodeGpus(const std::string& flag_value);

// Which of the node's GPUs are free. Reserve takes the first free ones in the node's order, so a run's share is
// predictable ("0,1" then "2,3"). Nothing is released: the coordinator builds one per launch from the GPUs its
// running runs hold (its state), so an ended run's GPUs are free again once it leaves RUNNING.
class GpuSlots {
 public:
  explicit GpuSlots(std::vector<std::string> node_gpus);

  // Marks the GPUs of `gpus` (a comma list) held, as for a run started by an earlier coordinator; names that are
  // not this node's are ignored (the node's list changed between coordinators).
  void Hold(const std::string& gpus);
  // `count` free GPUs, held from now on, as a comma list; "" when fewer than `count` are free (count >= 1).
  std::string Reserve(int count);

  int free_count() const { return static_cast<int>(node_gpus_.size() - held_.size()); }
  int size() const { return static_cast<int>(node_gpus_.size()); }

 private:
  std::vector<std::string> node_gpus_;
  std::set<std::string> held_;  // always a subset of node_gpus_
};

}  // namespace tempered
