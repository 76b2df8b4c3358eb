// CIFAR-10 and CIFAR-100 binary readers (trainer/data/data.h): the input is the test split of both. UserError or a data
// set, nothing else.
#include <cstdint>

#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/fuzz_dir.h"
#include "trainer/data/data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static tempered::fuzz::InputDir dir;
  tempered::fuzz::AcceptsOrRejects([&] {
    tempered::LoadCifar10(dir.Write("test_batch.bin", data, size), /*train=*/false);
  });
  tempered::fuzz::AcceptsOrRejects([&] { tempered::LoadCifar100(dir.Write("test.bin", data, size), /*train=*/false); });
  return 0;
}
