#include "common/stop.h"

#include <atomic>

namespace tempered {
namespace {

std::atomic<bool> stop_signalled{false};
static_assert(std::atomic<bool>::is_always_lock_free, "set from a signal handler");

}  // namespace

void NoteStopSignal() { stop_signalled.store(true, std::memory_order_relaxed); }

bool StopSignalled() { return stop_signalled.load(std::memory_order_relaxed); }

}  // namespace tempered
