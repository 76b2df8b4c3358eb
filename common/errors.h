// Two error tiers (docs/contributing.md): bad user input throws UserError with one sentence naming the file, field or flag and
// what was expected; broken internal invariants use glog's CHECK.
#pragma once

#include <stdexcept>
#include <string>

namespace tempered {

class UserError : public std::runtime_error {
 public:
  explicit UserError(const std::string& message) : std::runtime_error(message) {}
};

// An error every rank raises together (a setup failure agreed on by all ranks, a non-finite loss seen by all), so
// the job can end cleanly without MPI_Abort. `report` is true on exactly one rank: the one that prints it.
class CollectiveError : public UserError {
 public:
  CollectiveError(const std::string& message, bool report) : UserError(message), report_(report) {}
  bool report() const { return report_; }

 private:
  bool report_;
};

}  // namespace tempered
