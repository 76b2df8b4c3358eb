// For the readers that take a directory (CIFAR, SVHN, image folders): one temporary directory per fuzzing process,
// under $TMPDIR (tests/fuzz.sh points it into the build directory), removed at exit.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace tempered::fuzz {

class InputDir {
 public:
  InputDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/tempered-fuzz-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    path_ = pattern;
  }
  ~InputDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  InputDir(const InputDir&) = delete;
  InputDir& operator=(const InputDir&) = delete;

  // Writes [data, data + size) to path()/name (parent folders created); returns the directory.
  const std::string& Write(const std::string& name, const uint8_t* data, size_t size) {
    const std::filesystem::path file = std::filesystem::path(path_) / name;
    std::filesystem::create_directories(file.parent_path());
    std::FILE* f = std::fopen(file.c_str(), "wb");
    if (f == nullptr || (size > 0 && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
      std::perror(file.c_str());
      std::abort();
    }
    return path_;
  }

 private:
  std::string path_;
};

}  // namespace tempered::fuzz
