// NumPy .npy files (format versions 1.0 to 3.0, little-endian, C order): the exchange format of tempered-analyze, of
// the golden tests and of tempered-train's --save_embeddings. A file that is not what it should be throws UserError
// with one sentence naming the file.
#pragma once

#include <torch/torch.h>

#include <string>

namespace tempered {

// Reads a float32, float64, int32 or int64 array into a tensor of the same dtype and shape. Non-finite floats are
// rejected: every Tempered input is an embedding or a label, and a NaN would only resurface as a NaN loss.
torch::Tensor ReadNpy(const std::string& path);

// ReadNpy, then checks what the analysis needs and converts:
//   a floating (rows, dim) matrix with rows >= min_rows -> float64;
//   an integer (rows) vector -> int64.
torch::Tensor ReadNpyMatrix(const std::string& path, int64_t min_rows = 1);
torch::Tensor ReadNpyLabels(const std::string& path, int64_t rows);

// A shape as numpy prints it: (6, 8), (6,), ().
std::string NpyShape(torch::IntArrayRef shape);

// Writes a float32, float64, int32 or int64 tensor of any shape as a version 1.0 .npy file, atomically. UserError
// naming the file when it cannot be written.
void WriteNpy(const std::string& path, const torch::Tensor& tensor);

}  // namespace tempered
