// Two error tiers (STYLE.md): bad user input throws UserError with one sentence naming the file, field or flag and
// what was expected; broken internal invariants use glog's CHECK.
#pragma once

#include <stdexcept>
#include <string>

namespace tempered {

class UserError : public std::runtime_error {
 public:
  explicit UserError(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace tempered
