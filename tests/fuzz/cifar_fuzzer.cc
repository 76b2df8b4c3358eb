// CIFAR-10 and CIFAR-100 binary readers (trainer/data.h): the input is the test split of both. UserError or a data
// set, nothing else.
#include <ATen/Parallel.h>

#include <cstdint>

#include "tests/fuzz/fuzz_dir.h"
#include "trainer/data.h"
#include "trainer/errors.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  at::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static tempered::fuzz::InputDir dir;
  try {
    tempered::LoadCifar10(dir.Write("test_batch.bin", data, size), /*train=*/false);
  } catch (const tempered::UserError&) {
  }
  try {
    tempered::LoadCifar100(dir.Write("test.bin", data, size), /*train=*/false);
  } catch (const tempered::UserError&) {
  }
  return 0;
}
