// The grid of a sweep: a SweepSpec (proto/tempered.proto) is resolved, validated and expanded into grid points,
// each a fully resolved RunConfig with a stable id.
#pragma once

#include <string>
#include <vector>

#include "proto/tempered.pb.h"

namespace tempered {

// The built-in quick sweep on Fashion-MNIST (text format), run when tempered-sweep gets no --spec.
extern const char kDefaultSweepSpec[];

SweepSpec DefaultSweepSpec();
// Reads a text-format SweepSpec; UserError naming the file and line of a parse error or unknown field.
SweepSpec ReadSweepSpec(const std::string& path);

// Fills unset scheduling fields: one rank per run, one thread per rank, the local backend, two attempts; on
// Slurm, slurm.gpus_per_task from gpus_per_rank.
SweepSpec ResolveSweepSpec(const SweepSpec& spec);

// The GPUs per rank the coordinator itself hands out (local backend); 0 on Slurm, which picks a job's GPUs.
inline int LocalGpusPerRank(const SweepSpec& spec) {
  return spec.backend() == SweepSpec::SLURM ? 0 : spec.gpus_per_rank();
}

// Rejects a bad spec before anything runs: UserError with one sentence naming the problem (empty axis, tau <= 0,
// unknown loss or field, ranks x threads over the core budget, an invalid grid point). `machine_cores` is the
// local core budget when spec.core_budget is 0.
void ValidateSweepSpec(const SweepSpec& spec, int machine_cores);

// Rejects a spec whose gpus_per_rank leaves no run enough of the node's `node_gpus` GPUs (listed by `source`,
// NodeGpus in launch/sweep/gpu_slots.h): UserError with one sentence. A CPU or Slurm spec always passes.
void ValidateNodeGpus(const SweepSpec& spec, int node_gpus, const std::string& source);

struct GridPoint {
  std::string id;    // RunId(config)
  std::string name;  // run directory name: <loss>_tau<tau>[_k<hard_k>][_seed<seed>]_<id>
  RunConfig config;  // resolved and validated; out_dir and threads are filled in by the scheduler
};

// The cross product of every non-empty axis over spec.base, in spec order (loss slowest, then tau, hard_k, seed,
// the generic axes). An axis does not multiply a loss that ignores its field: tau does not matter to `simple`,
// `hard_simple` and `nearest`, hard_k only matters to `hard` and `hard_simple`; those points keep the base
// value, so each distinct run appears once. Duplicates (same id) are dropped.
std::vector<GridPoint> ExpandGrid(const SweepSpec& spec);

// 16 hex digits of FNV-1a 64 over the text format of the resolved config without the fields that say where and how
// a run executes rather than what it computes and reports (ResultIndependentFields, common/config.h: out_dir,
// threads, data.workers, log_every_steps, checkpoint_every_steps, ...; the global batch defines the computation,
// docs/architecture.md), so moving a sweep or changing threads_per_rank keeps finished runs; a checkpoint resumes under the
// same identity. Everything else counts, device and evaluation settings included (they change the reported
// metrics), and so do defaults: a new default in DefaultRunConfig is a new config. Why these choices:
// text format prints fields in field-number order with shortest round-trip floats, so the id is stable across runs
// and protobuf versions and can be recomputed from run.pbtxt by hand; FNV-1a needs no crypto library, and 64 bits
// make a collision within a sweep of a million points a ~3e-8 event (the input is not adversarial).
std::string RunId(const RunConfig& resolved);

// Whether a loss's formula involves hard_k (docs/paper.md §2); LossUsesTau is in common/config.h.
bool LossUsesHardK(LossConfig::Name name);
// Lower-case loss name ("infonce").
std::string LossName(LossConfig::Name name);
// Shortest decimal form of a float that reads back to the same value ("0.1", not "0.100000001").
std::string FormatFloat(double value);

}  // namespace tempered
