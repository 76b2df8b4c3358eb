// What every libFuzzer target of tests/fuzz checks: a parser of user input either accepts an input or rejects it
// with UserError (a one-sentence message for the user). Anything else escaping — another exception, a crash, a
// sanitizer report — reaches libFuzzer, which reports it and keeps the input.
#pragma once

#include "common/errors.h"

namespace tempered::fuzz {

template <class Parse>
void AcceptsOrRejects(Parse&& parse) {
  try {
    parse();
  } catch (const UserError&) {
  }
}

}  // namespace tempered::fuzz
