// launch/npy: round trips of every supported dtype and rank (including empty arrays and scalars), a version 2.0
// header as numpy writes for large headers, and UserError (never a crash) for malformed files. Compatibility with
// numpy itself is covered by analyze_test.py, which writes with numpy.save and reads with numpy.load.
#include "trainer/io/npy.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "common/errors.h"

namespace tempered {
namespace {

std::string TempPath(const std::string& name) {
  return testing::TempDir() + "/npy_test_" + name;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

TEST(Npy, RoundTripsEveryDtypeAndRank) {
  const std::string path = TempPath("round_trip.npy");
  for (torch::ScalarType type : {torch::kFloat, torch::kDouble, torch::kInt, torch::kLong}) {
    for (std::vector<int64_t> shape : std::vector<std::vector<int64_t>>{{}, {0}, {5}, {3, 4}, {0, 7}, {2, 3, 4}}) {
      const torch::Tensor x = (torch::randn(shape) * 100).to(type);
      WriteNpy(path, x);
      const torch::Tensor y = ReadNpy(path);
      EXPECT_EQ(y.scalar_type(), type);
      EXPECT_EQ(y.sizes(), x.sizes());
      EXPECT_TRUE(torch::equal(x, y)) << NpyShape(shape);
    }
  }
  std::remove(path.c_str());
}

TEST(Npy, ReadsVersion2Header) {
  const std::string header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
  std::string bytes = std::string("\x93NUMPY\x02\x00", 8);
  const uint32_t length = static_cast<uint32_t>(header.size());
  bytes.append(reinterpret_cast<const char*>(&length), 4);  // little-endian host
  bytes += header;
  const double values[2] = {1.5, -2.25};
  bytes.append(reinterpret_cast<const char*>(values), sizeof values);
  const std::string path = TempPath("v2.npy");
  WriteBytes(path, bytes);
  const torch::Tensor x = ReadNpy(path);
  EXPECT_TRUE(torch::equal(x, torch::tensor({1.5, -2.25}, torch::kDouble)));
  std::remove(path.c_str());
}

TEST(Npy, MalformedFilesThrowUserError) {
  const std::string path = TempPath("bad.npy");
  const std::string good_header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
  auto with_header = [](const std::string& header, size_t data_bytes) {
    std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
    bytes += static_cast<char>(header.size() & 0xff);
    bytes += static_cast<char>(header.size() >> 8);
    return bytes + header + std::string(data_bytes, '\0');
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "not a .npy file"},
      {"\x93NUMPY", "not a .npy file"},
      {with_header(good_header, 15), "truncated"},
      {with_header(good_header, 17), "trailing bytes"},
      {with_header(good_header, 16).substr(0, 20), "truncated inside its .npy header"},
      {with_header("{'descr': '<c8', 'fortran_order': False, 'shape': (2, 2), }", 32), "'<c8'"},
      {with_header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16), "Fortran"},
      {with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", 16), "malformed shape"},
      {with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -2), }", 16), "malformed shape"},
      {with_header("{'descr': '<f4', 'fortran_order': False}", 16), "no 'shape' entry"},
      {with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2", 16), "malformed .npy header"},
  };
  for (const auto& [bytes, expected] : cases) {
    WriteBytes(path, bytes);
    try {
      ReadNpy(path);
      ADD_FAILURE() << "no error for a file that should give: " << expected;
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << "the message names the file: " << e.what();
    }
  }
  WriteNpy(path, torch::tensor({1.0f, NAN, 3.0f}));
  EXPECT_THROW(ReadNpy(path), UserError);
  WriteNpy(path, torch::ones({3, 2}, torch::kLong));
  EXPECT_THROW(ReadNpyMatrix(path), UserError);  // integers are not embeddings
  EXPECT_THROW(ReadNpyLabels(path, 3), UserError);  // labels are (rows,)
  EXPECT_THROW(ReadNpy(TempPath("missing.npy")), UserError);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace tempered
