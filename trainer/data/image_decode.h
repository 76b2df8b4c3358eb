// Decoding one image file: JPEG through libjpeg-turbo's TurboJPEG API at the smallest DCT scale that still covers
// what the caller needs (the cheapest pixel is the one never decoded; PIL calls it draft mode, FFCV fuses crop and
// decode the same way), every other format through OpenCV. Shared by the in-memory and the streamed image folder,
// so both see the same pixels. Needs a build with TEMPERED_DATASETS=ON (datasets_unavailable.cc otherwise).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tempered {

// Images larger than this are refused before any pixel is decoded: a 20,000 x 20,000 JPEG of a few kilobytes (a
// decompression bomb) would otherwise ask for 1.2 GB. PIL's limit (Image.MAX_IMAGE_PIXELS x 2, where it raises).
constexpr int64_t kMaxImagePixels = 178956970;

struct ImageSize {
  int64_t height = 0, width = 0;
};

// An image decoded to planar RGB uint8 (3, height, width).
struct DecodedImage {
  std::vector<uint8_t> pixels;
  int64_t height = 0, width = 0;
};

// The whole file; UserError naming it when it is missing, unreadable or empty.
std::vector<uint8_t> ReadImageBytes(const std::string& path);

// The stored size from the header alone (JPEG: TurboJPEG's header reader; PNG: its IHDR; other formats: a decode).
// UserError naming `path` when the file is truncated (a JPEG without its end-of-image marker: OpenCV and libjpeg
// would only warn and fill the missing rows with grey), not an image, or larger than kMaxImagePixels.
ImageSize ReadImageSize(const std::vector<uint8_t>& bytes, const std::string& path);

// Decodes `bytes` as RGB. A JPEG is decoded at the smallest of TurboJPEG's scaling factors (1/8, 2/8, ... 1) whose
// output is at least min_height x min_width (full size when none is smaller); other formats always at full size.
// Pixels as stored: EXIF orientation is ignored, as torchvision's PIL loader does. UserError as ReadImageSize.
DecodedImage DecodeImage(const std::vector<uint8_t>& bytes, const std::string& path, int64_t min_height = 0,
                         int64_t min_width = 0);

}  // namespace tempered
