// ImageNet-style image folders, decoded with OpenCV into a fixed resolution held in memory.
#include <ATen/Parallel.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "trainer/data.h"
#include "trainer/dataset_util.h"
#include "trainer/errors.h"

namespace tempered {
namespace {

namespace fs = std::filesystem;

// torchvision's ImageFolder extensions, compared in lower case.
bool HasImageExtension(const fs::path& path) {
  static const std::set<std::string> kExtensions = {".jpg", ".jpeg", ".png", ".bmp", ".ppm",
                                                    ".pgm", ".tif", ".tiff", ".webp"};
  std::string extension = path.extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return kExtensions.count(extension) > 0;
}

// Sorted names of the entries of `dir` that are folders (want_folders) or image files (!want_folders).
std::vector<std::string> SortedEntries(const std::string& dir, bool want_folders) {
  std::vector<std::string> names;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name[0] == '.') continue;  // hidden files and folders
    if (want_folders ? entry.is_directory() : entry.is_regular_file() && HasImageExtension(entry.path())) {
      names.push_back(name);
    }
  }
  if (error) throw UserError("Cannot list " + dir + ": " + error.message() + ".");
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::vector<uint8_t> bytes(FileSize(path));
  std::ifstream in(path, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()))) {
    throw UserError("Cannot read " + path + ".");
  }
  return bytes;
}

bool IsStandaloneMarker(uint8_t marker) { return (marker >= 0xd0 && marker <= 0xd7) || marker == 0x01; }  // RSTn, TEM

// Walks a JPEG's markers from SOI to EOI: segments carry a 2-byte length, and the entropy-coded data after each SOS
// runs to the next 0xFF that is neither 0x00 stuffing nor a restart marker. Returns the frame's (height, width) from
// its SOF segment. A file that ends before EOI (a cut-short download) throws UserError: OpenCV's decoder would only
// print a warning and return the image with its missing rows grey. Bytes between segments are skipped, as libjpeg
// does.
cv::Size CheckJpegComplete(const std::vector<uint8_t>& bytes, const std::string& path) {
  const size_t n = bytes.size();
  const auto truncated = [&] {
    return UserError(path + " is truncated: its JPEG data ends before the end-of-image marker.");
  };
  cv::Size size;
  size_t i = 2;  // after SOI
  while (true) {
    while (i < n && bytes[i] != 0xff) ++i;
    while (i < n && bytes[i] == 0xff) ++i;  // 0xFF fill bytes
    if (i >= n) throw truncated();
    const uint8_t marker = bytes[i++];
    if (marker == 0xd9) return size;  // EOI
    if (IsStandaloneMarker(marker)) continue;
    if (i + 2 > n) throw truncated();
    const size_t length = (size_t{bytes[i]} << 8) | bytes[i + 1];
    if (length < 2) {
      throw UserError(path + " is corrupt: a JPEG segment declares a length of " + std::to_string(length) + ".");
    }
    if (i + length > n) throw truncated();
    // SOF0..SOF15 except DHT (c4), JPG (c8) and DAC (cc): length, precision, height, width.
    const bool frame = marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 && marker != 0xcc;
    if (frame && length >= 7) {
      size.height = (bytes[i + 3] << 8) | bytes[i + 4];
      size.width = (bytes[i + 5] << 8) | bytes[i + 6];
    }
    i += length;
    if (marker == 0xda) {  // SOS: skip the entropy-coded scan
      while (i + 1 < n && !(bytes[i] == 0xff && bytes[i + 1] != 0x00 && !IsStandaloneMarker(bytes[i + 1]))) ++i;
      if (i + 1 >= n) throw truncated();
    }
  }
}

// OpenCV's decoder can scale a JPEG down by 2, 4 or 8 while decoding (libjpeg's DCT scaling), several times faster
// than decoding at full size. Take the largest factor that keeps the shorter side at least `target`.
int DecodeFlags(const cv::Size& jpeg_size, int64_t target) {
  // Pixels as stored, as torchvision reads them (PIL ignores EXIF orientation).
  const int base = cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION;
  const int shorter = std::min(jpeg_size.height, jpeg_size.width);
  if (shorter >= 8 * target) return base | cv::IMREAD_REDUCED_COLOR_8;
  if (shorter >= 4 * target) return base | cv::IMREAD_REDUCED_COLOR_4;
  if (shorter >= 2 * target) return base | cv::IMREAD_REDUCED_COLOR_2;
  return base;
}

// Decodes one image file into out (3, size, size) RGB: the shorter side resized to `size` (area averaging when
// shrinking, bilinear when enlarging), then the centre square.
void DecodeInto(const std::string& path, int64_t size, uint8_t* out) {
  const std::vector<uint8_t> bytes = ReadBytes(path);
  if (bytes.empty()) throw UserError(path + " is empty.");
  const bool jpeg = bytes.size() >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff;
  const int flags = jpeg ? DecodeFlags(CheckJpegComplete(bytes, path), size)
                         : cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION;
  cv::Mat image;
  try {
    image = cv::imdecode(bytes, flags);
  } catch (const cv::Exception& e) {
    throw UserError(path + " cannot be decoded as an image (OpenCV: " + e.err + ").");
  }
  if (image.empty()) throw UserError(path + " cannot be decoded as an image (corrupt, or not a supported format).");

  const double scale = static_cast<double>(size) / std::min(image.rows, image.cols);
  const int rows = std::max<int>(size, static_cast<int>(std::lround(image.rows * scale)));
  const int cols = std::max<int>(size, static_cast<int>(std::lround(image.cols * scale)));
  cv::Mat resized;
  cv::resize(image, resized, cv::Size(cols, rows), 0, 0, scale < 1 ? cv::INTER_AREA : cv::INTER_LINEAR);
  const cv::Mat square = resized(cv::Rect((cols - size) / 2, (rows - size) / 2, size, size));
  // Interleaved BGR (size, size, 3) -> planar RGB (3, size, size).
  for (int64_t y = 0; y < size; ++y) {
    const uint8_t* row = square.ptr<uint8_t>(static_cast<int>(y));
    for (int64_t x = 0; x < size; ++x) {
      for (int64_t c = 0; c < 3; ++c) out[(c * size + y) * size + x] = row[3 * x + (2 - c)];
    }
  }
}

}  // namespace

Dataset LoadImageFolder(const std::string& dir, bool train, const ImageFolderOptions& options) {
  CHECK_GT(options.image_size, 0);
  RequireDirectory(dir, "The image folder");
  const std::string train_dir = dir + "/train";
  RequireDirectory(train_dir, "The training split (ImageNet layout: root/train/<class>/<image>)");
  const std::vector<std::string> classes = SortedEntries(train_dir, /*want_folders=*/true);
  if (classes.empty()) throw UserError(train_dir + " has no class folders, expected root/train/<class>/<image>.");
  const std::string split_dir = train ? train_dir : dir + "/val";
  if (!train) RequireDirectory(split_dir, "The validation split (ImageNet layout: root/val/<class>/<image>)");

  // Files and labels; the validation split's classes must be among the training split's.
  std::vector<std::string> paths;
  std::vector<int64_t> labels;
  for (const std::string& name : SortedEntries(split_dir, /*want_folders=*/true)) {
    const auto found = std::lower_bound(classes.begin(), classes.end(), name);
    if (found == classes.end() || *found != name) {
      throw UserError(split_dir + "/" + name + " is a class folder that " + train_dir + " does not have.");
    }
    const std::string class_dir = split_dir + "/" + name;
    const std::vector<std::string> files = SortedEntries(class_dir, /*want_folders=*/false);
    if (files.empty()) throw UserError(class_dir + " has no image files (.jpg, .jpeg, .png, ...).");
    for (const std::string& file : files) {
      paths.push_back(class_dir + "/" + file);
      labels.push_back(found - classes.begin());
    }
  }
  if (paths.empty()) throw UserError(split_dir + " has no class folders, expected " + split_dir + "/<class>/<image>.");

  const int64_t size = options.image_size, count = static_cast<int64_t>(paths.size());
  Dataset data;
  data.images = torch::empty({count, 3, size, size}, torch::kUInt8);
  uint8_t* images = data.images.data_ptr<uint8_t>();
  // Images are independent: decode them in parallel (at::parallel_for rethrows the first UserError here).
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) DecodeInto(paths[i], size, images + i * 3 * size * size);
  });
  data.labels = torch::tensor(labels, torch::kInt64);
  data.num_classes = static_cast<int64_t>(classes.size());
  return data;
}

}  // namespace tempered
