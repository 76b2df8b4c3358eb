// The training run behind tempered-train: composed of a data source, an encoder, a loss, an optimiser and a
// gradient reducer (docs/contributing.md: no god-trainer). Every rank calls Train with the same resolved, validated config.
#pragma once

#include "common/errors.h"
#include "proto/tempered.pb.h"

namespace tempered {

struct TrainOptions {
  // Continue from out_dir/checkpoint.pt when it exists (a fresh run otherwise), so a scheduler can always pass it.
  bool resume = false;
  // Pause at this fraction of the run's global steps (0 = never): checkpoint, evaluate (RunResult.final at that
  // step), status PAUSED, exit 0. Not part of the config: a paused run resumed without it is the same run, to the
  // bit (tempered-sweep's successive halving pauses runs at its rungs).
  double pause_at_fraction = 0;
};

// Trains, evaluates and writes config.out_dir()/result.json (rank 0). Returns the result on every rank (metrics
// are filled on rank 0 only). Throws CollectiveError for setup failures and non-finite losses. A SIGTERM, SIGINT or
// SIGUSR1 on any rank stops every rank at the next step: a checkpoint is written and the status is INTERRUPTED.
RunResult Train(const RunConfig& config, const TrainOptions& options = {});

// LibTorch allocates CPU tensors with malloc; glibc returns every large block to the OS and faults it back in on
// the next step, which costs 3-5x in this sandbox (docs/cpu.md). Keeps freed memory in the heap instead. Called first
// by tempered-train and by the benchmarks, for both sides of every comparison.
void TuneAllocator();

}  // namespace tempered
