// The training run behind tempered-train: composed of a data source, an encoder, a loss, an optimiser and a
// gradient reducer (STYLE.md: no god-trainer). Every rank calls Train with the same resolved, validated config.
#pragma once

#include "proto/tempered.pb.h"
#include "trainer/errors.h"

namespace tempered {

// An error every rank raises together (a setup failure agreed on by all ranks, a non-finite loss seen by all), so
// the job can end cleanly without MPI_Abort. `report` is true on exactly one rank: the one that prints it.
class CollectiveError : public UserError {
 public:
  CollectiveError(const std::string& message, bool report) : UserError(message), report_(report) {}
  bool report() const { return report_; }

 private:
  bool report_;
};

struct TrainOptions {
  // Continue from out_dir/checkpoint.pt when it exists (a fresh run otherwise), so a scheduler can always pass it.
  bool resume = false;
  // Pause at this fraction of the run's global steps (0 = never): checkpoint, evaluate (RunResult.final at that
  // step), status PAUSED, exit 0. Not part of the config: a paused run resumed without it is the same run, to the
  // bit (tempered-sweep's successive halving pauses runs at its rungs).
  double pause_at_fraction = 0;
};

// Rank 0 holds an exclusive flock on out_dir/.lock from setup to exit: a second tempered-train on the same out_dir
// is refused before it writes anything, and tempered-sweep treats a run directory whose lock is held as running.
inline constexpr char kOutDirLockFile[] = ".lock";

// Trains, evaluates and writes config.out_dir()/result.json (rank 0). Returns the result on every rank (metrics
// are filled on rank 0 only). Throws CollectiveError for setup failures and non-finite losses. A SIGTERM, SIGINT or
// SIGUSR1 on any rank stops every rank at the next step: a checkpoint is written and the status is INTERRUPTED.
RunResult Train(const RunConfig& config, const TrainOptions& options = {});

// LibTorch allocates CPU tensors with malloc; glibc returns every large block to the OS and faults it back in on
// the next step, which costs 3-5x in this sandbox (ENV.md). Keeps freed memory in the heap instead. Called first
// by tempered-train and by the benchmarks, for both sides of every comparison.
void TuneAllocator();

}  // namespace tempered
