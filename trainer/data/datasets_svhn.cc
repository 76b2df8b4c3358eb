// SVHN's cropped-digit .mat files, read with matio.
#include <matio.h>

#include <memory>
#include <mutex>
#include <string>

#include "common/errors.h"
#include "trainer/data/data.h"
#include "trainer/data/dataset_util.h"

namespace tempered {
namespace {

// matio reports why a read failed through its log; keep the last message for the UserError instead of letting
// matio print it. The log function is process-wide, so it is installed once.
std::string& MatioMessage() {
  static std::string message;
  return message;
}

void InstallMatioLog() {
  static std::once_flag once;
  std::call_once(once, [] {
    Mat_LogInitFunc("tempered", [](int level, char* message) {
      if (level <= MATIO_LOG_LEVEL_WARNING) MatioMessage() = message;
    });
  });
}

std::string MatioReason() {
  return MatioMessage().empty() ? "" : " (matio: " + MatioMessage() + ")";
}

using MatFile = std::unique_ptr<mat_t, int (*)(mat_t*)>;
using MatVar = std::unique_ptr<matvar_t, void (*)(matvar_t*)>;

// The header of variable `name` (dimensions and class, no data), or UserError when the file lacks it.
MatVar ReadVarInfo(mat_t* mat, const char* name, const std::string& path) {
  MatioMessage().clear();
  MatVar var(Mat_VarReadInfo(mat, name), Mat_VarFree);
  if (var == nullptr) {
    throw UserError(path + " has no readable variable " + name + MatioReason() + ", expected SVHN's X and y.");
  }
  return var;
}

int64_t NumElements(const matvar_t& var) {
  int64_t n = 1;
  for (int i = 0; i < var.rank; ++i) n *= static_cast<int64_t>(var.dims[i]);
  return n;
}

std::string Dims(const matvar_t& var) {
  std::string text;
  for (int i = 0; i < var.rank; ++i) text += (i ? "x" : "") + std::to_string(var.dims[i]);
  return text;
}

// Reads the `count` elements of `var` (in its own class, no conversion) into `data`.
void ReadVarData(mat_t* mat, matvar_t* var, void* data, int64_t count, const std::string& path) {
  MatioMessage().clear();
  if (Mat_VarReadDataLinear(mat, var, data, 0, 1, static_cast<int>(count)) != 0) {
    throw UserError(path + " is truncated or corrupt: cannot read variable " + var->name + MatioReason() + ".");
  }
}

// y as int64, from whichever real numeric class the file stores it in (uint8 in the official files).
template <typename T>
torch::Tensor ReadLabelsAs(mat_t* mat, matvar_t* var, int64_t count, torch::ScalarType type,
                           const std::string& path) {
  torch::Tensor values = torch::empty({count}, type);
  ReadVarData(mat, var, values.data_ptr<T>(), count, path);
  return values.to(torch::kInt64);
}

torch::Tensor ReadLabels(mat_t* mat, matvar_t* var, int64_t count, const std::string& path) {
  switch (var->class_type) {
    case MAT_C_UINT8: return ReadLabelsAs<uint8_t>(mat, var, count, torch::kUInt8, path);
    case MAT_C_INT32: return ReadLabelsAs<int32_t>(mat, var, count, torch::kInt32, path);
    case MAT_C_INT64: return ReadLabelsAs<int64_t>(mat, var, count, torch::kInt64, path);
    case MAT_C_DOUBLE: {
      torch::Tensor values = torch::empty({count}, torch::kDouble);
      ReadVarData(mat, var, values.data_ptr<double>(), count, path);
      if (!values.eq(values.round()).all().item<bool>()) throw UserError(path + " has non-integer labels in y.");
      return values.to(torch::kInt64);
    }
    default:
      throw UserError(path + " stores y as matio class " + std::to_string(var->class_type) +
                      ", expected uint8, int32, int64 or double labels.");
  }
}

}  // namespace

Dataset LoadSvhn(const std::string& dir, bool train) {
  RequireDirectory(dir, "The SVHN directory");
  const std::string path = dir + (train ? "/train_32x32.mat" : "/test_32x32.mat");
  FileSize(path);  // a missing file says so, rather than "not a MAT file"
  InstallMatioLog();
  MatioMessage().clear();
  MatFile mat(Mat_Open(path.c_str(), MAT_ACC_RDONLY), Mat_Close);
  if (mat == nullptr) throw UserError(path + " is not a MAT file (v5 or v7.3)" + MatioReason() + ".");

  // X: 32x32x3xN uint8 in MATLAB's column-major order (a single image may drop its trailing 1: 32x32x3).
  MatVar x = ReadVarInfo(mat.get(), "X", path);
  const bool image_dims = (x->rank == 4 || x->rank == 3) && x->dims[0] == 32 && x->dims[1] == 32 && x->dims[2] == 3;
  if (!image_dims || x->class_type != MAT_C_UINT8 || x->isComplex) {
    throw UserError(path + " has X of " + Dims(*x) + " elements of matio class " + std::to_string(x->class_type) +
                    ", expected uint8 32x32x3xN (SVHN's cropped digits).");
  }
  const int64_t count = x->rank == 4 ? static_cast<int64_t>(x->dims[3]) : 1;
  MatVar y = ReadVarInfo(mat.get(), "y", path);
  if (NumElements(*y) != count || y->isComplex) {
    throw UserError(path + " has y of " + Dims(*y) + " elements but X holds " + std::to_string(count) +
                    " images, expected one label per image.");
  }

  // Column-major 32x32x3xN is row-major (N, 3, column, row): swap the last two axes to get (N, 3, H, W).
  torch::Tensor images = torch::empty({count, 3, 32, 32}, torch::kUInt8);
  ReadVarData(mat.get(), x.get(), images.data_ptr<uint8_t>(), images.numel(), path);
  Dataset data;
  data.images = images.transpose(2, 3).contiguous();
  // Labels 1..10, where 10 stands for the digit 0: check the file's range, then map 10 to 0.
  const torch::Tensor labels = ReadLabels(mat.get(), y.get(), count, path);
  const torch::Tensor bad = labels.lt(1).logical_or(labels.gt(10)).nonzero();
  if (bad.numel() > 0) {
    const int64_t i = bad[0][0].item<int64_t>();
    throw UserError(path + " has label " + std::to_string(labels[i].item<int64_t>()) + " at index " +
                    std::to_string(i) + " of y, expected labels in 1..10 (10 is the digit 0).");
  }
  data.labels = labels.remainder(10);
  data.num_classes = 10;
  return data;
}

}  // namespace tempered
