// Image-folder reader (trainer/data/data.h): the input is the one image of a one-class training split, as a .jpg (our
// own JPEG marker walk runs first, then OpenCV's decoder and the resize) and as a .png. UserError or a data set.
#include <cstdint>

#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/fuzz_dir.h"
#include "trainer/data/data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static tempered::fuzz::InputDir jpeg, png;
  tempered::fuzz::AcceptsOrRejects([&] {
    tempered::LoadImageFolder(jpeg.Write("train/class/image.jpg", data, size), /*train=*/true, {16});
  });
  tempered::fuzz::AcceptsOrRejects([&] {
    tempered::LoadImageFolder(png.Write("train/class/image.png", data, size), /*train=*/true, {16});
  });
  return 0;
}
