// One rank's error ends every rank: a rank that gives up alone would leave the others waiting in their next
// collective until the watchdog's timeout.
#pragma once

#include <string>

#include "comm/comm.h"
#include "common/errors.h"

namespace tempered::comm {

// Every rank calls it with its own error ("" for none). If any rank has one, every rank throws CollectiveError with
// the lowest failing rank's sentence, reported by that rank only (rank 0 records it in result.json).
inline void FailTogether(const std::string& error) {
  const int first_failed = FirstFailedRank(!error.empty());
  if (first_failed >= 0) throw CollectiveError(AllGatherStrings(error)[first_failed], Rank() == first_failed);
}

}  // namespace tempered::comm
