// Files that must never be seen half-written, directories, and locks that keep two writers off one directory.
// Shared by the worker (checkpoints, result.json, its out_dir lock) and the coordinator (its state, the run
// directories, the sweep lock).
#pragma once

#include <functional>
#include <string>

namespace tempered {

enum class Sync {
  kDurable,  // fsync before the rename: after a power loss the file is the old one or the complete new one
  kFast,     // no fsync: whole to every reader and after the process dies, but not after a power loss; for a record
             // that must be written within a deadline (mpirun's SIGKILL), where an fsync may take seconds
};

// Writes `contents` to `path` atomically: a temp file in the same directory, fsync (kDurable), rename. UserError on
// failure.
void WriteFileAtomically(const std::string& path, const std::string& contents, Sync sync = Sync::kDurable);
// The same for contents too large to hold twice (a checkpoint with a memory bank of millions of entries):
// produce(write) calls write(data, size) piece by piece, straight into the temp file. A failed write (a full disk)
// or an exception of produce becomes the UserError, and the temp file is removed.
using FileWriter = std::function<void(const void* data, size_t size)>;
using FileProducer = std::function<void(const FileWriter& write)>;
void WriteFileAtomically(const std::string& path, const FileProducer& produce, Sync sync = Sync::kDurable);
std::string StageFile(const std::string& path, const FileProducer& produce, Sync sync = Sync::kDurable);
// WriteFileAtomically in two steps, for a writer that decides at the last moment whether its file is still the
// newest (trainer/io/result_file.cc): StageFile writes a temp file next to `path` and returns its name;
// CommitStagedFile renames it over `path`, DiscardStagedFile removes it. Errors name `path`.
std::string StageFile(const std::string& path, const std::string& contents, Sync sync = Sync::kDurable);
void CommitStagedFile(const std::string& staged, const std::string& path);
void DiscardStagedFile(const std::string& staged);

// The whole file; UserError "cannot read <what> <path>: <why>" (a directory, too, is refused: it would read as
// empty).
std::string ReadWholeFile(const std::string& path, const std::string& what);

// mkdir -p; UserError "cannot create <what> <path>: <why>" when it cannot be made or is not a directory.
void MakeDirectories(const std::string& path, const std::string& what = "directory");

// An exclusive flock on `path` (created if missing) for the object's lifetime. The lock dies with the process, even
// on SIGKILL, and its descriptor is close-on-exec, so processes started meanwhile do not inherit it. `held_by` says
// who holds such a lock, for the error when another process holds it: "UserError: <held_by> holds <path>; <advice>".
class FileLock {
 public:
  FileLock(const std::string& path, const std::string& held_by, const std::string& advice);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

// Whether some process holds the lock on `path` now (false when the file does not exist).
bool FileLockHeld(const std::string& path);

// tempered-train's rank 0 holds an exclusive flock on out_dir/.lock from setup to exit: a second tempered-train on
// the same out_dir is refused before it writes anything, and tempered-sweep treats a run directory whose lock is
// held as running.
inline constexpr char kOutDirLockFile[] = ".lock";

}  // namespace tempered
