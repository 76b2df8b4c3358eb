// A stop asked for by a signal (SIGTERM, SIGINT, SIGUSR1), readable by every part of a run: the training loop
// checks it after each step; long set-up work (listing and decoding an image folder takes minutes at ImageNet's
// size) checks it between files, so that a run stopped before its first step still ends cleanly (INTERRUPTED, exit
// 143) within seconds, as Slurm's grace period before SIGKILL needs.
#pragma once

#include <stdexcept>
#include <string>

namespace tempered {

// Thrown by set-up work once a stop was signalled; Train() turns it into an INTERRUPTED result. Not a UserError:
// nothing was wrong.
class StoppedBySignal : public std::runtime_error {
 public:
  explicit StoppedBySignal(const std::string& during)
      : std::runtime_error("stopped by a signal while " + during), during_(during) {}
  const std::string& during() const { return during_; }

 private:
  std::string during_;
};

// Async-signal-safe: sets the flag (a lock-free atomic).
void NoteStopSignal();
bool StopSignalled();

}  // namespace tempered
