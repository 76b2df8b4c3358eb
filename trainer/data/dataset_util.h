// Checks shared by the data set readers (data.cc, datasets_*.cc); not part of the data layer's interface.
#pragma once

#include <torch/torch.h>

#include <string>

namespace tempered {

// Throws UserError "<what> <dir> does not exist or is not a directory."
void RequireDirectory(const std::string& dir, const std::string& what);
// Throws UserError naming `path` and the first label (and its index) outside [0, num_classes).
void CheckLabelRange(const torch::Tensor& labels, int64_t num_classes, const std::string& path);
// The size of a file, or UserError naming it when it is missing or not a regular file.
int64_t FileSize(const std::string& path);

struct Dataset;
struct ImageFolderOptions;
// LoadImageFolder on a folder ListImageFolder has listed already (its files decoded into memory).
Dataset DecodeImageFolder(Dataset listed, const ImageFolderOptions& options);

}  // namespace tempered
