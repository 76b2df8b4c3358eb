#include "trainer/data/image_decode.h"

#include <turbojpeg.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <fstream>
#include <memory>

#include "common/errors.h"
#include "trainer/data/dataset_util.h"

namespace tempered {
namespace {

bool IsJpeg(const std::vector<uint8_t>& bytes) {
  return bytes.size() >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff;
}

bool IsPng(const std::vector<uint8_t>& bytes) {
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  return bytes.size() >= 24 && std::equal(kSignature, kSignature + 8, bytes.begin());
}

bool IsStandaloneMarker(uint8_t marker) { return (marker >= 0xd0 && marker <= 0xd7) || marker == 0x01; }  // RSTn, TEM

// Walks a JPEG's markers from SOI to EOI: segments carry a 2-byte length, and the entropy-coded data after each SOS
// runs to the next 0xFF that is neither 0x00 stuffing nor a restart marker. A file that ends before EOI (a cut-short
// download) throws UserError: libjpeg would only print a warning and return the image with its missing rows grey.
// Bytes between segments are skipped, as libjpeg does.
void CheckJpegComplete(const std::vector<uint8_t>& bytes, const std::string& path) {
  const size_t n = bytes.size();
  const auto truncated = [&] {
    return UserError(path + " is truncated: its JPEG data ends before the end-of-image marker.");
  };
  size_t i = 2;  // after SOI
  while (true) {
    while (i < n && bytes[i] != 0xff) ++i;
    while (i < n && bytes[i] == 0xff) ++i;  // 0xFF fill bytes
    if (i >= n) throw truncated();
    const uint8_t marker = bytes[i++];
    if (marker == 0xd9) return;  // EOI
    if (IsStandaloneMarker(marker)) continue;
    if (i + 2 > n) throw truncated();
    const size_t length = (size_t{bytes[i]} << 8) | bytes[i + 1];
    if (length < 2) {
      throw UserError(path + " is corrupt: a JPEG segment declares a length of " + std::to_string(length) + ".");
    }
    if (i + length > n) throw truncated();
    i += length;
    if (marker == 0xda) {  // SOS: skip the entropy-coded scan
      while (i + 1 < n && !(bytes[i] == 0xff && bytes[i + 1] != 0x00 && !IsStandaloneMarker(bytes[i + 1]))) ++i;
      if (i + 1 >= n) throw truncated();
    }
  }
}

void CheckPixels(const ImageSize& size, const std::string& path) {
  if (size.height <= 0 || size.width <= 0) throw UserError(path + " declares an empty image.");
  // Each side first: a header can declare 2^32 - 1 by 2^32 - 1, whose product overflows (found by the fuzzer).
  if (size.height > kMaxImagePixels || size.width > kMaxImagePixels || size.height * size.width > kMaxImagePixels) {
    throw UserError(path + " declares " + std::to_string(size.width) + " x " + std::to_string(size.height) +
                    " pixels, more than the " + std::to_string(kMaxImagePixels) +
                    " an image may have (a decompression bomb, or not a photograph).");
  }
}

// One TurboJPEG decompressor per thread: creating one costs more than decoding a CIFAR image.
tjhandle Decompressor() {
  struct Handle {
    tjhandle handle = tjInitDecompress();
    ~Handle() { tjDestroy(handle); }
  };
  thread_local Handle decompressor;
  CHECK(decompressor.handle != nullptr) << "tjInitDecompress failed";
  return decompressor.handle;
}

ImageSize JpegSize(const std::vector<uint8_t>& bytes, const std::string& path) {
  CheckJpegComplete(bytes, path);
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (tjDecompressHeader3(Decompressor(), bytes.data(), bytes.size(), &width, &height, &subsampling, &colorspace) !=
      0) {
    throw UserError(path + " cannot be decoded as a JPEG (libjpeg-turbo: " + tjGetErrorStr2(Decompressor()) + ").");
  }
  return {height, width};
}

// The smallest TurboJPEG scaling factor (factors of 1/8 .. 2 listed by the library) no larger than 1 whose output is
// at least min_height x min_width.
tjscalingfactor CoveringScale(const ImageSize& size, int64_t min_height, int64_t min_width) {
  int count = 0;
  const tjscalingfactor* factors = tjGetScalingFactors(&count);
  tjscalingfactor best = {1, 1};
  for (int i = 0; i < count; ++i) {
    const tjscalingfactor f = factors[i];
    if (f.num > f.denom) continue;
    const int64_t h = TJSCALED(size.height, f), w = TJSCALED(size.width, f);
    if (h >= min_height && w >= min_width && h * w < TJSCALED(size.height, best) * TJSCALED(size.width, best)) {
      best = f;
    }
  }
  return best;
}

// Interleaved RGB rows (height, width, 3) -> planar (3, height, width).
DecodedImage Planar(const uint8_t* rgb, int64_t height, int64_t width, int64_t row_stride, int64_t channel_of_r,
                    int64_t channel_of_b) {
  DecodedImage image;
  image.height = height;
  image.width = width;
  image.pixels.resize(3 * height * width);
  const int64_t plane = height * width;
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* row = rgb + y * row_stride;
    uint8_t* r = image.pixels.data() + y * width;
    for (int64_t x = 0; x < width; ++x) {
      r[x] = row[3 * x + channel_of_r];
      r[plane + x] = row[3 * x + 1];
      r[2 * plane + x] = row[3 * x + channel_of_b];
    }
  }
  return image;
}

DecodedImage DecodeJpeg(const std::vector<uint8_t>& bytes, const std::string& path, const ImageSize& size,
                        int64_t min_height, int64_t min_width) {
  const tjscalingfactor scale = CoveringScale(size, min_height, min_width);
  const int height = TJSCALED(static_cast<int>(size.height), scale);
  const int width = TJSCALED(static_cast<int>(size.width), scale);
  std::vector<uint8_t> rgb(static_cast<size_t>(3) * height * width);
  // Accurate (islow) DCT and fancy upsampling: libjpeg's defaults, what OpenCV and PIL decode with.
  if (tjDecompress2(Decompressor(), bytes.data(), bytes.size(), rgb.data(), width, 3 * width, height, TJPF_RGB,
                    TJFLAG_ACCURATEDCT) != 0 &&
      tjGetErrorCode(Decompressor()) == TJERR_FATAL) {
    throw UserError(path + " cannot be decoded as a JPEG (libjpeg-turbo: " + tjGetErrorStr2(Decompressor()) + ").");
  }
  return Planar(rgb.data(), height, width, 3 * width, 0, 2);
}

DecodedImage DecodeWithOpenCv(const std::vector<uint8_t>& bytes, const std::string& path) {
  cv::Mat image;
  try {
    // Pixels as stored, as torchvision reads them (PIL ignores EXIF orientation).
    image = cv::imdecode(bytes, cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION);
  } catch (const cv::Exception& e) {
    throw UserError(path + " cannot be decoded as an image (OpenCV: " + e.err + ").");
  }
  if (image.empty()) throw UserError(path + " cannot be decoded as an image (corrupt, or not a supported format).");
  CheckPixels({image.rows, image.cols}, path);
  return Planar(image.ptr<uint8_t>(), image.rows, image.cols, static_cast<int64_t>(image.step), 2, 0);  // BGR
}

}  // namespace

std::vector<uint8_t> ReadImageBytes(const std::string& path) {
  std::vector<uint8_t> bytes(FileSize(path));
  std::ifstream in(path, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()))) {
    throw UserError("Cannot read " + path + ".");
  }
  if (bytes.empty()) throw UserError(path + " is empty.");
  return bytes;
}

ImageSize ReadImageSize(const std::vector<uint8_t>& bytes, const std::string& path) {
  ImageSize size;
  if (IsJpeg(bytes)) {
    size = JpegSize(bytes, path);
  } else if (IsPng(bytes)) {  // IHDR: big-endian width and height at bytes 16..23
    const auto be32 = [&](size_t i) {
      return (int64_t{bytes[i]} << 24) | (int64_t{bytes[i + 1]} << 16) | (int64_t{bytes[i + 2]} << 8) | bytes[i + 3];
    };
    size = {be32(20), be32(16)};
  } else {
    const DecodedImage image = DecodeWithOpenCv(bytes, path);
    size = {image.height, image.width};
  }
  CheckPixels(size, path);
  return size;
}

DecodedImage DecodeImage(const std::vector<uint8_t>& bytes, const std::string& path, int64_t min_height,
                         int64_t min_width) {
  const ImageSize size = ReadImageSize(bytes, path);
  if (IsJpeg(bytes)) return DecodeJpeg(bytes, path, size, min_height, min_width);
  return DecodeWithOpenCv(bytes, path);
}

}  // namespace tempered
