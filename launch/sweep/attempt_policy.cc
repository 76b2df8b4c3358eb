#include "launch/sweep/attempt_policy.h"

#include <map>
#include <set>

namespace tempered {

bool IsFreeAttempt(const EndedAttempt& a) {
  if (a.end_step <= a.start_step) return false;  // no checkpoint beyond the start: the next attempt gets no further
  static const std::set<std::string> kStoppedFromOutside = {"TIMEOUT", "PREEMPTED", "NODE_FAIL"};
  if (kStoppedFromOutside.count(a.slurm_state) || a.requeued) return true;
  // Slurm's SIGTERM before the time limit (sbatch --signal) or a preemption's grace time: the run checkpoints and
  // exits before Slurm ends the job, which then reads FAILED (mpirun's exit code) or COMPLETED.
  return a.interrupted && !a.slurm_state.empty() && a.slurm_state != "CANCELLED";
}

std::string SlurmWaitNote(const std::string& job_id, const std::string& state, const std::string& reason) {
  const std::string release = ": it starts once released (scontrol release " + job_id + ")";
  static const std::map<std::string, std::string> kWaits = {
      {"REQUEUE_HOLD", "requeued and held"},
      {"SPECIAL_EXIT", "held after a special exit"},
      {"RESV_DEL_HOLD", "held because its reservation was deleted"},
  };
  if (auto it = kWaits.find(state); it != kWaits.end()) return it->second + release;
  if (state == "SUSPENDED") return "suspended: it goes on once resumed (scontrol resume " + job_id + ")";
  if (state == "STOPPED") return "stopped by SIGSTOP: it goes on once continued (scancel -s CONT " + job_id + ")";
  if (state == "REQUEUED" || state == "REQUEUE_FED") return "requeued by Slurm: it runs again from its checkpoint";
  if (state != "PENDING") return "";
  // Slurm's reasons for a hold: JobHeldUser, JobHeldAdmin, "launch failed requeued held", ...
  if (reason.find("Held") != std::string::npos || reason.find("held") != std::string::npos) return "held" + release;
  // Pending reasons that no amount of waiting resolves; the common ones (Priority, Resources, QOS and association
  // limits, BeginTime, Dependency) resolve by themselves.
  static const std::set<std::string> kStuck = {"DependencyNeverSatisfied", "PartitionDown", "PartitionInactive",
                                               "InvalidAccount", "InvalidQOS", "BadConstraints", "PartitionNodeLimit",
                                               "PartitionTimeLimit"};
  if (kStuck.count(reason)) return "waits on " + reason + ", which needs a change to resolve (squeue -j " + job_id + ")";
  return "";
}

}  // namespace tempered
