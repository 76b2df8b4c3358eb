// How a run shows its progress on rank 0: a line (a bar redrawn in place on a terminal, a log line otherwise) and
// out_dir/progress.json for a person or a script watching the run.
#pragma once

#include <string>

#include "proto/tempered.pb.h"

namespace tempered {

// "H:MM:SS".
std::string FormatDuration(double seconds);

// On a terminal a bar redrawn in place; otherwise (log files, schedulers) one log line each.
void ReportProgress(const std::string& text, double fraction);

// out_dir/progress.json, best-effort: a failed write (a full or failing disk) must not end a run whose checkpoints
// and result may still be written, so it warns once and training goes on. Non-finite rates are left out.
// `tau`: the step's temperature (loss.tau_mode).
void WriteProgress(const RunConfig& config, int64_t step, int64_t total, int64_t epoch, double loss,
                   double images_per_second, double eta, double tau);

}  // namespace tempered
