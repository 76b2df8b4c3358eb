// tempered-sweep's coordinator: expand the grid, schedule its runs on a backend, resume after an interruption or a
// crash, show the live status, and aggregate the results into DIR/results.{csv,json}, DIR/report.md and plots.
#pragma once

#include <string>
#include <vector>

#include "launch/sweep/gpu_slots.h"
#include "launch/sweep/scheduler.h"
#include "proto/tempered.pb.h"

namespace tempered {

struct SweepOptions {
  SweepSpec spec;         // resolved and validated (ResolveSweepSpec, ValidateSweepSpec)
  std::string sweep_dir;  // absolute
  BackendOptions backend; // train binary, mpirun; ranks, threads and Slurm settings are taken from `spec`
  int machine_cores = 1;  // the local core budget when spec.core_budget is 0
  NodeGpus node_gpus;     // the GPUs runs with spec.gpus_per_rank > 0 share (each run its own)
  bool interactive = false;  // redraw the status table in place (stdout is a terminal)
};

// Runs the sweep to the end (or until SIGINT / SIGTERM / SIGHUP, which stop its runs cleanly; re-running the same
// command resumes), writes the results and the report, and prints the report's path. Returns the exit code: 0 when
// every run finished, 1 when some failed max_attempts times, 128 + the signal when stopped by one. Bad input throws
// UserError before anything runs.
int RunSweep(const SweepOptions& options);

// How many runs of `spec` may run at once: its core budget (machine_cores for a local sweep without one) over the
// cores of one run, capped by max_parallel_runs and, when spec.gpus_per_rank > 0, by the node's `node_gpus` over
// the GPUs of one run; INT_MAX when nothing limits it (Slurm without a budget).
int SweepSlots(const SweepSpec& spec, int machine_cores, int node_gpus = 0);

// One line per running run whose Slurm job waits on someone (held, suspended; SlurmWaitNote), under a heading; ""
// when none does. From the state file: what the coordinator saw at its last poll.
std::string FormatSlurmWaits(const std::vector<SweepState::Run>& runs);

// Prints the status table of the sweep in `sweep_dir` (running or finished) from its state and run directories,
// closed by its progress line (slots counted for this machine), then the Slurm jobs that wait on someone
// (FormatSlurmWaits) and the best finished run per loss.
void PrintSweepStatus(const std::string& sweep_dir);

}  // namespace tempered
