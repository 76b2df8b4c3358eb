#include "trainer/io/npy.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

#include "common/errors.h"
#include "common/files.h"

namespace tempered {
namespace {

// The .npy layout: "\x93NUMPY", major and minor version bytes, the header length (uint16 LE for 1.0, uint32 LE for
// 2.0 and 3.0), then a Python dict literal such as {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// padded with spaces and a newline, then the raw data.
constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;

struct DType {
  const char* descr;
  torch::ScalarType type;
};
constexpr DType kDTypes[] = {
    {"<f4", torch::kFloat}, {"<f8", torch::kDouble}, {"<i4", torch::kInt}, {"<i8", torch::kLong}};

}  // namespace

std::string NpyShape(torch::IntArrayRef shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

namespace {

// The value of `key` in the header dict, up to the next top-level ',' or '}' ("'<f4'", "False", "(3, 4)").
std::string HeaderValue(const std::string& header, const std::string& key, const std::string& path) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) at = header.find("\"" + key + "\"");
  const size_t colon = at == std::string::npos ? at : header.find(':', at);
  if (colon == std::string::npos) throw UserError(path + ": the .npy header has no '" + key + "' entry.");
  const size_t begin = header.find_first_not_of(' ', colon + 1);
  const bool tuple = begin != std::string::npos && header[begin] == '(';
  const size_t end = begin == std::string::npos ? begin
                     : tuple                    ? header.find(')', begin)
                                                : header.find_first_of(",}", begin);
  if (end == std::string::npos) throw UserError(path + ": malformed .npy header " + header);
  return header.substr(begin, end - begin + (tuple ? 1 : 0));
}

std::vector<int64_t> ParseShape(const std::string& text, const std::string& path) {
  std::vector<int64_t> shape;
  if (text.size() < 2 || text.front() != '(' || text.back() != ')') {
    throw UserError(path + ": malformed shape '" + text + "' in the .npy header, expected a tuple.");
  }
  std::string inner = text.substr(1, text.size() - 2);  // without the parentheses
  std::stringstream items(inner);
  for (std::string item; std::getline(items, item, ',');) {
    if (item.find_first_not_of(' ') == std::string::npos) continue;  // the trailing comma of (3,)
    try {
      size_t used = 0;
      const long long dim = std::stoll(item, &used);
      if (dim < 0 || item.find_first_not_of(' ', used) != std::string::npos) throw std::invalid_argument(item);
      shape.push_back(dim);
    } catch (const std::exception&) {
      throw UserError(path + ": malformed shape " + text + " in the .npy header.");
    }
  }
  return shape;
}

struct NpyHeader {
  std::string dict;    // the Python dict literal
  size_t data_offset;  // where the raw data starts
};

NpyHeader SplitHeader(const std::string& bytes, const std::string& path) {
  if (bytes.size() < kMagicSize + 4 || bytes.compare(0, kMagicSize, kMagic) != 0) {
    throw UserError(path + " is not a .npy file (it does not start with \\x93NUMPY); save it with numpy.save.");
  }
  const auto byte = [&](size_t i) { return static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])); };
  const int major = static_cast<int>(byte(6));
  if (major < 1 || major > 3) throw UserError(path + " has .npy format version " + std::to_string(major) +
                                              ".x; expected 1.0, 2.0 or 3.0.");
  const size_t length_size = major == 1 ? 2 : 4;
  if (bytes.size() < 8 + length_size) throw UserError(path + " is truncated inside its .npy header.");
  uint64_t header_length = 0;
  for (size_t i = 0; i < length_size; ++i) header_length |= byte(8 + i) << (8 * i);
  const size_t data_offset = 8 + length_size + header_length;
  if (bytes.size() < data_offset) throw UserError(path + " is truncated inside its .npy header.");
  return {bytes.substr(8 + length_size, header_length), data_offset};
}

const DType& DTypeOf(const std::string& header, const std::string& path) {
  std::string descr = HeaderValue(header, "descr", path);
  descr = descr.size() >= 2 ? descr.substr(1, descr.size() - 2) : "";  // strip the quotes ('descr': , has none)
  for (const DType& candidate : kDTypes) {
    if (descr == candidate.descr) return candidate;
  }
  throw UserError(path + " has dtype '" + descr +
                  "'; expected little-endian float32, float64, int32 or int64 ('<f4', '<f8', '<i4', '<i8').");
}

// The data size is checked against the file before anything is allocated: a damaged shape such as
// (544804800, 9999) must not allocate terabytes (or overflow) to find out that the file is 100 bytes long.
size_t CheckedDataSize(const std::vector<int64_t>& shape, const DType& dtype, size_t found, const std::string& path) {
  size_t expected = std::count(shape.begin(), shape.end(), 0) > 0 ? 0 : torch::elementSize(dtype.type);
  for (int64_t dim : shape) {
    if (expected > found / static_cast<size_t>(std::max<int64_t>(dim, 1))) {
      expected = SIZE_MAX;  // more than the file holds
      break;
    }
    expected *= static_cast<size_t>(dim);
  }
  if (found != expected) {
    const std::string promised = expected == SIZE_MAX ? "more than " + std::to_string(found) : std::to_string(expected);
    throw UserError(path + (found < expected ? " is truncated" : " has trailing bytes") + ": its header promises " +
                    NpyShape(shape) + " " + dtype.descr + " (" + promised + " bytes of data) but the file holds " +
                    std::to_string(found) + ".");
  }
  return expected;
}

void CheckFinite(const torch::Tensor& tensor, const std::string& path) {
  if (!tensor.is_floating_point() || tensor.numel() == 0) return;
  const torch::Tensor bad = torch::isfinite(tensor).logical_not().view(-1).nonzero();
  if (bad.numel() > 0) {
    throw UserError(path + " contains NaN or infinite values (first at flat index " +
                    std::to_string(bad[0].item<int64_t>()) + ").");
  }
}

}  // namespace

torch::Tensor ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError("Cannot open " + path + " (" + std::strerror(errno) + ").");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const NpyHeader header = SplitHeader(bytes, path);
  const DType& dtype = DTypeOf(header.dict, path);
  if (HeaderValue(header.dict, "fortran_order", path) != "False") {
    throw UserError(path + " is stored in Fortran order; save numpy.ascontiguousarray(x) instead.");
  }
  const std::vector<int64_t> shape = ParseShape(HeaderValue(header.dict, "shape", path), path);
  const size_t size = CheckedDataSize(shape, dtype, bytes.size() - header.data_offset, path);
  torch::Tensor tensor = torch::empty(shape, torch::TensorOptions().dtype(dtype.type));
  // An empty tensor's data_ptr() is null, and memcpy from or to null is undefined even for 0 bytes (UBSan).
  if (size > 0) std::memcpy(tensor.data_ptr(), bytes.data() + header.data_offset, size);  // little-endian host
  CheckFinite(tensor, path);
  return tensor;
}

torch::Tensor ReadNpyMatrix(const std::string& path, int64_t min_rows) {
  torch::Tensor x = ReadNpy(path);
  if (!x.is_floating_point()) {
    throw UserError(path + " holds integers; expected float32 or float64 embeddings.");
  }
  if (x.dim() != 2 || x.size(1) == 0) {
    throw UserError(path + " has shape " + NpyShape(x.sizes()) + "; expected a 2-D array (rows, dim).");
  }
  if (x.size(0) < min_rows) {
    throw UserError(path + " has " + std::to_string(x.size(0)) + " rows; expected at least " +
                    std::to_string(min_rows) + ".");
  }
  return x.to(torch::kDouble);
}

torch::Tensor ReadNpyLabels(const std::string& path, int64_t rows) {
  torch::Tensor y = ReadNpy(path);
  if (y.is_floating_point()) throw UserError(path + " holds floats; expected int32 or int64 class labels.");
  if (y.dim() != 1 || y.size(0) != rows) {
    throw UserError(path + " has shape " + NpyShape(y.sizes()) + "; expected (" + std::to_string(rows) +
                    ",), one label per embedding.");
  }
  return y.to(torch::kLong);
}

void WriteNpy(const std::string& path, const torch::Tensor& tensor) {
  const torch::Tensor t = tensor.detach().contiguous().cpu();
  const DType* dtype = nullptr;
  for (const DType& candidate : kDTypes) {
    if (t.scalar_type() == candidate.type) dtype = &candidate;
  }
  if (dtype == nullptr) throw std::invalid_argument("WriteNpy: unsupported dtype " + std::string(t.dtype().name()));
  std::string header = std::string("{'descr': '") + dtype->descr + "', 'fortran_order': False, 'shape': " +
                       NpyShape(t.sizes()) + ", }";
  // Pad with spaces so that the data starts at a multiple of 64 bytes, newline last (as numpy does).
  const size_t unpadded = kMagicSize + 4 + header.size() + 1;
  header += std::string((64 - unpadded % 64) % 64, ' ') + "\n";
  const char version_and_length[4] = {1, 0, static_cast<char>(header.size() & 0xff),
                                      static_cast<char>(header.size() >> 8)};
  // Atomically (a temp file renamed over path): a full disk leaves the file before, not half an array.
  WriteFileAtomically(
      path,
      [&](const FileWriter& write) {
        write(kMagic, kMagicSize);
        write(version_and_length, 4);
        write(header.data(), header.size());
        write(t.data_ptr(), static_cast<size_t>(t.numel() * t.element_size()));
      });
}

}  // namespace tempered
