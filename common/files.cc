#include "common/files.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/errors.h"

namespace tempered {

std::string StageFile(const std::string& path, const FileProducer& produce, Sync sync) {
  // Unique per call: two threads of a process may stage the same path (trainer/io/result_file.cc).
  static std::atomic<uint64_t> serial{0};
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(serial++);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw UserError("cannot write " + path + ": " + std::strerror(errno));
  // A failed write is remembered, not thrown: the producer may be a library's writer that writes again from its
  // destructor (LibTorch's PyTorchStreamWriter), where a throw would terminate. Later writes are dropped.
  std::string error;
  try {
    produce([fd, &error](const void* data, size_t size) {
      for (size_t done = 0; done < size && error.empty();) {
        const ssize_t n = ::write(fd, static_cast<const char*>(data) + done, size - done);
        if (n < 0 && errno != EINTR) error = std::strerror(errno);
        if (n > 0) done += static_cast<size_t>(n);
      }
    });
  } catch (const std::exception& e) {
    if (error.empty()) error = e.what();
  }
  // fsync before rename: after a crash the file is either the old one or the complete new one.
  if (error.empty() && sync == Sync::kDurable && ::fsync(fd) != 0) error = std::strerror(errno);
  if (::close(fd) != 0 && error.empty()) error = std::strerror(errno);
  if (!error.empty()) {
    ::unlink(tmp.c_str());
    throw UserError("cannot write " + path + ": " + error);
  }
  return tmp;
}

std::string StageFile(const std::string& path, const std::string& contents, Sync sync) {
  return StageFile(path, [&](const FileWriter& write) { write(contents.data(), contents.size()); }, sync);
}

void CommitStagedFile(const std::string& staged, const std::string& path) {
  if (::rename(staged.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(staged.c_str());
    throw UserError("cannot write " + path + ": " + why);
  }
}

void DiscardStagedFile(const std::string& staged) { ::unlink(staged.c_str()); }

void WriteFileAtomically(const std::string& path, const std::string& contents, Sync sync) {
  CommitStagedFile(StageFile(path, contents, sync), path);
}

void WriteFileAtomically(const std::string& path, const FileProducer& produce, Sync sync) {
  CommitStagedFile(StageFile(path, produce, sync), path);
}

std::string ReadWholeFile(const std::string& path, const std::string& what) {
  std::error_code ignored;
  if (std::filesystem::is_directory(path, ignored)) {
    throw UserError("cannot read " + what + " " + path + ": it is a directory");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError("cannot read " + what + " " + path + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw UserError("cannot read " + what + " " + path + ": " + std::strerror(errno));
  return ss.str();
}

void MakeDirectories(const std::string& path, const std::string& what) {
  std::error_code error;
  std::filesystem::create_directories(path, error);  // no error when it exists already
  if (error) throw UserError("cannot create " + what + " " + path + ": " + error.message());
  if (!std::filesystem::is_directory(path, error)) {
    throw UserError("cannot create " + what + " " + path + ": it exists and is not a directory");
  }
}

FileLock::FileLock(const std::string& path, const std::string& held_by, const std::string& advice) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw UserError("cannot open " + path + ": " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd_);
    throw UserError(held_by + " holds " + path + "; " + advice);
  }
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);
}

bool FileLockHeld(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  // A shared lock is refused only while someone holds the exclusive one; it is dropped again at close.
  const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);
  return held;
}

}  // namespace tempered
