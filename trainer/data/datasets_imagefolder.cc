// ImageNet-style image folders: listed (for streaming, data.storage STREAM), or decoded once into a fixed
// resolution held in memory (MEMORY).
#include <ATen/Parallel.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "common/errors.h"
#include "common/stop.h"
#include "trainer/data/data.h"
#include "trainer/data/dataset_util.h"
#include "trainer/data/image_decode.h"

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

// Decodes one image file into out (3, size, size) RGB: decoded at the smallest JPEG scale that keeps the shorter
// side at least `size`, the shorter side resized to `size` (area averaging when shrinking, bilinear when enlarging),
// then the centre square.
void DecodeInto(const std::string& path, int64_t size, uint8_t* out) {
  const std::vector<uint8_t> bytes = ReadImageBytes(path);
  const ImageSize original = ReadImageSize(bytes, path);
  const double cover = static_cast<double>(size) / std::min(original.height, original.width);
  const DecodedImage decoded = DecodeImage(bytes, path, static_cast<int64_t>(std::ceil(original.height * cover)),
                                           static_cast<int64_t>(std::ceil(original.width * cover)));
  const int h = static_cast<int>(decoded.height), w = static_cast<int>(decoded.width);
  std::vector<cv::Mat> planes;
  for (int c = 0; c < 3; ++c) {
    planes.emplace_back(h, w, CV_8UC1, const_cast<uint8_t*>(decoded.pixels.data()) + static_cast<size_t>(c) * h * w);
  }
  cv::Mat image;
  cv::merge(planes, image);
  const double scale = static_cast<double>(size) / std::min(h, w);
  const int rows = std::max<int>(size, static_cast<int>(std::lround(h * scale)));
  const int cols = std::max<int>(size, static_cast<int>(std::lround(w * scale)));
  cv::Mat resized;
  cv::resize(image, resized, cv::Size(cols, rows), 0, 0, scale < 1 ? cv::INTER_AREA : cv::INTER_LINEAR);
  const cv::Mat square = resized(cv::Rect((cols - size) / 2, (rows - size) / 2, size, size));
  // Interleaved RGB (size, size, 3) -> planar RGB (3, size, size).
  for (int64_t y = 0; y < size; ++y) {
    const uint8_t* row = square.ptr<uint8_t>(static_cast<int>(y));
    for (int64_t x = 0; x < size; ++x) {
      for (int64_t c = 0; c < 3; ++c) out[(c * size + y) * size + x] = row[3 * x + c];
    }
  }
}

}  // namespace

Dataset ListImageFolder(const std::string& dir, bool train) {
  RequireDirectory(dir, "The image folder");
  const std::string train_dir = dir + "/train";
  RequireDirectory(train_dir, "The training split (ImageNet layout: root/train/<class>/<image>)");
  const std::vector<std::string> classes = SortedEntries(train_dir, /*want_folders=*/true);
  if (classes.empty()) throw UserError(train_dir + " has no class folders, expected root/train/<class>/<image>.");
  // The validation split: ImageNet's val/, or test/ where there is no val/ (CIFAR-10's JPEG releases).
  std::error_code ignored;
  const bool has_val = fs::is_directory(dir + "/val", ignored);
  const std::string split_dir = train ? train_dir : dir + (has_val || !fs::is_directory(dir + "/test", ignored)
                                                               ? "/val" : "/test");
  if (!train) {
    RequireDirectory(split_dir, "The validation split (ImageNet layout: root/val/<class>/<image>, or root/test/)");
  }

  // Files and labels; the validation split's classes must be among the training split's.
  auto files = std::make_shared<ImageFiles>();
  std::vector<int64_t> labels;
  for (const std::string& name : SortedEntries(split_dir, /*want_folders=*/true)) {
    const auto found = std::lower_bound(classes.begin(), classes.end(), name);
    if (found == classes.end() || *found != name) {
      throw UserError(split_dir + "/" + name + " is a class folder that " + train_dir + " does not have.");
    }
    const std::string class_dir = split_dir + "/" + name;
    if (StopSignalled()) throw StoppedBySignal("listing " + class_dir);
    const std::vector<std::string> names = SortedEntries(class_dir, /*want_folders=*/false);
    if (names.empty()) throw UserError(class_dir + " has no image files (.jpg, .jpeg, .png, ...).");
    for (const std::string& file : names) {
      files->paths.push_back(class_dir + "/" + file);
      labels.push_back(found - classes.begin());
    }
  }
  if (labels.empty()) throw UserError(split_dir + " has no class folders, expected " + split_dir + "/<class>/<image>.");
  Dataset data;
  data.files = std::move(files);
  data.labels = torch::tensor(labels, torch::kInt64);
  data.num_classes = static_cast<int64_t>(classes.size());
  return data;
}

Dataset LoadImageFolder(const std::string& dir, bool train, const ImageFolderOptions& options) {
  return DecodeImageFolder(ListImageFolder(dir, train), options);
}

Dataset DecodeImageFolder(Dataset data, const ImageFolderOptions& options) {
  CHECK_GT(options.image_size, 0);
  const std::vector<std::string>& paths = data.files->paths;
  const int64_t size = options.image_size, count = data.size();
  data.images = torch::empty({count, 3, size, size}, torch::kUInt8);
  uint8_t* images = data.images.data_ptr<uint8_t>();
  // Images are independent: decode them in parallel (at::parallel_for rethrows the first exception here).
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (StopSignalled()) throw StoppedBySignal("decoding " + paths[i]);
      DecodeInto(paths[i], size, images + i * 3 * size * size);
    }
  });
  data.files = nullptr;
  return data;
}

}  // namespace tempered
