// Built instead of datasets_svhn.cc and datasets_imagefolder.cc when CMake's TEMPERED_DATASETS is OFF (no matio,
// no OpenCV): those data sets then fail with a clear message.
#include "trainer/data/data.h"
#include "common/errors.h"
#include "trainer/data/dataset_util.h"
#include "trainer/data/image_decode.h"

namespace tempered {

Dataset LoadSvhn(const std::string& dir, bool train) {
  throw UserError("data.dataset svhn needs matio: this tempered-train was built with -DTEMPERED_DATASETS=OFF.");
}

namespace {

[[noreturn]] void NoImageFolders() {
  throw UserError("data.dataset imagefolder needs OpenCV and libjpeg-turbo: this tempered-train was built with "
                  "-DTEMPERED_DATASETS=OFF.");
}

}  // namespace

Dataset LoadImageFolder(const std::string& dir, bool train, const ImageFolderOptions& options) { NoImageFolders(); }
Dataset ListImageFolder(const std::string& dir, bool train) { NoImageFolders(); }
Dataset DecodeImageFolder(Dataset listed, const ImageFolderOptions& options) { NoImageFolders(); }
std::vector<uint8_t> ReadImageBytes(const std::string& path) { NoImageFolders(); }
ImageSize ReadImageSize(const std::vector<uint8_t>& bytes, const std::string& path) { NoImageFolders(); }
DecodedImage DecodeImage(const std::vector<uint8_t>& bytes, const std::string& path, int64_t min_height,
                         int64_t min_width) {
  NoImageFolders();
}

}  // namespace tempered
