// .npy reader (trainer/io/npy.h) and the checks tempered-analyze applies on top: UserError or a tensor, nothing else.
#include <cstdint>

#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/fuzz_input.h"
#include "trainer/io/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static tempered::fuzz::InputFile file;
  const std::string& path = file.Write(data, size);
  tempered::fuzz::AcceptsOrRejects([&] {
    const torch::Tensor x = tempered::ReadNpy(path);
    tempered::NpyShape(x.sizes());
  });
  tempered::fuzz::AcceptsOrRejects([&] { tempered::ReadNpyMatrix(path, 2); });
  tempered::fuzz::AcceptsOrRejects([&] { tempered::ReadNpyLabels(path, 3); });
  return 0;
}
