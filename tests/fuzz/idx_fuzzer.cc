// IDX readers (trainer/data.h): every input, gzipped or plain, either reads or throws UserError. Anything else (a
// crash, a sanitizer report, another exception escaping, a CHECK, an allocation far beyond the input) is a bug.
#include <ATen/Parallel.h>

#include <cstdint>

#include "tests/fuzz/fuzz_input.h"
#include "trainer/data.h"
#include "trainer/errors.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  at::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static tempered::fuzz::InputFile file;
  const std::string& path = file.Write(data, size);
  // The magic number chooses which reader accepts the file; both see every input (the other one must reject it).
  try {
    tempered::ReadIdxImages(path);
  } catch (const tempered::UserError&) {
  }
  try {
    tempered::ReadIdxLabels(path);
  } catch (const tempered::UserError&) {
  }
  return 0;
}
