// tempered-sweep's spec path (launch/sweep/sweep_spec.h): ReadSweepSpec, ResolveSweepSpec, ValidateSweepSpec (which expands
// and validates every grid point) on a 2-core machine. UserError or a valid grid, nothing else.
#include <cstdint>

#include "launch/sweep/sweep_spec.h"
#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static tempered::fuzz::InputFile file;
  const std::string& path = file.Write(data, size);
  tempered::fuzz::AcceptsOrRejects([&] {
    const tempered::SweepSpec spec = tempered::ResolveSweepSpec(tempered::ReadSweepSpec(path));
    tempered::ValidateSweepSpec(spec, /*machine_cores=*/2);
  });
  return 0;
}
