// SVHN reader (trainer/data/data.h, matio underneath): the input is test_32x32.mat. UserError or a data set, nothing
// else. matio is Debian's uninstrumented library: ASan sees its heap through malloc, and a crash inside it is still
// a crash of tempered-train on a bad file.
#include <cstdint>

#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/fuzz_dir.h"
#include "trainer/data/data.h"

// matio allocates whatever a damaged header declares before reading it (a truncated 2 KB file made
// Mat_VarReadInfo malloc 2 GB): not a crash, and bounded by the format's 32-bit sizes, but it would stop every run
// of this target at libFuzzer's malloc limit. Allocations over 256 MB fail instead, as on a machine without the
// memory: matio must cope with that, and LoadSvhn must turn it into a UserError.
extern "C" const char* __asan_default_options() { return "allocator_may_return_null=1:max_allocation_size_mb=256"; }

// When one of those failed allocations comes in the middle of a compressed variable, matio 1.5.23 returns an error
// without inflateEnd() on the zlib stream it copied with inflateCopy() (CI found one in 20,000 inputs: 39 KB, every
// frame in libz/libmatio, none of ours). That is matio's leak, on a path only an allocation failure reaches; leaks
// with any other allocation stack still fail this target.
extern "C" const char* __lsan_default_suppressions() { return "leak:inflateCopy\n"; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static tempered::fuzz::InputDir dir;
  tempered::fuzz::AcceptsOrRejects([&] {
    tempered::LoadSvhn(dir.Write("test_32x32.mat", data, size), /*train=*/false);
  });
  return 0;
}
