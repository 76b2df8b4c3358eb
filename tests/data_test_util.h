// Helpers of the data tests: a temporary directory that files are written into, the check that a reader's
// UserError names the file, and a set of random images.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common/errors.h"
#include "trainer/data/data.h"

namespace tempered {

// `count` uniformly random uint8 images of channels x height x width (labels all 0, one class), from `seed`.
inline Dataset RandomImageSet(int64_t count, int64_t channels, int64_t height, int64_t width, uint64_t seed) {
  torch::manual_seed(seed);
  Dataset data;
  data.images = torch::randint(0, 256, {count, channels, height, width}, torch::kUInt8);
  data.labels = torch::zeros({count}, torch::kInt64);
  data.num_classes = 1;
  return data;
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "tempered_data_test_XXXXXX").string();
    const char* made = mkdtemp(pattern.data());
    // A failed mkdtemp (e.g. TMPDIR naming a missing folder) must fail the test, not construct a string from null.
    if (made == nullptr) throw std::runtime_error("mkdtemp(" + pattern + ") failed: " + std::strerror(errno));
    path_ = made;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Writes `bytes` to path()/name, creating the folders in `name`; returns the file's path.
  std::string Write(const std::string& name, const std::string& bytes) const {
    const std::string path = path_ + "/" + name;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs `load` and expects a UserError whose message names `path` and contains `fragment`.
template <typename Load>
void ExpectUserError(Load load, const std::string& path, const std::string& fragment) {
  try {
    load();
    ADD_FAILURE() << "no UserError for " << path;
  } catch (const UserError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find(fragment), std::string::npos) << message;
  }
}

}  // namespace tempered
