// .npy reader (launch/npy.h) and the checks tempered-analyze applies on top: UserError or a tensor, nothing else.
#include <ATen/Parallel.h>

#include <cstdint>

#include "launch/npy.h"
#include "tests/fuzz/fuzz_input.h"
#include "trainer/errors.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  at::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static tempered::fuzz::InputFile file;
  const std::string& path = file.Write(data, size);
  try {
    const torch::Tensor x = tempered::ReadNpy(path);
    tempered::NpyShape(x.sizes());
  } catch (const tempered::UserError&) {
  }
  try {
    tempered::ReadNpyMatrix(path, 2);
  } catch (const tempered::UserError&) {
  }
  try {
    tempered::ReadNpyLabels(path, 3);
  } catch (const tempered::UserError&) {
  }
  return 0;
}
