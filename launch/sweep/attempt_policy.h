// How the coordinator judges what a scheduler says of an attempt: whether an ended attempt counts toward
// max_attempts, and whether a queued job needs someone's attention (a hold) rather than patience.
#pragma once

#include <cstdint>
#include <string>

namespace tempered {

struct EndedAttempt {
  std::string slurm_state;   // the job's last Slurm state, e.g. TIMEOUT; "" for the local backend
  bool requeued = false;     // Slurm requeued the job at least once while it was this attempt
  bool interrupted = false;  // result.json says INTERRUPTED: a SIGTERM made the run checkpoint and stop
  int64_t start_step = 0;    // the run's checkpointed global step when the attempt started
  int64_t end_step = 0;      // ... and when it ended (result.json global_steps; 0 when there is none)
};

// Whether an ended attempt is free, i.e. relaunched without counting toward max_attempts: it was stopped from outside
// — Slurm's time limit (its SIGTERM before the limit, or the limit itself: TIMEOUT), a preemption, a node failure, a
// requeue — and its checkpoint got further than where it started. Steps after the last checkpoint do not count:
// the next attempt repeats them. The progress condition bounds the free attempts by the run's steps, so a run that a
// time limit too short for its start-up or its evaluation keeps stopping still fails after max_attempts.
// A job someone cancelled (CANCELLED) counts, though its run ends INTERRUPTED: a person stopped it.
bool IsFreeAttempt(const EndedAttempt& attempt);

// For a Slurm job that has not ended: "" when it is running or waiting its turn, otherwise what it waits on, e.g.
// "held: it starts once released (scontrol release 42)". `reason` is squeue's %r ("" for None).
std::string SlurmWaitNote(const std::string& job_id, const std::string& state, const std::string& reason);

}  // namespace tempered
