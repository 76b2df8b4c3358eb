// Built instead of datasets_svhn.cc and datasets_imagefolder.cc when CMake's TEMPERED_DATASETS is OFF (no matio,
// no OpenCV): those data sets then fail with a clear message.
#include "trainer/data.h"
#include "trainer/errors.h"

namespace tempered {

Dataset LoadSvhn(const std::string& dir, bool train) {
  throw UserError("data.dataset svhn needs matio: this tempered-train was built with -DTEMPERED_DATASETS=OFF.");
}

Dataset LoadImageFolder(const std::string& dir, bool train, const ImageFolderOptions& options) {
  throw UserError("data.dataset imagefolder needs OpenCV: this tempered-train was built with -DTEMPERED_DATASETS=OFF.");
}

}  // namespace tempered
