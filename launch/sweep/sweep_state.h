// The sweep directory and its state. Layout:
//   DIR/sweep_state.json   SweepState (JSON, proto field names), rewritten atomically after every change
//   DIR/sweep.log          one line per event (launched, finished, failed, ...), appended
//   DIR/.lock              flock'ed by the coordinator: one coordinator per sweep directory
//   DIR/runs/<name>/       run.pbtxt, attempt-N.{out,err}, progress.json and result.json of one grid point, and
//                          .lock, flock'ed by its tempered-train while it runs (a held lock: the run is running)
// The run directories are the ground truth for outcomes: a run whose result.json says FINISHED is finished,
// whatever the state file says (the coordinator may have been killed before it wrote the state).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/files.h"        // MakeDirectories, which every user of the sweep directory needs
#include "common/result_json.h"  // ReadRunResult: RUN_DIR/result.json, false when missing or unreadable
#include "launch/sweep/sweep_spec.h"
#include "proto/tempered.pb.h"

namespace tempered {

std::string StatePath(const std::string& sweep_dir);

// Reads DIR/sweep_state.json into `state`; false when there is none yet. UserError when it does not parse.
bool LoadState(const std::string& sweep_dir, SweepState* state);
void SaveState(const std::string& sweep_dir, const SweepState& state);

// Adds every grid point missing from `state` (by id) as PENDING; returns how many were added. Existing runs keep
// their state and attempts, so a changed spec only adds its new points.
int MergeGrid(const std::vector<GridPoint>& points, SweepState* state);

// The run's checkpointed global step: result.json is written with every checkpoint, so its global_steps is the
// last checkpoint's. Earlier attempts' results (attempt-N.result.json) count too, since the latest attempt may have
// died before writing one; checkpoints only move forward, so the largest is the newest. 0 without any.
int64_t CheckpointedStep(const std::string& run_dir);

// The last DIR/progress.json of a running run (written by rank 0 every log_every_steps steps).
struct Progress {
  int64_t step = 0, total_steps = 0;
  int64_t epoch = 0, epochs = 0;
  double loss = 0, images_per_second = 0, eta_seconds = 0;
};
bool ReadProgress(const std::string& run_dir, Progress* progress);

// Appends "<local time> <line>" to DIR/sweep.log.
void AppendEvent(const std::string& sweep_dir, const std::string& line);

// `path` made absolute against the current directory (not resolving links).
std::string AbsolutePath(const std::string& path);

}  // namespace tempered
