// IDX readers (trainer/data/data.h): every input, gzipped or plain, either reads or throws UserError. Anything else (a
// crash, a sanitizer report, another exception escaping, a CHECK, an allocation far beyond the input) is a bug.
#include <cstdint>

#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/fuzz_input.h"
#include "trainer/data/data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static tempered::fuzz::InputFile file;
  const std::string& path = file.Write(data, size);
  // The magic number chooses which reader accepts the file; both see every input (the other one must reject it).
  tempered::fuzz::AcceptsOrRejects([&] { tempered::ReadIdxImages(path); });
  tempered::fuzz::AcceptsOrRejects([&] { tempered::ReadIdxLabels(path); });
  return 0;
}
