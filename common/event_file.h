// TensorBoard event files, written without TensorFlow: each record is a tempered.tensorboard.Event (field numbers
// as TensorFlow's) in TFRecord framing,
//   uint64 length (LE) | uint32 masked_crc32c(length) | payload | uint32 masked_crc32c(payload),
// so `tensorboard --logdir <out_dir or sweep dir>` reads the runs directly. Without LibTorch: tempered-train's
// rank 0 writes its scalars and histograms (trainer/io/event_writer.h), tempered-sweep the HParams plugin's records.
// Not thread-safe.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "proto/tensorboard.pb.h"

namespace tempered {

// CRC-32C (Castagnoli, reflected polynomial 0x82f63b78) of `size` bytes; Crc32c("123456789") == 0xe3069283.
uint32_t Crc32c(const void* data, size_t size);

// TFRecord's masked CRC: rotated right by 15 bits plus a constant, so that a CRC stored next to the data it covers
// does not look like data (a CRC of bytes that contain their own CRC is degenerate).
uint32_t MaskCrc(uint32_t crc);

class EventWriter {
 public:
  // Creates `dir` if needed and dir/`file_name` (by default events.out.tfevents.<unix seconds>.<hostname>, never an
  // existing file: a later second's name if this one's is taken), and writes the first record, file_version
  // "brain.Event:2". Throws UserError naming the file if it cannot.
  explicit EventWriter(const std::string& dir, const std::string& file_name = "");
  ~EventWriter();  // flushes and closes; errors at this point are logged, not thrown
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  void AddScalar(const std::string& tag, int64_t step, double value);
  // Any summary value (a histogram, a plugin's record) at `step`.
  void AddValue(int64_t step, const tensorboard::Summary::Value& value);
  // Writes the buffered records to the file: call after each batch of Add* calls (a logged step, an evaluation).
  // Throws UserError naming the file if the write fails (e.g. the disk is full).
  void Flush();

  const std::string& path() const { return path_; }

 private:
  void Write(const tensorboard::Event& event);
  void ThrowWriteError(const std::string& what);

  std::string path_;
  std::FILE* file_ = nullptr;
};

// Reads every record of an event file, checking both CRCs of each. Throws UserError naming the file and the
// record's offset on a truncated or corrupt record. For tests and tools (TensorBoard has its own reader).
std::vector<tensorboard::Event> ReadEventFile(const std::string& path);

}  // namespace tempered
